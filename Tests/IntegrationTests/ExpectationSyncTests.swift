import Foundation
import TestSupport
import Testing

/// `Options { ExpectationSync }` end to end with the kernel's FTP helper (nftables `ct helper`):
/// an expectation on a's FTP control connection reaches b's external expectation cache, b's
/// commit puts it (after its master) into b's kernel where conntrack lists it as a's does, and
/// its end follows. Between two ctsyncd, and both ways with conntrackd 1.4.7.
@Suite(.serialized, requiresNamespaces)
struct ExpectationSyncTests {
    /// The FTP helper on port 21 and a ct rule (a namespace tracks nothing without one).
    static let ftpRuleset = """
        table inet ctt_ftp {
            ct helper ftp-standard { type "ftp" protocol tcp; }
            chain pre { type filter hook prerouting priority 0; tcp dport 21 ct helper set "ftp-standard"; ct state established accept; }
        }
        """

    static func words(_ line: String) -> [String] { line.split(separator: " ").map(String.init) }

    /// An FTP control connection with the ftp helper, and the data connection it expects.
    static func master(_ n: Int) -> [String] {
        words(
            "kernel insert -p tcp -s 198.18.9.\(n) -d 198.18.9.100 --sport 3617\(n) --dport 21 --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 300 --helper ftp"
        )
    }

    static func expectation(_ n: Int) -> [String] {
        words(
            "-I expect -s 198.18.9.\(n) -d 198.18.9.100 -p tcp --sport 3617\(n) --dport 21 --tuple-src 198.18.9.\(n) --tuple-dst 198.18.9.100 --mask-src 255.255.255.255 --mask-dst 255.255.255.255 --tuple-port-src 0 --tuple-port-dst 400\(n) --mask-port-src 0 --mask-port-dst 65535 -t 200"
        )
    }

