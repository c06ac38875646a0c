import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Two firewalls, a and b, joined by a veth pair on 198.18.254.0/24 (the sync link).
struct SyncPair {
    let a: TestNamespace
    let b: TestNamespace
    static let port = 3780

    init(_ tag: String) throws {
        a = try TestNamespace("\(tag)_a")
        b = try TestNamespace("\(tag)_b")
        let link = "ctt\(getpid() % 100000)"
        try Self.join(a, b, name: link, subnet: "198.18.254")
        linkName = link
    }
    let linkName: String

    /// Joins a and b with a veth pair NAMEa / NAMEb: SUBNET.1/24 on a's end, SUBNET.2/24 on b's, both up.
    static func join(_ a: TestNamespace, _ b: TestNamespace, name: String, subnet: String) throws {
        try run(["ip", "link", "add", "\(name)a", "netns", a.name, "type", "veth", "peer", "name", "\(name)b", "netns", b.name])
        for (ns, side, host) in [(a, "a", 1), (b, "b", 2)] {
            try run(["ip", "-n", ns.name, "addr", "add", "\(subnet).\(host)/24", "dev", "\(name)\(side)"])
            try run(["ip", "-n", ns.name, "link", "set", "\(name)\(side)", "up"])
        }
    }

    /// A second link between a and b, on 198.18.253.0/24; returns its name (without a or b).
    func addSecondLink() throws -> String {
        let name = "\(linkName)c"
        try Self.join(a, b, name: name, subnet: "198.18.253")
        return name
    }

    /// The Sync section of one side (FTFW over UDP unicast).
    func syncSection(
        local: String, peer: String, interface: String, extra: String = "", mode: String = "FTFW", transport: String = "UDP", syncExtra: String = ""
    ) -> String {
        """
        Sync {
            \(syncExtra)
            Mode \(mode) {
                \(mode == "FTFW" ? "ResendQueueSize 262144" : "")
                \(extra)
            }
            \(transport) {
                IPv4_address \(local)
                IPv4_Destination_Address \(peer)
                Port \(Self.port)
                Interface \(interface)
                SndSocketBuffer 8388608
                RcvSocketBuffer 8388608
                Checksum on
            }
        }
        """
    }

    /// The Sync section of one side over multicast (group 225.0.0.50 on the sync link).
    func multicastSection(local: String, interface: String, syncExtra: String = "") -> String {
        """
        Sync {
            \(syncExtra)
            Mode FTFW {
            }
            Multicast {
                IPv4_address 225.0.0.50
                Group \(Self.port)
                IPv4_interface \(local)
                Interface \(interface)
                SndSocketBuffer 8388608
                RcvSocketBuffer 8388608
                Checksum on
            }
        }
        """
    }

    /// `syncExtra`: lines for each side's Sync section itself (a: first, b: second).
    func daemons(
        extra: String = "", multicast: Bool = false, mode: String = "FTFW", transport: String = "UDP", syncExtra: (String, String) = ("", "")
    ) throws -> (TestDaemon, TestDaemon) {
        let sides = [
            ("198.18.254.1", "198.18.254.2", "\(linkName)a", syncExtra.0), ("198.18.254.2", "198.18.254.1", "\(linkName)b", syncExtra.1),
        ]
        let sections = sides.map {
            multicast
                ? multicastSection(local: $0.0, interface: $0.2, syncExtra: $0.3)
                : syncSection(local: $0.0, peer: $0.1, interface: $0.2, extra: extra, mode: mode, transport: transport, syncExtra: $0.3)
        }
        let da = try TestDaemon(a) { TestDaemon.config(directory: $0, extra: sections[0]) }
        let db = try TestDaemon(b) { TestDaemon.config(directory: $0, extra: sections[1]) }
        return (da, db)
    }

    /// Waits (bounded) until both ends of the link have carrier (operstate UP): the kernel
    /// reports it a moment after `link set up`, and conntrackd keeps the link status it read at
    /// its start for `-s link`.
    func waitForCarrier(within seconds: Double = 5) -> Bool {
        eventually(within: seconds) {
            [(a, "a"), (b, "b")].allSatisfy { ns, side in
                ((try? run(["ip", "-n", ns.name, "-o", "link", "show", "dev", "\(linkName)\(side)"]))?.stdout ?? "").contains(" state UP ")
            }
        }
    }

    /// Drops `percent` % of the sync datagrams arriving in `namespace` (nftables; no netem here).
    func dropSync(in namespace: TestNamespace, percent: Int) throws {
        let rules =
            "table inet cttloss {\n chain input {\n type filter hook input priority -300;\n udp dport \(Self.port) numgen random mod 100 < \(percent) drop\n }\n}\n"
        let r = try namespace.exec(["nft", "-f", "-"], input: rules)
        guard r.status == 0 else { throw TestDaemon.DaemonFailure(message: "nft: \(r.stderr)") }
    }

