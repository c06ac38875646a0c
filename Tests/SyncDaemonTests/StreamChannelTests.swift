import Configuration
import ControlProtocol
import FlowModel
import Foundation
import SyncProtocol
import Testing

@testable import SyncDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// The TCP link's stream framing, on loopback (no root needed): messages split across reads
/// are reassembled, several in one read are handed over together, and an impossible length
/// closes the connection instead of desynchronising the stream.
@Suite(.serialized) struct StreamChannelTests {
    /// A free loopback port (asked of the kernel, then released).
    static func port() -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1 }
        }
        return UInt16(bigEndian: address.sin_port)
    }

    func makeChannel(port: UInt16) throws -> StreamChannel {
        let loopback = IPAddress("127.0.0.1")!
        return try StreamChannel(
            .tcp(UnicastChannel(localAddress: loopback, destination: loopback, port: port, interface: "lo")), errorQueueLength: 8)
    }

    /// A raw client connected to the channel's listening socket.
    func connectClient(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(r == 0, "connect: \(errno)")
        return fd
    }

    /// Polls the channel (bounded) and collects what it hands over.
    func drive(_ channel: StreamChannel, rounds: Int = 20) -> [[UInt8]] {
        var received: [[UInt8]] = []
        for _ in 0..<rounds {
            var descriptors = channel.pollDescriptors()
            guard poll(&descriptors, nfds_t(descriptors.count), 50) > 0 else { continue }
            for d in descriptors where d.revents != 0 {
                channel.handle(d, now: 0, limit: 16) { received.append(Array($0)) }
            }
        }
        return received
    }

    /// A header-only message (ALIVE-sized): version, type, length, sequence.
    func message(sequence: UInt32, length: Int = 8) -> [UInt8] {
        var m: [UInt8] = [0x1a, 0x10, UInt8(length >> 8), UInt8(length & 0xff)]
        withUnsafeBytes(of: sequence.bigEndian) { m += $0 }
        return m + [UInt8](repeating: 0, count: max(0, length - 8))
    }

    @Test func reassemblesSplitMessagesAndClosesOnAnImpossibleLength() throws {
        let port = Self.port()
        let channel = try makeChannel(port: port)
        let client = try connectClient(port: port)
        defer { close(client) }
        // One message in three pieces, then two whole ones in one write. Every delivery is
        // kept: nothing may come out before the last piece, the message must come out once.
        let first = message(sequence: 1, length: 24)
        var deliveries: [[[UInt8]]] = []
        for piece in [first[0..<3], first[3..<10], first[10...]] {
            _ = Array(piece).withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) }
            deliveries.append(drive(channel, rounds: 4))
        }
        #expect(deliveries[0].isEmpty && deliveries[1].isEmpty, "handed over before it was whole: \(deliveries)")
        #expect(deliveries[2] == [first], "the split message, once and byte for byte: \(deliveries[2])")
        let pair = message(sequence: 2) + message(sequence: 3)
        _ = pair.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) }
        var got = drive(channel, rounds: 4)
        #expect(Array(got.joined()) == pair)
        // A length below the header size cannot be a message: the connection is closed.
        let bad: [UInt8] = [0x1a, 0x10, 0, 3, 0, 0, 0, 9]
        _ = bad.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) }
        got = drive(channel, rounds: 4)
        #expect(got.isEmpty)
        #expect(channel.framingErrors == 1)
        var byte: UInt8 = 0
        var closed = false
        for _ in 0..<20 where !closed {
            var p = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 50) > 0 { closed = recv(client, &byte, 1, Int32(MSG_DONTWAIT)) == 0 }
        }
        #expect(closed, "the channel should have closed the connection")
    }

    /// conntrackd counts a partial TCP write as whole and sends its next message: the stream
    /// holds a message cut after 20 bytes, then the next message. The cut one swallows the next
    /// one's start (the decoder gets it and judges it), and the header after it is none: a
    /// framing error, so the connection goes. The messages before are handed on.
    @Test func aMessageCutByAPartialWriteIsNotDelivered() throws {
        var framer = StreamFramer(.messages)
        let whole = message(sequence: 1, length: 84)
        let cut = Array(message(sequence: 2, length: 84)[0..<20])
        let next = message(sequence: 3, length: 84) + message(sequence: 4, length: 84)
        var delivered: [UInt8] = []
        let ok = (whole + cut + next).withUnsafeBytes { bytes in framer.append(bytes) { delivered += Array($0) } }
        #expect(!ok, "a stream out of step must be a framing error")
        #expect(Array(delivered.prefix(whole.count)) == whole && delivered.count == 2 * whole.count, "\(delivered.count) bytes")
        // Split anywhere, a sound stream comes out whole and in order.
        var again = StreamFramer(.messages)
        let sound = whole + next
        var out: [UInt8] = []
        for cutAt in [0, 3, 8, 84, 85, 200, sound.count] {
            out = []
            again.reset()
            for piece in [sound[0..<cutAt], sound[cutAt...]] {
                #expect(Array(piece).withUnsafeBytes { again.append($0) { out += Array($0) } })
            }
            #expect(out == sound, "split at \(cutAt)")
        }
    }

    @Test func sendsInOrderAndKeepsTheNewestWhileConnecting() throws {
        // The channel connects to its own listener: what it sends comes back.
        let channel = try makeChannel(port: Self.port())
        func collect(_ count: Int) -> [UInt8] {
            var received: [UInt8] = []
            for _ in 0..<40 where received.count < count {
                received += drive(channel, rounds: 1).joined()
                channel.tick(now: Int64.max / 2)
            }
            return received
        }
        // 50 sends before the connection is up: the newest ErrorQueueLength (8) wait, the
        // older give way (counted; FTFW repairs such losses by NACK).
        let early = (1...50).map { message(sequence: UInt32($0), length: 8 + ($0 % 5) * 4) }
        for m in early { _ = m.withUnsafeBytes { channel.send($0) } }
        let kept = Array(early.suffix(8).joined())
        #expect(collect(kept.count) == kept)
        #expect(channel.counters.sendErrors == 42)
        // Connected: everything arrives, in order.
        let later = (51...130).map { message(sequence: UInt32($0), length: 8 + ($0 % 7) * 4) }
        for m in later { _ = m.withUnsafeBytes { channel.send($0) } }
        #expect(collect(later.joined().count) == Array(later.joined()))
        #expect(channel.isConnected)
    }
}
