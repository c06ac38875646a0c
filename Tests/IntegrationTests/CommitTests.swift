import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A ruleset that makes the namespace track and NAT (loads nf_nat, enables connlabels).
private let trackingRuleset = """
    table inet cttcommit {
        chain input {
            type filter hook input priority 0;
            ct state established accept
            meta mark 0x7fff ct label set 127
        }
    }
    table ip cttnat {
        chain post {
            type nat hook postrouting priority 100;
            meta mark 0x7fff masquerade
        }
    }
    table ip6 cttnat6 {
        chain post {
            type nat hook postrouting priority 100;
            meta mark 0x7fff masquerade
        }
    }
    """

/// What a committed flow must keep of the original: identity, NAT (reply tuple), state,
/// mark, zone, labels and the NAT status bits. Timeouts and counters are not compared.
private func essentials(_ flow: Flow) -> String {
    let nat = flow.status.intersection([.srcNAT, .dstNAT, .seenReply, .assured])
    return "\(flow.key) reply=\(flow.reply) tcp=\(flow.tcp?.state.rawValue ?? 0) mark=\(flow.mark) zone=\(flow.zone) "
        + "labels=\(flow.labels.bits) status=\(nat.rawValue)"
}

/// A varied set: plain TCP, SNAT, DNAT, SNAT with a port change, UDP, ICMP, zone, mark,
/// labels, IPv6 (also NATed).
private func variedFlows() -> [Flow] {
    var flows: [Flow] = []
    for i in 0..<200 {
        var f = testFlow(20_000 + i, mark: UInt32(i % 5))
        if i % 7 == 0 { f.zone = 7 }
        if i % 11 == 0 { f.labels = FlowLabels(bits: [1, 64, 127]) }
        flows.append(f)
    }
    var snat = testFlow(30_001, src: "198.18.10.1", dst: "198.19.0.80")
    snat.reply = Tuple(source: IPAddress("198.19.0.80")!, destination: IPAddress("198.18.99.1")!, sourcePort: 80, destinationPort: 30_001)
    var snatPort = testFlow(30_002, src: "198.18.10.1", dst: "198.19.0.80")
    snatPort.reply = Tuple(source: IPAddress("198.19.0.80")!, destination: IPAddress("198.18.99.1")!, sourcePort: 80, destinationPort: 61_000)
    var dnat = testFlow(30_003, src: "198.19.5.5", dst: "198.18.99.1")
    dnat.reply = Tuple(source: IPAddress("198.18.10.20")!, destination: IPAddress("198.19.5.5")!, sourcePort: 8080, destinationPort: 30_003)
    var udp = testFlow(30_004, proto: .udp, src: "198.18.10.2", dst: "198.19.0.53")
    udp.reply.destination = IPAddress("198.18.99.2")!
    var icmp = Flow(
        proto: .icmp, original: Tuple(source: IPAddress("198.18.10.3")!, destination: IPAddress("198.19.0.1")!),
        icmp: ICMPInfo(type: 8, code: 0, id: 4242), status: [.seenReply], timeout: 30)
    icmp.mark = 9
    var v6 = testFlow(30_005, src: "2001:db8::1", dst: "2001:db8:1::80")
    v6.reply.destination = IPAddress("2001:db8:99::1")!
    flows += [snat, snatPort, dnat, udp, icmp, v6, testFlow(30_006, src: "2001:db8::2", dst: "2001:db8:1::80")]
    return flows
}

