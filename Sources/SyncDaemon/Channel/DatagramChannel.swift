import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Traffic counters of one channel (conntrackd's "UDP traffic" lines).
public struct ChannelCounters: Sendable, Equatable {
    public var bytesSent: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    public var datagramsSent: UInt64 = 0
    public var datagramsReceived: UInt64 = 0
    public var sendErrors: UInt64 = 0
    public var receiveErrors: UInt64 = 0
    /// Datagrams from one of our own addresses (multicast loopback, misrouted), ignored.
    public var ownDatagrams: UInt64 = 0
    /// Datagrams (or TCP connections) from an address that is not the configured peer,
    /// dropped (refused) before anything reads them.
    public var unknownPeer: UInt64 = 0
    /// Where the last of those came from.
    public var lastUnknownSource: IPAddress?
    public init() {}
}

/// A UDP channel to the peer, unicast or multicast, IPv4 or IPv6: a receive socket bound to the
/// port (joined to the group for multicast) and a send socket. Messages are packed into
/// datagrams of at most the interface's MTU less the IP and UDP headers, as conntrackd does.
final class DatagramChannel {
    let config: ChannelConfig
    let receiveDescriptor: Int32
    private let sendDescriptor: Int32
    private var destination: sockaddr_storage
    private let destinationLength: socklen_t
    /// Largest datagram payload: interface MTU − 28 (IPv4) or − 48 (IPv6).
    let payloadLimit: Int
    private(set) var counters = ChannelCounters()
    private var ownAddresses: Set<IPAddress> = []
    /// Unicast: the configured peer; datagrams from anyone else are dropped. Nil for
    /// multicast, whose peers are whoever joined the group on the link.
    private var peer: IPAddress?
    private var buffer: [UInt8]

    init(_ config: ChannelConfig) throws(SystemCallError) {
        self.config = config
        let family: AddressFamily = config.family
        let domain = family == .ipv4 ? AF_INET : AF_INET6
        let port: UInt16
        var bindAddress: IPAddress
        let sendTo: IPAddress
        var sendBuffer: Int?
        var receiveBuffer: Int?
        var checksum = true
        switch config {
        case .udp(let c), .tcp(let c):
            port = c.port
            bindAddress = c.localAddress
            sendTo = c.destination
            sendBuffer = c.sendBufferSize
            receiveBuffer = c.receiveBufferSize
            checksum = c.checksum
            peer = c.destination
        case .multicast(let c):
            port = c.port
            // Bound to the group, not the wildcard: a unicast datagram to one of our addresses
            // (the outside one, say) must not be taken for sync.
            bindAddress = c.group
            sendTo = c.group
            sendBuffer = c.sendBufferSize
            receiveBuffer = c.receiveBufferSize
            checksum = c.checksum
        }
        let rx = socket(domain, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard rx >= 0 else { throw .last("UDP socket") }
        let tx = socket(domain, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard tx >= 0 else {
            close(rx)
            throw .last("UDP socket")
        }
        func fail(_ what: String) -> SystemCallError {
            let e = errno
            close(rx)
            close(tx)
            return SystemCallError(what, errno: e)
        }
        var one: Int32 = 1
        setsockopt(rx, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if let size = receiveBuffer { Self.setBuffer(rx, SO_RCVBUFFORCE, SO_RCVBUF, size) }
        // Only what arrives on the dedicated link's interface is sync.
        if !config.interface.isEmpty && !Self.bindToDevice(rx, config.interface) { throw fail("binding to device \(config.interface)") }
        if let size = sendBuffer { Self.setBuffer(tx, SO_SNDBUFFORCE, SO_SNDBUF, size) }
        if !checksum {
            var noCheck: Int32 = 1
            setsockopt(tx, SOL_SOCKET, SO_NO_CHECK, &noCheck, socklen_t(MemoryLayout<Int32>.size))
        }
        let interfaceIndex = config.interface.isEmpty ? 0 : if_nametoindex(config.interface)
        if case .multicast(let c) = config {
            if family == .ipv4 {
                var request = ip_mreq()
                request.imr_multiaddr.s_addr = c.group.ipv4.bigEndian
                request.imr_interface.s_addr = (c.interfaceAddress?.ipv4 ?? 0).bigEndian
                guard setsockopt(rx, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size)) == 0 else {
                    throw fail("joining multicast group \(c.group)")
                }
                var outgoing = in_addr(s_addr: (c.interfaceAddress?.ipv4 ?? 0).bigEndian)
                setsockopt(tx, Int32(IPPROTO_IP), IP_MULTICAST_IF, &outgoing, socklen_t(MemoryLayout<in_addr>.size))
                var loop: UInt8 = 0
                setsockopt(tx, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &loop, 1)
                if let local = c.interfaceAddress { ownAddresses.insert(local) }
            } else {
                var request = ipv6_mreq()
                withUnsafeMutableBytes(of: &request.ipv6mr_multiaddr) { raw in
                    for (i, b) in c.group.ipv6Bytes.enumerated() { raw[i] = b }
                }
                request.ipv6mr_interface = interfaceIndex
                guard setsockopt(rx, Int32(IPPROTO_IPV6), IPV6_JOIN_GROUP, &request, socklen_t(MemoryLayout<ipv6_mreq>.size)) == 0 else {
                    throw fail("joining multicast group \(c.group)")
                }
                var index = Int32(interfaceIndex)
                setsockopt(tx, Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, &index, socklen_t(MemoryLayout<Int32>.size))
                var loop: Int32 = 0
                setsockopt(tx, Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, &loop, socklen_t(MemoryLayout<Int32>.size))
            }
        } else {
            ownAddresses.insert(bindAddress)
            // Send from the configured address, so the peer sees the dedicated link's address.
            var local = Self.socketAddress(bindAddress, port: 0, scope: interfaceIndex)
            _ = withUnsafePointer(to: &local.0) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tx, $0, local.1) }
            }
        }
        var listen = Self.socketAddress(bindAddress, port: port, scope: interfaceIndex)
        let bound = withUnsafePointer(to: &listen.0) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(rx, $0, listen.1) }
        }
        guard bound == 0 else { throw fail("binding \(bindAddress) port \(port)") }
        let target = Self.socketAddress(sendTo, port: port, scope: interfaceIndex)
        destination = target.0
        destinationLength = target.1
        receiveDescriptor = rx
        sendDescriptor = tx
        let mtu = Self.mtu(of: config.interface) ?? 1500
        payloadLimit = max(576, mtu) - (family == .ipv4 ? 28 : 48)
        buffer = [UInt8](repeating: 0, count: 65536)
    }

    deinit {
        close(receiveDescriptor)
        close(sendDescriptor)
    }

    /// Sets a socket buffer, beyond the system maximum when allowed (the FORCE variant).
    static func setBuffer(_ fd: Int32, _ force: Int32, _ plain: Int32, _ size: Int) {
        var value = Int32(clamping: size)
        if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, plain, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// SO_BINDTODEVICE: the socket takes only what arrives on `interface`.
    static func bindToDevice(_ fd: Int32, _ interface: String) -> Bool {
        var name = Array(interface.utf8) + [0]
        return setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, socklen_t(name.count)) == 0
    }

    static func mtu(of interface: String) -> Int? {
        guard !interface.isEmpty,
            let text = try? String(contentsOfFile: "/sys/class/net/\(interface)/mtu", encoding: .utf8),
            let mtu = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return nil }
        return mtu
    }

    static func socketAddress(_ address: IPAddress, port: UInt16, scope: UInt32) -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        if address.family == .ipv4 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    sin.pointee.sin_family = sa_family_t(AF_INET)
                    sin.pointee.sin_port = port.bigEndian
                    sin.pointee.sin_addr.s_addr = address.ipv4.bigEndian
                }
            }
            return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                sin6.pointee.sin6_scope_id = scope
                withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { raw in
                    for (i, b) in address.ipv6Bytes.enumerated() { raw[i] = b }
                }
            }
        }
        return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
    }

    /// Sends one datagram; a failure is counted (FTFW repairs the loss), never thrown. Returns
    /// false when the link itself looks gone (no route, network down), for a link switch.
    @discardableResult
    func send(_ datagram: UnsafeRawBufferPointer) -> Bool {
        let sent = withUnsafePointer(to: &destination) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(sendDescriptor, datagram.baseAddress, datagram.count, Int32(MSG_DONTWAIT), $0, destinationLength)
            }
        }
        if sent == datagram.count {
            counters.bytesSent += UInt64(sent)
            counters.datagramsSent += 1
            return true
        }
        counters.sendErrors += 1
        return !(sent < 0 && [ENETDOWN, ENETUNREACH, EHOSTUNREACH, ENODEV, EADDRNOTAVAIL].contains(errno))
    }

    /// Receives queued datagrams (at most `limit`) and hands each to `body`.
    func receive(limit: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        for _ in 0..<max(1, limit) {
            var from = sockaddr_storage()
            var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(receiveDescriptor, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, &fromLength)
                    }
                }
            }
            if n < 0 {
                if errno != EAGAIN && errno != EINTR { counters.receiveErrors += 1 }
                return
            }
            let source = Self.address(of: from)
            if let source, ownAddresses.contains(source) {
                counters.ownDatagrams += 1
                continue
            }
            if let peer, source != peer {
                counters.unknownPeer += 1
                counters.lastUnknownSource = source
                continue
            }
            counters.bytesReceived += UInt64(n)
            counters.datagramsReceived += 1
            buffer.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    static func address(of storage: sockaddr_storage) -> IPAddress? {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { IPAddress(ipv4: UInt32(bigEndian: $0.pointee.sin_addr.s_addr)) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { IPAddress(ipv6Bytes: $0) }
                }
            }
        default:
            return nil
        }
    }
}
