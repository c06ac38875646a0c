import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SyncProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// conntrackd's TCP link: each side listens on its own address and port and connects to the
/// peer's, so there are two connections, one per direction; the stream carries the same
/// messages as a datagram, back to back (each header says its length).
///
/// Where conntrackd loses data or the stream's framing, ctsync does not: a partial write keeps
/// its remainder for the next write (conntrackd drops it and desynchronises the stream); what
/// cannot be written while the peer is away waits in a queue of `ErrorQueueLength` sends (the
/// oldest give way when it is full; FTFW then repairs by NACK); a connection that breaks in the
/// middle of a message drops that message rather than sending its tail on the next
/// connection; an incoming length that cannot be a message closes the connection (the peer
/// reconnects) instead of reading garbage until then.
final class StreamChannel: SyncLink {
    let config: ChannelConfig
    private(set) var counters = ChannelCounters()
    let payloadLimit: Int
    private let listenDescriptor: Int32
    private var inbound: Int32 = -1
    private var outbound: Int32 = -1
    private var connecting = false
    private var nextConnect: Int64 = 0
    private let local: IPAddress
    private let peer: IPAddress
    private let port: UInt16
    private let scope: UInt32
    private let sendBuffer: Int?
    private let receiveBuffer: Int?
    /// Sends waiting for the connection, whole; the first may be partly written already.
    private var pending: [[UInt8]] = []
    private var pendingOffset = 0
    private var pendingBytes = 0
    /// Sends kept while the peer is unreachable (`ErrorQueueLength`).
    private let pendingLimit: Int
    /// Bytes kept while connected and the socket is full: the peer is there and reading, so
    /// a burst waits in memory instead of being dropped, up to this much.
    static let connectedBacklogBytes = 64 << 20
    private var framer: StreamFramer
    private var chunk = [UInt8](repeating: 0, count: 65536)
    /// Connections dropped because the incoming stream could not be framed.
    private(set) var framingErrors = 0
    /// Retries after a failed connection: 100 ms, doubling up to 1 s (conntrackd retries each
    /// second; a peer that starts a moment after us is reached within 100 ms).
    static let reconnectMilliseconds: Int64 = 1000
    static let firstReconnectMilliseconds: Int64 = 100
    private var reconnectDelay = StreamChannel.firstReconnectMilliseconds