    func remove() {
        a.remove()
        b.remove()
    }
}

extension TestDaemon {
    /// The external cache as flows, through `ctsync cache external -o json`.
    func externalCache() throws -> [Flow] {
        let r = try namespace.ctsync(["cache", "external", "-o", "json", "-C", configPath])
        guard r.status == 0 else { throw DaemonFailure(message: "cache dump failed: \(r.stderr)") }
        return try r.lines.map(FlowJSON.decode)
    }

    func externalCount() throws -> Int { (try stats()["external"] as? [String: Any])?["active"] as? Int ?? -1 }
}

/// What `namespace`'s kernel holds of `flows` (its own state of them), as conntrack prints it.
func kernel(_ namespace: TestNamespace, _ flows: [Flow]) throws -> Set<LineEssentials> {
    let wanted = Set(flows.map(\.key))
    return Set(try namespace.table { try $0.dump() }.filter { wanted.contains($0.key) }.map(LineEssentials.init))
}

extension Set where Element == LineEssentials {
    var withoutReplies: Set<LineEssentials> { Swift.Set(map(\.withoutReply)) }
}

/// A ctsyncd's external cache in the same form.
func external(_ daemon: TestDaemon) throws -> Set<LineEssentials> {
    Set(try daemon.externalCache().map(LineEssentials.init))
}

/// Both namespaces track, NAT and carry labels; returns a varied set of flows for each (TCP
/// states, SNAT, DNAT, marks, zones, labels, ICMP, IPv6), disjoint, not written yet.
func variedPair(_ pair: SyncPair) throws -> (onA: [Flow], onB: [Flow]) {
    for ns in [pair.a, pair.b] {
        let r = try ns.exec(["nft", "-f", "-"], input: trackingRuleset)
        try #require(r.status == 0, "nft: \(r.stderr)")
    }
    return (variedFlows(), variedFlows(offset: 1000))
}