@Suite(.serialized, requiresNamespaces) struct CommitTests {
    /// Flows made on a (with NAT, marks, zones, labels) reach b's external cache; b's commit
    /// puts them into b's kernel exactly as they are on a; a second commit updates them.
    @Test func commitInjectsTheExternalCacheWithNAT() throws {
        let pair = try SyncPair("cmt")
        defer { pair.remove() }
        for ns in [pair.a, pair.b] {
            let r = try ns.exec(["nft", "-f", "-"], input: trackingRuleset)
            try #require(r.status == 0, "nft: \(r.stderr)")
        }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = variedFlows()
        let made = try pair.a.table { try $0.write(flows, operation: .create) }
        try #require(made.failures.isEmpty, "creating on a: \(made.failures)")
        // Only the test's flows: with a ct rule in place, the sync link's own traffic is tracked too.
        let keys = Set(flows.map(\.key))
        let onA = try pair.a.table { try $0.dump() }.filter { keys.contains($0.key) }
        try #require(onA.count == flows.count)
        // The kernel set up the NAT itself: the bits are there, so the NAT travels.
        #expect(onA.filter { $0.status.contains(.srcNAT) }.count == 4)
        #expect(onA.filter { $0.status.contains(.dstNAT) }.count == 1)
        #expect(try eventually(within: 10) { try db.externalCount() >= flows.count })
        let external = try db.externalCount()

        let commit = try pair.b.ctsync(["commit", "-C", db.configPath])
        #expect(commit.status == 0, "\(commit.stdout) \(commit.stderr)")
        // The sync link's own flow exists on both sides already: it is updated, the rest created.
        #expect(commit.stdout.contains("committed \(external) flows: "), "\(commit.stdout)")
        #expect(commit.stdout.contains(" 0 failed"), "\(commit.stdout)")
        let onB = try pair.b.table { try $0.dump() }.filter { keys.contains($0.key) }
        #expect(Set(onB.map(essentials)) == Set(onA.map(essentials)))
        for flow in onB {
            // What was left of the peer's timeout, not more.
            let original = onA.first { $0.key == flow.key }
            #expect((flow.timeout ?? 0) > 0 && (flow.timeout ?? 0) <= (original?.timeout ?? 0) + 1)
            if let tcp = flow.tcp { #expect(tcp.originalFlags & TCPInfo.beLiberal != 0) }
        }

        // b's own cache follows its kernel (events paused for the commit, table re-read after).
        #expect(try eventually(within: 5) { keys.isSubset(of: Set(try db.internalCache().map(\.key))) })

        // Again: everything exists now, so everything is updated; conntrackd's client form too.
        let again = try db.ctsyncd(["-c"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("0 created, \(external) updated, 0 failed"), "\(again.stdout)")
        #expect(try pair.b.table { try $0.dump() }.filter { keys.contains($0.key) }.count == flows.count)
    }

    /// CommitTimeout is given to committed flows; a commit while one runs is refused; the
    /// daemon keeps answering during a commit; with the daemon down, commit exits 1.
    @Test func commitTimeoutAndConcurrentCommitRefused() throws {
        let pair = try SyncPair("cmc")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(extra: "CommitTimeout 1234")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let count = 40_000
        let created = try pair.a.table { try $0.write(burst(count), operation: .create).created }
        try #require(created == count)
        #expect(try eventually(within: 20) { try db.externalCount() == count })

        // Two commits at once: one runs, the other is told so.
        func launch() throws -> (Process, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["ip", "netns", "exec", pair.b.name, Host.ctsync, "commit", "-C", db.configPath]
            let out = db.directory + "/commit-\(UUID().uuidString.prefix(6))"
            _ = FileManager.default.createFile(atPath: out, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
            p.standardOutput = handle
            p.standardError = handle
            try p.run()
            return (p, out)
        }
        let first = try launch()
        // Wait (bounded) until the daemon says a commit runs, then ask for another.
        let sawRunning = try eventually(within: 5) {
            ((try db.stats()["commit"] as? [String: Any])?["running"] as? Bool) == true || !first.0.isRunning
        }
        #expect(sawRunning)
        let second = try pair.b.ctsync(["commit", "-C", db.configPath])
        let deadline = Date().addingTimeInterval(60)
        while first.0.isRunning && Date() < deadline { usleep(10_000) }
        let firstOutput = (try? String(contentsOfFile: first.1, encoding: .utf8)) ?? ""
        #expect(first.0.terminationStatus == 0, "\(firstOutput)")
        #expect(firstOutput.contains("\(count) created"), "\(firstOutput)")
        if first.0.terminationStatus == 0 && !firstOutput.isEmpty && second.status != 0 {
            #expect(second.stderr.contains("already in progress"), "\(second.stderr)")
            print("concurrent commit refused: \(second.stderr)")
        } else {
            // The first finished before the second arrived (a very fast machine): then the
            // second must have updated everything.
            #expect(second.stdout.contains("\(count) updated"), "\(second.stdout) \(second.stderr)")
        }
        let timeouts = try pair.b.table { try $0.dump().map { $0.timeout ?? 0 } }
        #expect(timeouts.count == count)
        #expect(timeouts.allSatisfy { $0 > 1200 && $0 <= 1234 })

        let socket = db.socketPath
        db.stop()
        let down = try pair.b.ctsync(["commit", "--socket", socket])
        #expect(down.status == 1)
        #expect(down.stderr.contains("running"), "\(down.stderr)")
    }
}
