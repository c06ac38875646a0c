import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// The seam between the kernel layer and the kernel: a netlink socket that sends
/// whole buffers of messages and receives one datagram at a time. `MnlSocket` is
/// the real one; tests substitute a recorded transport to produce what the kernel
/// will not on demand (truncated replies, ENOBUFS, per-message errors).
public protocol NetlinkTransport: AnyObject {
    /// Our netlink port id, which the kernel puts in replies.
    var portID: UInt32 { get }
    /// Sends one buffer holding one or more netlink messages, in a single `sendmsg`.
    func send(_ buffer: UnsafeRawBufferPointer) throws(KernelError)
    /// Receives one datagram. Returns its length; 0 when `wait` is false and nothing is queued.
    /// Throws `.overrun` on ENOBUFS and `.truncated` when the datagram did not fit.
    func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(KernelError) -> Int
}

/// A NETLINK_NETFILTER socket opened through libmnl.
public final class MnlSocket: NetlinkTransport {
    private let handle: OpaquePointer
    public let portID: UInt32
    public var fileDescriptor: Int32 { mnl_socket_get_fd(handle) }

    /// Opens a socket, optionally subscribed to multicast `groups` (NF_NETLINK_CONNTRACK_*),
    /// with buffers forced to the given sizes (SO_RCVBUFFORCE needs CAP_NET_ADMIN; falls back to SO_RCVBUF).
    public init(groups: UInt32 = 0, receiveBufferSize: Int? = nil, sendBufferSize: Int? = nil) throws(KernelError) {
        guard let nl = mnl_socket_open(NETLINK_NETFILTER) else {
            throw .socket(operation: "open", errno: ctsync_errno())
        }
        if mnl_socket_bind(nl, groups, pid_t(MNL_SOCKET_AUTOPID)) < 0 {
            let e = ctsync_errno()
            mnl_socket_close(nl)
            throw .socket(operation: "bind", errno: e)
        }
        handle = nl
        portID = mnl_socket_get_portid(nl)
        var one: Int32 = 1
        // Error replies then carry only the header of the failed request, not all of it.
        _ = setsockopt(mnl_socket_get_fd(nl), SOL_NETLINK, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        if let size = receiveBufferSize { try setBuffer(SO_RCVBUFFORCE, SO_RCVBUF, size) }
        if let size = sendBufferSize { try setBuffer(SO_SNDBUFFORCE, SO_SNDBUF, size) }
    }

    deinit { mnl_socket_close(handle) }

    private func setBuffer(_ force: Int32, _ plain: Int32, _ size: Int) throws(KernelError) {
        var value = Int32(clamping: size)
        let fd = fileDescriptor
        if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 { return }
        if setsockopt(fd, SOL_SOCKET, plain, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw .socket(operation: "setsockopt(buffer size \(size))", errno: ctsync_errno())
        }
    }

    /// Sets an integer socket option.
    public func setOption(level: Int32, name: Int32, value: Int32) throws(KernelError) {
        var v = value
        if setsockopt(fileDescriptor, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw .socket(operation: "setsockopt(\(level), \(name))", errno: ctsync_errno())
        }
    }

    /// The kernel's view of the receive buffer size (it doubles what was asked for).
    public var receiveBufferSize: Int {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fileDescriptor, SOL_SOCKET, SO_RCVBUF, &value, &length)
        return Int(value)
    }

    /// Asks for a new receive buffer size (used to grow it after an overrun).
    public func setReceiveBufferSize(_ size: Int) throws(KernelError) {
        try setBuffer(SO_RCVBUFFORCE, SO_RCVBUF, size)
    }

    public func send(_ buffer: UnsafeRawBufferPointer) throws(KernelError) {
        while true {
            let sent = mnl_socket_sendto(handle, buffer.baseAddress, buffer.count)
            if sent >= 0 { return }
            let e = ctsync_errno()
            if e == EINTR { continue }
            throw .socket(operation: "send", errno: e)
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(KernelError) -> Int {
        while true {
            var address = sockaddr_nl()
            var addressLength = socklen_t(MemoryLayout<sockaddr_nl>.size)
            let n = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(
                        fileDescriptor, buffer.baseAddress, buffer.count,
                        (wait ? 0 : Int32(MSG_DONTWAIT)) | Int32(MSG_TRUNC), $0, &addressLength)
                }
            }
            if n >= 0 {
                if n > buffer.count { throw .truncated(operation: "receive") }
                // Only the kernel (port 0) may talk to us.
                if address.nl_pid != 0 { continue }
                return n
            }
            let e = ctsync_errno()
            switch e {
            case EINTR: continue
            case EAGAIN: return 0
            case ENOBUFS: throw .overrun
            default: throw .socket(operation: "receive", errno: e)
            }
        }
    }

    /// Waits until the socket is readable or `milliseconds` pass (-1: forever). True if readable.
    public func waitReadable(milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&descriptor, 1, milliseconds)
            if r < 0 && ctsync_errno() == EINTR { continue }
            return r > 0
        }
    }
}

/// One netlink message inside a received buffer.
struct NetlinkMessage {
    let type: UInt16
    let flags: UInt16
    let sequence: UInt32
    /// For an event: the port of the socket whose request caused it (0: the kernel itself).
    var portID: UInt32 { bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self) }
    /// The whole message, header included.
    let bytes: UnsafeRawBufferPointer

    static let error: UInt16 = 2
    static let done: UInt16 = 3
    static let headerSize = 16

    /// The errno of an NLMSG_ERROR message (0 for an acknowledgement).
    var errorCode: Int32? {
        guard type == Self.error, bytes.count >= Self.headerSize + 4 else { return nil }
        return -bytes.loadUnaligned(fromByteOffset: Self.headerSize, as: Int32.self)
    }

    /// For an NLMSG_ERROR: the sequence number of the request it answers.
    var erroredSequence: UInt32? {
        guard type == Self.error, bytes.count >= Self.headerSize + 4 + 16 else { return nil }
        return bytes.loadUnaligned(fromByteOffset: Self.headerSize + 4 + 8, as: UInt32.self)
    }

    /// Splits a datagram into messages, checking every length against the buffer.
    static func split(_ buffer: UnsafeRawBufferPointer, operation: String) throws(KernelError) -> [NetlinkMessage] {
        var out: [NetlinkMessage] = []
        var offset = 0
        while buffer.count - offset >= headerSize {
            let length = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            guard length >= headerSize, length <= buffer.count - offset else {
                throw .malformedReply(operation: operation, detail: "message length \(length) at offset \(offset) of \(buffer.count)")
            }
            let type = buffer.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
            let flags = buffer.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self)
            let sequence = buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
            out.append(
                NetlinkMessage(
                    type: type, flags: flags, sequence: sequence,
                    bytes: UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + length])))
            offset += (length + 3) & ~3
        }
        return out
    }
}