@Suite(.serialized, requiresNamespaces) struct ReplicationTests {
    /// Flows of one side appear in the other's external cache, field by field; destroys follow.
    @Test func flowsReplicateBothWaysAndDestroysFollow() throws {
        let pair = try SyncPair("rep")
        defer { pair.remove() }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let (onA, onB) = try variedPair(pair)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        try pair.b.table { _ = try $0.write(onB, operation: .create) }
        // Whole flows, both ways: tuples (NAT), TCP state, mark, zone as each kernel holds them.
        expectAgreement(within: 10, { try external(db).among(onA) }, { try kernel(pair.a, onA) })
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, onB) })
        // And what the text leaves out: labels and the status bits.
        let mirrored = Dictionary(try db.externalCache().map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        for flow in try pair.a.table({ try $0.dump() }) where onA.contains(where: { $0.key == flow.key }) {
            #expect(mirrored[flow.key].map { essentials($0) } == essentials(flow))
        }
        try pair.a.table { _ = try $0.write(onA, operation: .delete) }
        #expect(try eventually(within: 10) { try external(db).among(onA).isEmpty })
        #expect(try external(da).among(onB) == kernel(pair.b, onB))
    }

    /// NOTRACK: best effort, the same messages without acknowledgements; on a lossless link
    /// flows and destroys arrive, `-n` and `-B` work.
    @Test func notrackPairReplicates() throws {
        let pair = try SyncPair("ntr")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(mode: "NOTRACK")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let onA = burst(500)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 500 })
        try pair.a.table { _ = try $0.write(Array(onA[0..<200]), operation: .delete) }
        #expect(try eventually(within: 10) { try db.externalCount() == 300 })
        #expect(try Set(db.externalCache().map(\.key)) == Set(onA[200...].map(\.key)))
        #expect(try db.quietly(["-f", "external"]))
        #expect(try db.externalCount() == 0, "-f external left flows: -n would prove nothing")
        #expect(try db.quietly(["-n"]))
        #expect(try eventually(within: 10) { try Set(db.externalCache().map(\.key)) == Set(onA[200...].map(\.key)) })
        let sync = try #require(try da.stats()["sync"] as? [String: Any])
        #expect(sync["mode"] as? String == "NOTRACK")
        #expect(sync["acks_sent"] as? Int == 0 && sync["resend_queue"] as? Int == 0)
    }

    /// `DisableInternalCache` (NOTRACK, as conntrackd): no cache on the sender; events go to the
    /// peer as they come; `-B` and the peer's `-n` send the kernel's
    /// table; `-i` lists the kernel's flows; `-s` has the "internal bypass" block.
    @Test func disabledInternalCacheSendsEventsAsTheyCome() throws {
        let pair = try SyncPair("nbp")
        defer { pair.remove() }
        let before = burst(50)
        try pair.a.table { _ = try $0.write(before, operation: .create) }
        let sideA = pair.syncSection(
            local: "198.18.254.1", peer: "198.18.254.2", interface: "\(pair.linkName)a", extra: "DisableInternalCache on", mode: "NOTRACK")
        let sideB = pair.syncSection(local: "198.18.254.2", peer: "198.18.254.1", interface: "\(pair.linkName)b", mode: "NOTRACK")
        let da = try TestDaemon(pair.a) { TestDaemon.config(directory: $0, extra: sideA) }
        let db = try TestDaemon(pair.b) { TestDaemon.config(directory: $0, extra: sideB) }
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        // Created after the start: on b, then gone from b when destroyed on a. (b asks for a's
        // table on first contact, and a answers from the kernel: the flows from before come too.)
        let after = burst(300, base: 0xC612_0001)
        try pair.a.table { _ = try $0.write(after, operation: .create) }
        let keys = { Set(try db.externalCache().map(\.key)) }
        let all = Set((before + after).map(\.key))
        #expect(try eventually(within: 10) { try keys() == all })
        try pair.a.table { _ = try $0.write(Array(after[0..<100]), operation: .delete) }
        let left = Set((before + after[100...]).map(\.key))
        #expect(try eventually(within: 10) { try keys() == left })
        // -B sends the kernel's table again.
        #expect(try db.quietly(["-f", "external"]))
        #expect(try keys().isEmpty)
        #expect(try da.quietly(["-B"]))
        #expect(try eventually(within: 10) { try keys() == left })
        // b asks (-n) after forgetting: a answers from the kernel.
        #expect(try db.quietly(["-f", "external"]))
        #expect(try keys().isEmpty)
        #expect(try db.quietly(["-n"]))
        #expect(try eventually(within: 10) { try keys() == left })
        // -i is the kernel's table in conntrack's line (with the timeout); -s says "internal bypass".
        let dump = try da.ctsyncd(["-i"])
        #expect(dump.lines.count == 250 && dump.lines.allSatisfy { !$0.contains("[active since") && $0.hasPrefix("udp      17 ") }, "\(dump.stdout)")
        let stats = try da.ctsyncd(["-s"]).stdout
        #expect(
            stats.hasPrefix(
                "internal bypass:\nconnections new:\t\t         300\nconnections updated:\t\t           0\nconnections destroyed:\t\t         100\n"),
            "\(stats)")
        #expect(try da.ctsyncd(["-R"]).status != 0)
        #expect(try da.ctsyncd(["-f", "internal"]).status != 0)
        // Nothing kept: a holds no internal cache.
        #expect((try da.stats()["internal"] as? [String: Any])?["active"] as? Int == 0)
    }

    /// Two dedicated links: the first (Default) carries the traffic; when it goes down the
    /// second takes over (and the peer follows), and nothing is lost on the way.
    @Test func secondLinkTakesOverWhenTheFirstGoesDown() throws {
        let pair = try SyncPair("mlk")
        defer { pair.remove() }
        let second = try pair.addSecondLink()
        func section(_ side: String, _ local: String, _ peer: String) -> String {
            """
            Sync {
                Mode FTFW {
                }
                UDP Default {
                    IPv4_address 198.18.254.\(local)
                    IPv4_Destination_Address 198.18.254.\(peer)
                    Port 3780
                    Interface \(pair.linkName)\(side)
                }
                UDP {
                    IPv4_address 198.18.253.\(local)
                    IPv4_Destination_Address 198.18.253.\(peer)
                    Port 3781
                    Interface \(second)\(side)
                }
            }
            """
        }
        let da = try TestDaemon(pair.a) { TestDaemon.config(directory: $0, extra: section("a", "1", "2")) }
        let db = try TestDaemon(pair.b) { TestDaemon.config(directory: $0, extra: section("b", "2", "1")) }
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = burst(400)
        try pair.a.table { _ = try $0.write(Array(flows[0..<200]), operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 200 })
        let before = try da.ctsyncd(["-s", "link"]).stdout
        #expect(before.contains("device=\(pair.linkName)a status=RUNNING role=ACTIVE"), "\(before)")
        #expect(before.contains("device=\(second)a status=RUNNING role=BACKUP"), "\(before)")

        try run(["ip", "-n", pair.a.name, "link", "set", "\(pair.linkName)a", "down"])
        try pair.a.table { _ = try $0.write(Array(flows[200...]), operation: .create) }
        try pair.a.table { _ = try $0.write(Array(flows[0..<100]), operation: .delete) }
        #expect(try eventually(within: 10) { try Set(db.externalCache().map(\.key)) == Set(flows[100...].map(\.key)) })
        let after = try da.ctsyncd(["-s", "link"]).stdout
        #expect(after.contains("device=\(pair.linkName)a status=DOWN role=BACKUP"), "\(after)")
        #expect(after.contains("device=\(second)a status=RUNNING role=ACTIVE"), "\(after)")
        // b followed: its answers go over the second link too.
        #expect(try eventually(within: 5) { try db.ctsyncd(["-s", "link"]).stdout.contains("device=\(second)b status=RUNNING role=ACTIVE") })
    }

    /// The TCP link: one connection per direction; b's restart breaks them, a reconnects and
    /// b gets everything again.
    @Test func tcpLinkReplicatesAndReconnects() throws {
        let pair = try SyncPair("tcp")
        defer { pair.remove() }
        var (da, db) = try pair.daemons(transport: "TCP")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = burst(700)
        try pair.a.table { _ = try $0.write(Array(flows[0..<500]), operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 500 })
        try pair.a.table { _ = try $0.write(Array(flows[0..<100]), operation: .delete) }
        #expect(try eventually(within: 10) { try db.externalCount() == 400 })
        db.stop()
        try pair.a.table { _ = try $0.write(Array(flows[500...]), operation: .create) }
        db = try TestDaemon(pair.b) {
            TestDaemon.config(
                directory: $0, extra: pair.syncSection(local: "198.18.254.2", peer: "198.18.254.1", interface: "\(pair.linkName)b", transport: "TCP"))
        }
        try db.start()
        #expect(try eventually(within: 15) { try Set(db.externalCache().map(\.key)) == Set(flows[100...].map(\.key)) })
        let link = try da.ctsyncd(["-s", "link"]).stdout
        #expect(link.contains("TCP traffic device=\(pair.linkName)a status=RUNNING role=ACTIVE"), "\(link)")
        // A burst larger than the socket buffers: sends wait (and the oldest give way beyond
        // ErrorQueueLength, repaired by FTFW); the mirror ends exact, then empty after a flush.
        let big = burst(30_000, base: 0xC612_4000)
        try pair.a.table { _ = try $0.write(big, operation: .create) }
        let want = Set((Array(flows[100...]) + big).map(\.key))
        #expect(try eventually(within: 30) { try Set(db.externalCache().map(\.key)) == want })
        try pair.a.table { try $0.flush() }
        #expect(try eventually(within: 30) { try db.externalCount() == 0 })
    }

    /// DisableExternalCache on b: a's flows go straight into b's kernel table (and leave it),
    /// and b does not replicate them back as its own.
    @Test func disabledExternalCacheInjectsIntoTheKernel() throws {
        let pair = try SyncPair("inj")
        defer { pair.remove() }
        let da = try TestDaemon(pair.a) {
            TestDaemon.config(directory: $0, extra: pair.syncSection(local: "198.18.254.1", peer: "198.18.254.2", interface: "\(pair.linkName)a"))
        }
        let db = try TestDaemon(pair.b) {
            TestDaemon.config(
                directory: $0,
                extra: pair.syncSection(
                    local: "198.18.254.2", peer: "198.18.254.1", interface: "\(pair.linkName)b", extra: "DisableExternalCache on"))
        }
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = burst(300)
        let keys = Set(flows.map(\.key))
        try pair.a.table { _ = try $0.write(flows, operation: .create) }
        #expect(try eventually(within: 10) { try keys.isSubset(of: Set(pair.b.table { try $0.dump() }.map(\.key))) })
        try pair.a.table { _ = try $0.write(Array(flows[0..<100]), operation: .delete) }
        let left = Set(flows[100...].map(\.key))
        #expect(try eventually(within: 10) { try Set(pair.b.table { try $0.dump() }.map(\.key)).intersection(keys) == left })
        // Not b's own: not in its internal cache, not sent back to a.
        #expect(try db.internalCache().filter { keys.contains($0.key) }.isEmpty)
        #expect(try da.externalCount() == 0)
        let stats = try db.ctsyncd(["-s"]).stdout
        #expect(stats.contains("external inject:\nconnections created:\t\t         300"), "\(stats)")
        let commit = try db.ctsyncd(["-c"])
        #expect(commit.status == 0 && commit.stdout.contains("committed 0 flows"), "\(commit.stdout) \(commit.stderr)")
    }

    /// ALARM: soft state. Every flow is sent again within RefreshTime; the peer drops what is
    /// not refreshed for CacheTimeout (here: after a's daemon stops).
    @Test func alarmPairRefreshesAndExpires() throws {
        let pair = try SyncPair("alm")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(extra: "RefreshTime 2\nCacheTimeout 5", mode: "ALARM")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let onA = burst(300)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 300 })
        // Forgotten by b, sent again by a's refresh within RefreshTime.
        #expect(try db.quietly(["-f", "external"]))
        #expect(try db.externalCount() == 0)
        #expect(try eventually(within: 6) { try db.externalCount() == 300 })
        let sync = try #require(try da.stats()["sync"] as? [String: Any])
        #expect(sync["mode"] as? String == "ALARM")
        // a stops refreshing: b drops its flows after CacheTimeout.
        da.stop()
        #expect(try eventually(within: 12) { try db.externalCount() == 0 })
    }

    /// b restarts while a keeps changing; then a restarts after flows ended while it was down:
    /// each time the peer converges, with no ghosts of flows that ended meanwhile.
    @Test func peerRestartsConverge() throws {
        let pair = try SyncPair("rst")
        defer { pair.remove() }
        var (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let first = burst(2000)
        try pair.a.table { _ = try $0.write(first, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 2000 })

        // b goes down; a changes; b comes back and must catch up.
        db.stop()
        let second = burst(1000, base: 0xC612_4000)
        try pair.a.table { table in
            _ = try table.write(second, operation: .create)
            _ = try table.write(Array(first[0..<500]), operation: .delete)
        }
        let restartedB = try pair.daemons()
        restartedB.0.stop()
        db = restartedB.1
        try db.start()
        func converged(_ mirror: TestDaemon, _ source: TestNamespace) throws -> Bool {
            Set(try mirror.externalCache().map(\.key)) == Set(try source.table { try $0.dump() }.map(\.key))
        }
        #expect(try eventually(within: 15) { try converged(db, pair.a) })

        // a goes down; flows end while it is down; a comes back: b must drop the ghosts.
        da.stop()
        try pair.a.table { _ = try $0.write(Array(first[500..<1500]), operation: .delete) }
        let restartedA = try pair.daemons()
        restartedA.1.stop()
        da = restartedA.0
        try da.start()
        #expect(try eventually(within: 15) { try converged(db, pair.a) })
        let left = try db.externalCount()
        #expect(left == 1500, "b holds \(left) of a's flows; a has 1500")
    }

    /// An IPv6 sync link (unicast) carrying IPv6 and IPv4 flows; and the CLI's resync request and bulk.
    @Test func ipv6LinkAndCLIResyncAndBulk() throws {
        let pair = try SyncPair("v6")
        defer { pair.remove() }
        try run(["ip", "-n", pair.a.name, "addr", "add", "2001:db8:254::1/64", "dev", "\(pair.linkName)a", "nodad"])
        try run(["ip", "-n", pair.b.name, "addr", "add", "2001:db8:254::2/64", "dev", "\(pair.linkName)b", "nodad"])
        func section(_ local: String, _ peer: String, _ interface: String) -> String {
            """
            Sync {
                Mode FTFW {
                }
                UDP {
                    IPv6_address \(local)
                    IPv6_Destination_Address \(peer)
                    Port \(SyncPair.port)
                    Interface \(interface)
                }
            }
            """
        }
        let da = try TestDaemon(pair.a) {
            TestDaemon.config(directory: $0, extra: section("2001:db8:254::1", "2001:db8:254::2", "\(pair.linkName)a"))
        }
        let db = try TestDaemon(pair.b) {
            TestDaemon.config(directory: $0, extra: section("2001:db8:254::2", "2001:db8:254::1", "\(pair.linkName)b"))
        }
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        var v6 = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("2001:db8:1::1")!, destination: IPAddress("2001:db8:2::1")!, sourcePort: 40000, destinationPort: 443),
            tcp: TCPInfo(state: .established), status: [.seenReply, .assured], timeout: 600, mark: 5)
        v6.zone = 3
        try pair.a.table { _ = try $0.write([v6] + burst(99), operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 100 })
        let mirrored = try db.externalCache().first { $0.family == .ipv6 }
        #expect(mirrored?.key == v6.key && mirrored?.mark == 5 && mirrored?.tcp?.state == .established)
        // ctsync flush external on b, then ctsync resync --request: a sends its table again.
        #expect(try pair.b.ctsync(["flush", "external", "-C", db.configPath]).status == 0)
        #expect(try db.externalCount() == 0)
        #expect(try pair.b.ctsync(["resync", "--request", "-C", db.configPath]).status == 0)
        #expect(try eventually(within: 10) { try db.externalCount() == 100 })
        // ctsync bulk from a after b flushed again.
        #expect(try pair.b.ctsync(["flush", "external", "-C", db.configPath]).status == 0)
        #expect(try db.externalCount() == 0)
        let bulk = try pair.a.ctsync(["bulk", "-C", da.configPath])
        #expect(bulk.status == 0 && bulk.stderr.contains("100 flows queued"), "\(bulk.stderr)")
        #expect(try eventually(within: 10) { try db.externalCount() == 100 })
    }

    @Test func multicastLinkReplicatesBothWays() throws {
        let pair = try SyncPair("mc")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(multicast: true)
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        try pair.a.table { _ = try $0.write(burst(400), operation: .create) }
        try pair.b.table { _ = try $0.write(burst(100, base: 0xC612_8000), operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 400 && da.externalCount() == 100 })
        #expect(try Set(db.externalCache().map(\.key)) == Set(burst(400).map(\.key)))
        #expect(try Set(da.externalCache().map(\.key)) == Set(burst(100, base: 0xC612_8000).map(\.key)))
        try pair.a.table { try $0.flush() }
        #expect(try eventually(within: 10) { try db.externalCount() == 0 })
        // Our own datagrams never come back as the peer's (multicast loop is off; own sources ignored).
        #expect(try da.externalCount() == 100)
    }

    /// 50k flows, then all flushed, with a fraction of the sync datagrams dropped: the peer's
    /// external cache must end exactly equal to the kernel table (0 missing, 0 ghosts).
    @Test(arguments: [0, 20, 40])
    func fiftyThousandFlowsUnderLoss(percent: Int) throws {
        let pair = try SyncPair("loss\(percent)")
        defer { pair.remove() }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        if percent > 0 { try pair.dropSync(in: pair.b, percent: percent) }
        let flows = burst(50_000)
        try pair.a.table { _ = try $0.write(flows, operation: .create) }
        let filled = try eventually(within: 60) { try db.externalCount() == 50_000 }
        let mirrored = Set(try db.externalCache().map(\.key))
        let kernel = Set(try pair.a.table { try $0.dump() }.map(\.key))
        #expect(filled, "\(percent)% loss: \(kernel.subtracting(mirrored).count) missing, \(mirrored.subtracting(kernel).count) ghosts")
        #expect(mirrored == kernel)
        try pair.a.table { try $0.flush() }
        let emptied = try eventually(within: 60) { try db.externalCount() == 0 }
        let ghosts = try db.externalCount()
        #expect(emptied, "\(percent)% loss: \(ghosts) ghosts after the flush")
        if percent > 0 {
            let sync = try db.stats()["sync"] as? [String: Any]
            #expect((sync?["nacks_sent"] as? Int ?? 0) > 0)
        }
    }
}