    /// `conntrack -L expect` without the seconds left.
    static func kernelExpectations(_ ns: TestNamespace) throws -> [String] {
        try ns.exec(["conntrack", "-L", "expect"]).lines.map { $0.replacingOccurrences(of: #"^\d+ "#, with: "", options: .regularExpression) }
            .sorted()
    }

    /// A daemon's `-i expect`/`-e expect` lines without "[active since]".
    static func cached(_ lines: [String]) -> [String] {
        lines.map { $0.replacingOccurrences(of: #" \[active since \d+s\]$"#, with: "", options: .regularExpression) }.sorted()
    }

    func prepare(_ pair: SyncPair) throws {
        for ns in [pair.a, pair.b] {
            let r = try ns.exec(["nft", "-f", "-"], input: Self.ftpRuleset)
            try #require(r.status == 0, "nft: \(r.stderr)")
        }
    }

    @Test func expectationsReplicateAndCommit() throws {
        let pair = try SyncPair("exp")
        defer { pair.remove() }
        try prepare(pair)
        let options = "Options { ExpectationSync { ftp } }"
        let (da, db) = try pair.daemons(syncExtra: (options, options))
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        // Made before any expectation: its master must be in a's internal cache first.
        #expect(try pair.a.ctsync(Self.master(2)).status == 0)
        #expect(eventually(within: 10) { (try? da.internalCache().contains { $0.original.destinationPort == 21 }) == true })
        let made = try pair.a.ctsync(Self.expectation(2))
        try #require(made.status == 0, "\(made.stderr)")
        let onA = try Self.kernelExpectations(pair.a)
        try #require(onA.count == 1)
        // The lines the caches print are conntrack's, without the timeout.
        let expected = onA[0].replacingOccurrences(of: #"^\d+ "#, with: "", options: .regularExpression)
        #expect(
            eventually(within: 10) { Self.cached((try? db.ctsyncd(["-e", "expect"]).lines) ?? []) == [expected] },
            "b: \((try? db.ctsyncd(["-e", "expect"]))?.stdout ?? "") a: \((try? da.ctsyncd(["-i", "expect"]))?.stdout ?? "") want \(expected)")
        #expect(Self.cached(try da.ctsyncd(["-i", "expect"]).lines) == [expected])
        let xml = try db.ctsyncd(["-e", "expect", "-x"]).stdout
        #expect(xml.hasPrefix("<flow>") && xml.contains("<dport>4002</dport>"), "\(xml)")
        let stats = try da.ctsyncd(["-s", "expect"]).stdout
        #expect(stats.hasPrefix("cache internal:\ncurrent active connections:\t           1\n"), "\(stats)")
        // b takes over: flows first, then the expectation; b's kernel lists it as a's does.
        let commit = try db.ctsyncd(["-c"])
        #expect(commit.status == 0 && commit.stdout.contains("1 expectations: 1 created, 0 failed"), "\(commit.stdout) \(commit.stderr)")
        #expect(try Self.kernelExpectations(pair.b) == onA, "b: \((try? Self.kernelExpectations(pair.b)) ?? []) a: \(onA)")
        // Committed again (-c expect): the one there is replaced, not an error.
        let again = try db.ctsyncd(["-c", "expect"])
        #expect(again.status == 0 && again.stdout.contains("1 created"), "\(again.stdout) \(again.stderr)")
        // It ends on a: it leaves b's external cache.
        #expect(try pair.a.ctsync(Self.words("-D expect -s 198.18.9.2 -d 198.18.9.100 -p tcp --sport 0 --dport 4002")).status == 0)
        #expect(eventually(within: 10) { (try? db.ctsyncd(["-e", "expect"]).stdout) == "" })
        // -F expect flushes the kernel's expectations; -f expect forgets the caches'.
        #expect(try db.ctsyncd(["-F", "expect"]).status == 0)
        #expect(try Self.kernelExpectations(pair.b).isEmpty)
        #expect(try pair.a.ctsync(Self.expectation(2)).status == 0)
        #expect(eventually(within: 10) { (try? db.ctsyncd(["-e", "expect"]).lines.count) == 1 })
        #expect(try db.ctsyncd(["-f", "expect"]).status == 0)
        #expect(try db.ctsyncd(["-e", "expect"]).stdout == "")
    }

    /// ctsyncd and conntrackd replicate expectations both ways, and each commits the other's.
    @Test(.enabled(if: Host.runs(if: Host.has("conntrackd")), "needs conntrackd (Debian package conntrackd)"))
    func expectationsInteroperateWithConntrackd() throws {
        let pair = try SyncPair("exc")
        defer { pair.remove() }
        try prepare(pair)
        let options = "Options { ExpectationSync on }"
        let (da, dbConfigOnly) = try pair.daemons(syncExtra: (options, options))
        defer { da.stop() }
        try da.start()
        let conntrackd = try ConntrackdProcess(pair.b, config: dbConfigOnly)
        defer { conntrackd.stop() }
        #expect(conntrackd.answers(within: 10))
        // ctsyncd → conntrackd.
        #expect(try pair.a.ctsync(Self.master(3)).status == 0)
        #expect(eventually(within: 10) { (try? da.internalCache().contains { $0.original.destinationPort == 21 }) == true })
        #expect(try pair.a.ctsync(Self.expectation(3)).status == 0)
        let fromA = try Self.kernelExpectations(pair.a)
        try #require(fromA.count == 1)
        #expect(
            eventually(within: 10) { Self.cached((try? conntrackd.client(["-e", "expect"]).lines) ?? []) == fromA },
            "conntrackd: \((try? conntrackd.client(["-e", "expect"]))?.stdout ?? "") want \(fromA)")
        // conntrackd → ctsyncd.
        #expect(try pair.b.ctsync(Self.master(4)).status == 0)
        #expect(try pair.b.ctsync(Self.expectation(4)).status == 0)
        let fromB = try Self.kernelExpectations(pair.b).filter { $0.contains("dport=4004") }
        try #require(fromB.count == 1)
        #expect(
            eventually(within: 10) { Self.cached((try? da.ctsyncd(["-e", "expect"]).lines) ?? []) == fromB },
            "ctsyncd: \((try? da.ctsyncd(["-e", "expect"]))?.stdout ?? "") want \(fromB)")
        // Each commits the other's: the kernels then hold both expectations alike.
        #expect(try da.ctsyncd(["-c"]).status == 0)
        #expect(try conntrackd.client(["-c"]).status == 0)
        #expect(
            eventually(within: 10) { (try? Self.kernelExpectations(pair.a)) == (fromA + fromB).sorted() },
            "\((try? Self.kernelExpectations(pair.a)) ?? [])")
        #expect(
            eventually(within: 10) { (try? Self.kernelExpectations(pair.b)) == (fromA + fromB).sorted() },
            "\((try? Self.kernelExpectations(pair.b)) ?? [])")
    }
}
