import Conntrack
import Foundation
import SyncProtocol
import Testing

/// Only the configured peer is heard (security review, findings 1 to 3): a flow sent over UDP
/// from another address, a unicast datagram to a multicast daemon, a TCP connection from
/// another address — each is dropped (refused) and counted, and the same bytes from the peer
/// are taken, so each test can fail.
@Suite(.serialized, requiresNamespaces) struct OriginTests {
    /// A NEW message for one flow, as a peer starting up would send it.
    static func forgedMessage(port: UInt16) -> String {
        let flow = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("198.18.66.1")!, destination: IPAddress("198.19.66.2")!, sourcePort: port, destinationPort: 22),
            tcp: TCPInfo(state: .established), status: [.seenReply, .assured, .confirmed], timeout: 8_553_600)
        return hexString(SyncWire.encode(SyncMessage(sequence: 1, hello: [.hello], body: .flow(.new, flow))))
    }

    /// Sends `hex` from `source` in namespace `ns`: a UDP datagram, or over a TCP connection
    /// (then waits, bounded, for the other side to close it: returns whether it did).
    @discardableResult
    static func send(_ hex: String, from source: String, to destination: String, tcp: Bool = false, in ns: TestNamespace) throws -> String {
        let script =
            tcp
            ? """
            import socket, sys
            s = socket.create_connection((sys.argv[3], 3780), timeout=3, source_address=(sys.argv[1], 0))
            s.sendall(bytes.fromhex(sys.argv[2]))
            try:
                print("closed" if s.recv(1) == b"" else "data")
            except (ConnectionResetError, BrokenPipeError):
                print("closed")
            except socket.timeout:
                print("open")
            """
            : """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((sys.argv[1], 0))
            if sys.argv[3].startswith("225."):
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
            s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[3], 3780))
            print("sent")
            """
        let r = try ns.exec(["python3", "-c", script, source, hex, destination], timeout: 10)
        try #require(r.status == 0, "python: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The pair with a third address (198.18.254.3, a stranger on the sync link) on b's side.
    func pair(_ tag: String) throws -> SyncPair {
        let pair = try SyncPair(tag)
        try run(["ip", "-n", pair.b.name, "addr", "add", "198.18.254.3/24", "dev", "\(pair.linkName)b"])
        return pair
    }

    func holds(_ daemon: TestDaemon, port: UInt16) throws -> Bool {
        try daemon.externalCache().contains { $0.original.sourcePort == port }
    }

    func unknownPeer(_ daemon: TestDaemon) throws -> Int {
        (try daemon.stats()["sync"] as? [String: Any])?["unknown_peer"] as? Int ?? -1
    }

    @Test func udpFromAnotherAddressIsDropped() throws {
        let pair = try pair("oru")
        defer { pair.remove() }
        let (da, _) = try pair.daemons()
        defer { da.stop() }
        try da.start()
        try Self.send(Self.forgedMessage(port: 1111), from: "198.18.254.3", to: "198.18.254.1", in: pair.b)
        #expect(try eventually(within: 3) { try unknownPeer(da) == 1 })
        #expect(try !holds(da, port: 1111))
        // The same message from the configured peer is taken.
        try Self.send(Self.forgedMessage(port: 1111), from: "198.18.254.2", to: "198.18.254.1", in: pair.b)
        #expect(try eventually(within: 3) { try holds(da, port: 1111) })
        #expect(try unknownPeer(da) == 1)
        #expect(eventually(within: 12) { da.stderr.contains("from an unknown peer dropped (last from 198.18.254.3)") }, "\(da.stderr)")
    }

    @Test func multicastTakesOnlyTheGroup() throws {
        let pair = try pair("orm")
        defer { pair.remove() }
        let (da, _) = try pair.daemons(multicast: true)
        defer { da.stop() }
        try da.start()
        // Unicast to the daemon's own address on the sync port: not sync.
        try Self.send(Self.forgedMessage(port: 2222), from: "198.18.254.2", to: "198.18.254.1", in: pair.b)
        let sync = try #require(try da.stats()["sync"] as? [String: Any])
        #expect(sync["datagrams_received"] as? Int == 0, "\(sync)")
        #expect(try !holds(da, port: 2222))
        // To the group, on the link: sync.
        try Self.send(Self.forgedMessage(port: 2222), from: "198.18.254.2", to: "225.0.0.50", in: pair.b)
        #expect(try eventually(within: 3) { try holds(da, port: 2222) })
    }

    /// UDP datagrams that reached the namespace's UDP layer for a multicast group and that no
    /// socket took (`IgnoredMulti` in its /proc/net/snmp).
    func ignoredMulticast(_ ns: TestNamespace) throws -> Int {
        let udp = try ns.exec(["cat", "/proc/net/snmp"]).lines.filter { $0.hasPrefix("Udp: ") }.map { $0.split(separator: " ") }
        guard udp.count == 2, let i = udp[0].firstIndex(of: "IgnoredMulti"), i < udp[1].count else { return -1 }
        return Int(udp[1][i]) ?? -1
    }

    /// conntrackd 1.4.9 binds the multicast socket to the group: a datagram to another group on
    /// the sync port is not sync, even though a's kernel takes that group on the link; nor is
    /// the group's own traffic on another interface than the configured one (a's kernel takes
    /// the group there too). Both reach a's UDP layer and no socket takes them.
    @Test func multicastTakesOnlyTheGroupOnItsInterface() throws {
        let pair = try pair("orx")
        defer { pair.remove() }
        let other = try pair.addSecondLink()
        // a's kernel joins another group on the sync link, and the group on the second link.
        for (group, device) in [("225.0.0.51", "\(pair.linkName)a"), ("225.0.0.50", "\(other)a")] {
            let command = ["ip", "-n", pair.a.name, "addr", "add", "\(group)/32", "dev", device, "autojoin"]
            let r = try run(command)
            try #require(r.status == 0, "\(command): \(r.stderr)")
        }
        let (da, _) = try pair.daemons(multicast: true)
        defer { da.stop() }
        try da.start()
        let ignored = try ignoredMulticast(pair.a)
        try Self.send(Self.forgedMessage(port: 5555), from: "198.18.254.2", to: "225.0.0.51", in: pair.b)
        try Self.send(Self.forgedMessage(port: 6666), from: "198.18.253.2", to: "225.0.0.50", in: pair.b)
        #expect(try eventually(within: 3) { try ignoredMulticast(pair.a) >= ignored + 2 }, "the datagrams did not reach a")
        let sync = try #require(try da.stats()["sync"] as? [String: Any])
        #expect(sync["datagrams_received"] as? Int == 0, "\(sync)")
        #expect(try !holds(da, port: 5555) && !holds(da, port: 6666))
        // To the group, on the configured link: sync.
        try Self.send(Self.forgedMessage(port: 7777), from: "198.18.254.2", to: "225.0.0.50", in: pair.b)
        #expect(try eventually(within: 3) { try holds(da, port: 7777) })
    }

    @Test func tcpFromAnotherAddressIsRefusedAndNeverReplacesThePeer() throws {
        let pair = try pair("ort")
        defer { pair.remove() }
        let (da, _) = try pair.daemons(transport: "TCP")
        defer { da.stop() }
        try da.start()
        let stranger = try Self.send(Self.forgedMessage(port: 3333), from: "198.18.254.3", to: "198.18.254.1", tcp: true, in: pair.b)
        #expect(stranger == "closed")
        #expect(try eventually(within: 3) { try unknownPeer(da) == 1 })
        #expect(try !holds(da, port: 3333))
        let peer = try Self.send(Self.forgedMessage(port: 3333), from: "198.18.254.2", to: "198.18.254.1", tcp: true, in: pair.b)
        #expect(peer == "open")
        #expect(try eventually(within: 3) { try holds(da, port: 3333) })
    }

    /// Finding 3 with the peer connected: a stranger's connection is refused while the peer's
    /// stays, and the peer's flows keep arriving on it.
    @Test func aStrangerDoesNotReplaceAConnectedPeer() throws {
        let pair = try pair("ors")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(transport: "TCP")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        try pair.b.table { _ = try $0.write([testFlow(5001, src: "198.18.77.1")], operation: .create) }
        #expect(try eventually(within: 10) { try holds(da, port: 5001) })
        let stranger = try Self.send(Self.forgedMessage(port: 3334), from: "198.18.254.3", to: "198.18.254.1", tcp: true, in: pair.b)
        #expect(stranger == "closed")
        #expect(try eventually(within: 3) { try unknownPeer(da) == 1 })
        try pair.b.table { _ = try $0.write([testFlow(5002, src: "198.18.77.1")], operation: .create) }
        #expect(try eventually(within: 5) { try holds(da, port: 5002) }, "the peer's connection still carries its flows")
        #expect(try !holds(da, port: 3334))
    }

    /// Finding 1: a committed flow kept the peer's timeout (about 99 days). Without
    /// CommitTimeout it gets no more than this kernel's own timeout for its state.
    @Test func aCommittedFlowGetsNoMoreThanTheKernelsTimeout() throws {
        let pair = try pair("orc")
        defer { pair.remove() }
        let (da, _) = try pair.daemons()
        defer { da.stop() }
        try da.start()
        try Self.send(Self.forgedMessage(port: 4444), from: "198.18.254.2", to: "198.18.254.1", in: pair.b)
        #expect(try eventually(within: 3) { try holds(da, port: 4444) })
        #expect(try da.externalCache().first { $0.original.sourcePort == 4444 }?.timeout == 8_553_600)
        #expect(try da.ctsyncd(["-c"]).status == 0)
        let limit = try #require(
            UInt32(
                try pair.a.exec(["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_established"]).stdout.trimmingCharacters(
                    in: .whitespacesAndNewlines)))
        let committed = try #require(try pair.a.table { try $0.dump() }.first { $0.original.sourcePort == 4444 })
        #expect((committed.timeout ?? 0) <= limit && (committed.timeout ?? 0) + 60 > limit, "\(committed.timeout ?? 0) of \(limit)")
    }
}