/// ctsyncd paired with the real conntrackd (Debian 1.4.7), both directions, FTFW over UDP.
extension ConntrackdProcess {
    /// conntrackd on the configuration ctsyncd would have used in `namespace` (same grammar);
    /// the configuration's directory goes when it stops.
    convenience init(_ namespace: TestNamespace, config: TestDaemon) throws {
        try self.init(namespace: namespace.name, configPath: config.configPath)
        onStop = { config.stop() }
    }
}

@Suite(.serialized, requiresNamespaces, .enabled(if: Host.runs(if: Host.has("conntrackd")), "needs conntrackd (Debian package conntrackd)"))
struct ConntrackdInteropTests {
    /// conntrackd's external cache (`conntrackd -e`), whole flows as its dump prints them.
    func conntrackdExternal(_ ns: TestNamespace, config: String) throws -> Set<LineEssentials> {
        let r = try ns.exec(["conntrackd", "-C", config, "-e"])
        return Set(r.lines.compactMap(ConntrackLine.init).map(LineEssentials.init))
    }

    /// ALARM both ways (conntrackd's ALARM answers no -n or -B: the refresh carries the table).
    @Test func alarmModeInteroperates() throws {
        let pair = try SyncPair("ioa")
        defer { pair.remove() }
        let (da, dbConfigOnly) = try pair.daemons(extra: "RefreshTime 2\nCacheTimeout 6", mode: "ALARM")
        defer { da.stop() }
        try da.start()
        let conntrackd = try ConntrackdProcess(pair.b, config: dbConfigOnly)
        defer { conntrackd.stop() }
        #expect(conntrackd.answers(within: 10))
        let (onA, onB) = try variedPair(pair)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) }, { try kernel(pair.a, onA).withoutReplies })
        try pair.b.table { _ = try $0.write(onB, operation: .create) }
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, onB) })
        try pair.a.table { _ = try $0.write(Array(onA[0..<100]), operation: .delete) }
        try pair.b.table { _ = try $0.write(Array(onB[0..<50]), operation: .delete) }
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) },
            { try kernel(pair.a, Array(onA[100...])).withoutReplies })
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, Array(onB[50...])) })
        // conntrackd forgets, ctsyncd's refresh (RefreshTime 2) brings the flows back. Right
        // after the flush at most one refresh slice (half the flows) can be back.
        #expect(try pair.b.exec(["conntrackd", "-C", dbConfigOnly.configPath, "-f", "external"]).status == 0)
        let afterFlush = try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA).count
        #expect(afterFlush < onA.count - 100, "conntrackd still holds \(afterFlush) of \(onA.count - 100) flows after -f external")
        expectAgreement(
            within: 8, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) },
            { try kernel(pair.a, Array(onA[100...])).withoutReplies })
        // Neither side saw a malformed message or a gap (a lossless veth).
        let network = try da.ctsyncd(["-s", "network"]).stdout
        #expect(networkErrors(network) == 0, "\(network)")
        let theirs = try conntrackd.client(["-s", "network"]).stdout
        #expect(theirs.contains("Malformed messages:") && networkErrors(theirs) == 0, "conntrackd: \(theirs)")
    }

    /// conntrackd sending to ctsyncd over TCP, both started together, a 20,000-flow burst a
    /// second later. conntrackd's connection to ctsyncd is refused at its start (ctsyncd is not
    /// listening yet) and retried a second later; what it sends meanwhile overflows its error
    /// queue and is never resent (it empties its resend queue on our HELLO). 19.5k flows were
    /// missing after 15 s; ctsyncd now asks for the table on first contact.
    @Test func conntrackdSenderOverTCPStartedTogether() throws {
        let pair = try SyncPair("iotb")
        defer { pair.remove() }
        let (da, dbConfigOnly) = try pair.daemons(transport: "TCP")
        defer { da.stop() }
        let conntrackd = try ConntrackdProcess(pair.b, config: dbConfigOnly)
        defer { conntrackd.stop() }
        try da.start()
        for ns in [pair.a, pair.b] {
            let r = try ns.exec(["nft", "-f", "-"], input: trackingRuleset)
            try #require(r.status == 0, "nft: \(r.stderr)")
        }
        // The scenario's second (not a synchronisation: the burst must come while conntrackd
        // is still reconnecting).
        usleep(1_000_000)
        let burst = try pair.b.ctsync(["kernel", "insert", "--generate", "20000", "-t", "600"])
        try #require(burst.status == 0, "insert: \(burst.stderr)")
        // The burst's flows (the sync link's own TCP connections are tracked and replicated too).
        let wanted = Set(SyntheticFlows(count: 20000).map(\.key))
        let held = { (try? da.externalCache().filter { wanted.contains($0.key) }.count) ?? -1 }
        let arrived = eventually(within: 10) { held() == 20000 }
        #expect(arrived, "ctsyncd holds \(held()) of 20000 flows; conntrackd: \(conntrackd.log)")
        // -s shows the link as conntrackd shows it, both connections' state on the heading.
        let heading = { (text: String) in text.split(separator: "\n").first { $0.hasPrefix("TCP traffic") }.map(String.init) ?? "" }
        let ours = heading(try da.ctsyncd(["-s"]).stdout)
        let theirs = heading(try conntrackd.client(["-s"]).stdout)
        #expect(ours == "TCP traffic (active device=\(pair.linkName)a) server=connected client=connected:", "\(ours)")
        #expect(theirs == "TCP traffic (active device=\(pair.linkName)b) server=connected client=connected:", "\(theirs)")
    }

    /// Both sides with `DisableInternalCache` (NOTRACK), ctsyncd and conntrackd: events go
    /// across both ways, and both print the "internal bypass" block with the same counts.
    @Test func bypassingPairInteroperates() throws {
        let pair = try SyncPair("iob")
        defer { pair.remove() }
        let (da, dbConfigOnly) = try pair.daemons(extra: "DisableInternalCache on", mode: "NOTRACK")
        defer { da.stop() }
        try da.start()
        let conntrackd = try ConntrackdProcess(pair.b, config: dbConfigOnly)
        defer { conntrackd.stop() }
        #expect(conntrackd.answers(within: 10))
        for ns in [pair.a, pair.b] {
            let r = try ns.exec(["nft", "-f", "-"], input: trackingRuleset)
            try #require(r.status == 0, "nft: \(r.stderr)")
        }
        let onA = burst(200, base: 0xC612_0002)
        let onB = burst(150, base: 0xC612_0003)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        try pair.b.table { _ = try $0.write(onB, operation: .create) }
        try pair.a.table { _ = try $0.write(Array(onA[0..<50]), operation: .delete) }
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) },
            { try kernel(pair.a, Array(onA[50...])).withoutReplies })
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, onB) })
        let ours = try da.ctsyncd(["-s"]).stdout
        let theirs = try conntrackd.client(["-s"]).stdout
        // The counts include the sync link's own flows (the ruleset tracks them too).
        #expect(ours.hasPrefix("internal bypass:\nconnections new:\t\t") && ours.contains("connections destroyed:\t\t          50\n"), "\(ours)")
        #expect(theirs.hasPrefix("internal bypass:\nconnections new:\t\t"), "\(theirs)")
    }

    /// FTFW over UDP, multicast and TCP, and NOTRACK over UDP (best effort: no loss on a veth).
    @Test(arguments: [(false, "FTFW", "UDP"), (true, "FTFW", "UDP"), (false, "NOTRACK", "UDP"), (false, "FTFW", "TCP")])
    func ctsyncdAndConntrackdReplicateBothWays(multicast: Bool, mode: String, transport: String) throws {
        let pair = try SyncPair(multicast ? "iom" : transport == "TCP" ? "iot" : mode == "FTFW" ? "iou" : "ion")
        defer { pair.remove() }
        let (da, dbConfigOnly) = try pair.daemons(multicast: multicast, mode: mode, transport: transport)
        defer { da.stop() }
        try da.start()
        #expect(pair.waitForCarrier())
        let conntrackd = try ConntrackdProcess(pair.b, config: dbConfigOnly)
        defer { conntrackd.stop() }
        #expect(conntrackd.answers(within: 10))

        // ctsyncd → conntrackd.
        let (onA, onB) = try variedPair(pair)
        try pair.a.table { _ = try $0.write(onA, operation: .create) }
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) }, { try kernel(pair.a, onA).withoutReplies })
        // conntrackd → ctsyncd.
        try pair.b.table { _ = try $0.write(onB, operation: .create) }
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, onB) })
        // Destroys propagate both ways.
        try pair.a.table { _ = try $0.write(Array(onA[0..<100]), operation: .delete) }
        try pair.b.table { _ = try $0.write(Array(onB[0..<50]), operation: .delete) }
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) },
            { try kernel(pair.a, Array(onA[100...])).withoutReplies })
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, Array(onB[50...])) })

        // -n (ctsyncd asks conntrackd for its table) after flushing our external cache.
        #expect(try da.quietly(["-f", "external"]))
        #expect(try external(da).among(onB).isEmpty, "-n would prove nothing")
        #expect(try da.quietly(["-n"]))
        expectAgreement(within: 10, { try external(da).among(onB) }, { try kernel(pair.b, Array(onB[50...])) })
        // -B the other way: conntrackd flushes its external cache, ctsyncd bulk-sends.
        #expect(try pair.b.exec(["conntrackd", "-C", dbConfigOnly.configPath, "-f", "external"]).status == 0)
        #expect(try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA).isEmpty, "-B would prove nothing")
        #expect(try da.quietly(["-B"]))
        expectAgreement(
            within: 10, { try conntrackdExternal(pair.b, config: dbConfigOnly.configPath).among(onA) },
            { try kernel(pair.a, Array(onA[100...])).withoutReplies })
        // Neither side saw a malformed message or a gap (a lossless veth).
        let network = try da.ctsyncd(["-s", "network"]).stdout
        #expect(networkErrors(network) == 0, "\(network)")
        let theirs = try conntrackd.client(["-s", "network"]).stdout
        #expect(theirs.contains("Malformed messages:") && networkErrors(theirs) == 0, "conntrackd: \(theirs)")
        // -s, -s network and -s link in conntrackd's layout for this link: the channel's
        // heading and fields as conntrackd prints them on the other end (figures masked).
        for section in [[], ["network"], ["link"]] {
            let ours = statsLayout(try da.ctsyncd(["-s"] + section).stdout, device: "\(pair.linkName)a")
            let theirs = statsLayout(try conntrackd.client(["-s"] + section).stdout, device: "\(pair.linkName)b")
            #expect(ours.contains("DEVICE") && ours == theirs, "-s \(section): conntrackd:\n\(theirs)\nctsyncd:\n\(ours)")
        }
    }
}