    /// `framing`: conntrackd's messages, or authenticated frames when `Auth` is on.
    init(_ config: ChannelConfig, errorQueueLength: Int, framing: StreamFramer.Framing = .messages) throws(SystemCallError) {
        framer = StreamFramer(framing)
        guard case .tcp(let c) = config else { throw SystemCallError("TCP link", errno: EINVAL) }
        self.config = config
        local = c.localAddress
        peer = c.destination
        port = c.port
        sendBuffer = c.sendBufferSize
        receiveBuffer = c.receiveBufferSize
        scope = c.interface.isEmpty ? 0 : if_nametoindex(c.interface)
        pendingLimit = max(1, errorQueueLength)
        let mtu = DatagramChannel.mtu(of: c.interface) ?? 1500
        payloadLimit = max(576, mtu) - (local.family == .ipv4 ? 40 : 60)
        let fd = socket(
            local.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
            0)
        guard fd >= 0 else { throw .last("TCP socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if let size = c.receiveBufferSize { DatagramChannel.setBuffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, size) }
        // Only connections arriving on the dedicated link's interface.
        if !c.interface.isEmpty && !DatagramChannel.bindToDevice(fd, c.interface) {
            let e = errno
            close(fd)
            throw SystemCallError("binding to device \(c.interface)", errno: e)
        }
        var address = DatagramChannel.socketAddress(local, port: port, scope: scope)
        let bound = withUnsafePointer(to: &address.0) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.1) }
        }
        guard bound == 0, listen(fd, 1) == 0 else {
            let e = errno
            close(fd)
            throw SystemCallError("listening on \(local) port \(port)", errno: e)
        }
        listenDescriptor = fd
    }

    deinit {
        close(listenDescriptor)
        if inbound >= 0 { close(inbound) }
        if outbound >= 0 { close(outbound) }
    }

    /// Whether our connection to the peer is up.
    var isConnected: Bool { outbound >= 0 && !connecting }

    var connections: (server: Bool, client: Bool)? { (inbound >= 0, isConnected) }

    func pollDescriptors() -> [pollfd] {
        var out = [pollfd(fd: listenDescriptor, events: Int16(POLLIN), revents: 0)]
        if inbound >= 0 { out.append(pollfd(fd: inbound, events: Int16(POLLIN), revents: 0)) }
        if outbound >= 0 {
            // Readable only to notice the peer closing; writable while connecting or behind.
            let events = Int32(POLLIN) | (connecting || !pending.isEmpty ? Int32(POLLOUT) : 0)
            out.append(pollfd(fd: outbound, events: Int16(events), revents: 0))
        }
        return out
    }

    /// Connecting does not wait for something to send: the peer's sender reaches us, and our
    /// HELLO reaches it, as early as possible (conntrackd forgets its unacknowledged messages on
    /// each HELLO, so the sooner the greeting is over, the less it forgets).
    var nextDeadline: Int64? { outbound < 0 ? nextConnect : nil }

    var canSend: Bool { isConnected ? pendingBytes < Self.connectedBacklogBytes : pending.count < pendingLimit }

    var hasPendingOutput: Bool { isConnected && pendingBytes > 0 }

    func tick(now: Int64) {
        if outbound < 0 && now >= nextConnect { connect(now: now) }
    }

    func handle(_ result: pollfd, now: Int64, limit: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        if result.fd == listenDescriptor {
            acceptPeer()
        } else if result.fd == inbound {
            read(body)
        } else if result.fd == outbound {
            if connecting {
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(outbound, SOL_SOCKET, SO_ERROR, &error, &length)
                if error != 0 {
                    disconnect(now: now)
                    return
                }
                connecting = false
                reconnectDelay = Self.firstReconnectMilliseconds
            }
            if result.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                // The peer never sends on this connection: readable means closed or broken.
                var sink = [UInt8](repeating: 0, count: 512)
                let n = sink.withUnsafeMutableBytes { recv(outbound, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
                    disconnect(now: now)
                    return
                }
            }
            flushPending(now: now)
        }
    }

    private func acceptPeer() {
        while true {
            var from = sockaddr_storage()
            var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listenDescriptor, $0, &fromLength) }
            }
            if fd < 0 { return }
            // Only the configured peer may connect; anyone else is refused at once and never
            // replaces the peer's connection.
            let source = DatagramChannel.address(of: from)
            guard source == peer else {
                close(fd)
                counters.unknownPeer += 1
                counters.lastUnknownSource = source
                continue
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            // A new connection from the peer replaces the old one (it restarted or reconnected).
            if inbound >= 0 { close(inbound) }
            inbound = fd
            framer.reset()
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
            if let size = receiveBuffer { DatagramChannel.setBuffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, size) }
        }
    }

    private func read(_ body: (UnsafeRawBufferPointer) -> Void) {
        while inbound >= 0 {
            let n = chunk.withUnsafeMutableBytes { recv(inbound, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 {
                if errno != EAGAIN && errno != EINTR {
                    counters.receiveErrors += 1
                    dropInbound()
                }
                return
            }
            if n == 0 {
                dropInbound()
                return
            }
            counters.bytesReceived += UInt64(n)
            let framed = chunk.withUnsafeBytes { received in
                framer.append(UnsafeRawBufferPointer(rebasing: received[0..<n])) { unit in
                    counters.datagramsReceived += 1
                    body(unit)
                }
            }
            guard framed else {
                framingErrors += 1
                counters.receiveErrors += 1
                dropInbound()
                return
            }
        }
    }

    private func dropInbound() {
        close(inbound)
        inbound = -1
        framer.reset()
    }

    func send(_ bytes: UnsafeRawBufferPointer) -> Bool {
        while isConnected ? pendingBytes >= Self.connectedBacklogBytes : pending.count >= pendingLimit {
            // Full (the peer away, or not reading): the oldest whole send gives way (FTFW repairs).
            let victim = pendingOffset > 0 && pending.count > 1 ? 1 : 0
            pendingBytes -= pending[victim].count - (victim == 0 ? pendingOffset : 0)
            pending.remove(at: victim)
            if victim == 0 { pendingOffset = 0 }
            counters.sendErrors += 1
        }
        pending.append(Array(bytes))
        pendingBytes += bytes.count
        let now = monotonicMilliseconds()
        if outbound < 0 {
            if now >= nextConnect { connect(now: now) }
            return true
        }
        flushPending(now: now)
        return true
    }

    private func flushPending(now: Int64) {
        guard outbound >= 0, !connecting else { return }
        while let first = pending.first {
            let n = first[pendingOffset...].withUnsafeBytes { Glibc.send(outbound, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                counters.sendErrors += 1
                disconnect(now: now)
                return
            }
            counters.bytesSent += UInt64(n)
            pendingOffset += n
            pendingBytes -= n
            if pendingOffset < first.count { return }
            counters.datagramsSent += 1
            pending.removeFirst()
            pendingOffset = 0
        }
    }

    private func connect(now: Int64) {
        nextConnect = now + reconnectDelay
        reconnectDelay = min(reconnectDelay * 2, Self.reconnectMilliseconds)
        let fd = socket(
            peer.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
            0)
        guard fd >= 0 else { return }
        if let size = sendBuffer { DatagramChannel.setBuffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, size) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        // From the dedicated link's address, as the peer expects.
        var source = DatagramChannel.socketAddress(local, port: 0, scope: scope)
        _ = withUnsafePointer(to: &source.0) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, source.1) } }
        var target = DatagramChannel.socketAddress(peer, port: port, scope: scope)
        let started = withUnsafePointer(to: &target.0) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, target.1) }
        }
        if started != 0 && errno != EINPROGRESS {
            close(fd)
            return
        }
        outbound = fd
        connecting = started != 0
        if !connecting { reconnectDelay = Self.firstReconnectMilliseconds }
        // A message cut by the last connection's end is not continued on this one.
        if pendingOffset > 0 {
            pendingBytes -= pending[0].count - pendingOffset
            pending.removeFirst()
            pendingOffset = 0
        }
        // Back to the unreachable-peer bound until connected.
        while pending.count > pendingLimit {
            pendingBytes -= pending[0].count
            pending.removeFirst()
            counters.sendErrors += 1
        }
        if !connecting { flushPending(now: now) }
    }

    private func disconnect(now: Int64) {
        if outbound >= 0 { close(outbound) }
        outbound = -1
        connecting = false
        nextConnect = max(nextConnect, now + reconnectDelay)
    }
}
