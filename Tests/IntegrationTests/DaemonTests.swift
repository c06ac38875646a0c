import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

func testFlow(_ port: Int, proto: L4Protocol = .tcp, src: String = "198.18.0.1", dst: String = "198.18.0.2", mark: UInt32 = 0) -> Flow {
    var f = Flow(
        proto: proto,
        original: Tuple(source: IPAddress(src)!, destination: IPAddress(dst)!, sourcePort: UInt16(port & 0xffff), destinationPort: 80),
        status: [.seenReply, .assured], timeout: 600, mark: mark)
    if proto == .tcp { f.tcp = TCPInfo(state: .established) }
    return f
}

/// Flows for a burst: distinct tuples from 198.18.0.0/15.
func burst(_ count: Int, base: UInt32 = 0xC612_0000) -> [Flow] {
    (0..<count).map { i in
        Flow(
            proto: .udp,
            original: Tuple(
                source: IPAddress(ipv4: base | UInt32(i >> 14)), destination: IPAddress(ipv4: 0xC613_0035),
                sourcePort: UInt16(1024 + (i & 0x3fff)), destinationPort: 53),
            timeout: 600)
    }
}

@Suite(.serialized, requiresNamespaces) struct DaemonTests {
    /// logrotate renames the log file and sends SIGHUP: the daemon opens the file again at its
    /// path and goes on writing there, not into the renamed one.
    @Test func sighupReopensTheLogFile() throws {
        let ns = try TestNamespace("hup")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns)
        defer { daemon.stop() }
        try daemon.start()
        let path = daemon.directory + "/ctsyncd.log"
        func text(_ p: String) -> String { (try? String(contentsOfFile: p, encoding: .utf8)) ?? "" }
        #expect(eventually(within: 5) { !text(path).isEmpty })
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(eventually(within: 5) { text(path).contains("log files reopened") }, "\(text(path + ".1"))")
        #expect(!text(path + ".1").contains("log files reopened"))
        #expect(daemon.process.isRunning)
        #expect(try daemon.ctsyncd(["-s"]).status == 0)
    }

    @Test func cacheFollowsTheKernel() throws {
        let ns = try TestNamespace("dmn")
        defer { ns.remove() }
        try ns.table { table in
            _ = try table.write([testFlow(1), testFlow(2), testFlow(3, proto: .udp)], operation: .create)
        }
        let daemon = try TestDaemon(ns)
        defer { daemon.stop() }
        try daemon.start()

        // Flows that existed before the start are there, in conntrackd's -i layout.
        let dump = try daemon.ctsyncd(["-i"])
        #expect(dump.status == 0)
        #expect(dump.lines.count == 3, "\(dump.stdout)")
        #expect(dump.lines.allSatisfy { $0.contains("[active since ") && $0.hasPrefix("tcp      6 ESTABLISHED") || $0.hasPrefix("udp      17 src=") })
        let xml = try daemon.ctsyncd(["-i", "-x"])
        #expect(xml.lines.count == 3 && xml.lines.allSatisfy { $0.hasPrefix("<flow>") && $0.hasSuffix("</flow>") })

        // New, updated and destroyed flows are reflected within 1 s.
        try ns.table { try $0.create(testFlow(4)) }
        #expect(try eventually(within: 1) { try daemon.internalCache().contains { $0.key == testFlow(4).key } })
        try ns.table { try $0.update(testFlow(4, mark: 42)) }
        #expect(try eventually(within: 1) { try daemon.internalCache().first { $0.key == testFlow(4).key }?.mark == 42 })
        try ns.table { try $0.delete(testFlow(1)) }
        // testFlow(1) predates the daemon: without an event extension its end is found by re-reading the table.
        #expect(try eventually(within: 5) { try !daemon.internalCache().contains { $0.key == testFlow(1).key } })

        // Statistics in conntrackd's layout.
        let stats = try daemon.ctsyncd(["-s"])
        #expect(stats.stdout.hasPrefix("cache internal:\ncurrent active connections:\t           3\n"), "\(stats.stdout)")
        #expect(stats.stdout.contains("cache external:"))
        for section in ["network", "cache", "runtime", "queue", "rsqueue", "link", "process", "expect"] {
            #expect(try daemon.ctsyncd(["-s", section]).status == 0, "-s \(section)")
        }
        #expect(try daemon.ctsyncd(["-s", "runtime"]).stdout.contains("events received:"))
        #expect(try daemon.ctsyncd(["-e"]).stdout.isEmpty)

        // -R, -f internal then -R again, -F (the internal cache follows the kernel's destroy events).
        #expect(try daemon.quietly(["-f", "internal"]))
        #expect(try daemon.internalCache().isEmpty)
        #expect(try daemon.quietly(["-R"]))
        #expect(try daemon.internalCache().count == 3)
        #expect(try daemon.ctsyncd(["-F"]).status == 0)
        #expect(try ns.table { try $0.count() } == 0)
        #expect(try eventually(within: 1) { try daemon.internalCache().isEmpty })

        // Commit needs replication (a Sync section): said, exit 1.
        let commit = try daemon.ctsyncd(["-c"])
        #expect(commit.status == 1 && commit.stderr.contains("needs a Sync section"), "\(commit.stderr)")

        // -k stops it; socket and lock are removed.
        #expect(try daemon.ctsyncd(["-k"]).status == 0)
        #expect(eventually(within: 5) { !daemon.process.isRunning })
        #expect(daemon.process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
        #expect(!FileManager.default.fileExists(atPath: daemon.lockPath))
        let gone = try daemon.ctsyncd(["-s"])
        #expect(gone.status == 1 && gone.stderr.contains("is ctsyncd running?"))
    }

    /// 100k flows in one burst, then all flushed: the cache must equal the kernel, both ways,
    /// within 5 s each time, even though the small buffer makes the kernel drop events.
    /// The kernel (nf_conntrack_events=2) gives no event extension to flows created while
    /// nobody listens: they never report their end. Flows from before the daemon's start leave
    /// the cache anyway (the table is re-read while such flows exist), and the daemon sets
    /// nf_conntrack_events=1 so flows created during a restart do report.
    @Test func flowsFromBeforeTheStartLeaveNoGhosts() throws {
        let ns = try TestNamespace("silent")
        defer { ns.remove() }
        _ = try ns.exec(["sysctl", "-qw", "net.netfilter.nf_conntrack_events=2"])
        try ns.table { _ = try $0.write(burst(1000), operation: .create) }
        var daemon = try TestDaemon(ns)
        try daemon.start()
        func keys(_ flows: [Flow]) -> Set<FlowKey> { Set(flows.map(\.key)) }
        #expect(try keys(daemon.internalCache()) == keys(burst(1000)))
        #expect(try ns.exec(["sysctl", "-n", "net.netfilter.nf_conntrack_events"]).stdout.hasPrefix("1"))
        try ns.table { _ = try $0.write(Array(burst(1000).prefix(400)), operation: .delete) }
        #expect(try eventually(within: 5) { try keys(daemon.internalCache()) == keys(Array(burst(1000).dropFirst(400))) })
        daemon.stop()

        // Created while no daemon runs, deleted while one does: events now.
        try ns.table { _ = try $0.write(burst(300, base: 0xC612_8000), operation: .create) }
        daemon = try TestDaemon(ns)
        defer { daemon.stop() }
        try daemon.start()
        #expect(try keys(daemon.internalCache()) == keys(Array(burst(1000).dropFirst(400)) + burst(300, base: 0xC612_8000)))
        #expect(try keys(daemon.internalCache()) == keys(ns.table { try $0.dump() }))
        try ns.table { try $0.flush() }
        #expect(try eventually(within: 5) { try daemon.internalCache().isEmpty })
        #expect(try daemon.stats()["internal"].flatMap { ($0 as? [String: Any])?["active"] as? Int } == 0)
    }

    /// Stats mode (Debian's default conntrackd.conf): every flow that ends is logged, in the
    /// conntrack layout with a `[DESTROY]` prefix and the layer 3.
    @Test func statsModeLogsFlowsThatEnd() throws {
        let ns = try TestNamespace("stats")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns) { dir in TestDaemon.config(directory: dir, extra: "Stats {\n LogFile \(dir)/stats.log\n}") }
        defer { daemon.stop() }
        try daemon.start()
        let flows = burst(3)
        try ns.table { _ = try $0.write(flows, operation: .create) }
        #expect(try eventually(within: 5) { try daemon.internalCache().count == 3 })
        try ns.table { _ = try $0.write(Array(flows[0..<2]), operation: .delete) }
        let path = daemon.directory + "/stats.log"
        #expect(eventually(within: 5) { ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count == 2 })
        let lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(lines.allSatisfy { $0.hasPrefix("[") && $0.contains("]\t[DESTROY] ipv4     2 udp      17 src=198.18.0.0 ") }, "\(lines)")

        // -s in conntrackd's stats-mode layout: its one cache is "stats", then the traffic of
        // the flows that ended; no link, no message tracking.
        let general = try daemon.ctsyncd(["-s"]).stdout
        #expect(
            general.hasPrefix("cache stats:\ncurrent active connections:\t           1\nconnections created:\t\t           3\t"), "\(general)")
        #expect(general.contains("traffic processed:") && !general.contains("external") && !general.contains("message tracking"))
        #expect(try daemon.ctsyncd(["-s", "cache"]).stdout.hasPrefix("cache:stats\tactive objects:"))
        for section in ["network", "link", "queue", "rsqueue", "expect"] {
            let r = try daemon.ctsyncd(["-s", section])
            #expect(r.status == 0 && r.stdout.isEmpty, "-s \(section): \(r.stdout)")
        }
        // The same flows before conntrackd in stats mode, in a namespace of its own: the same text.
        if Host.runs(if: Host.has("conntrackd")) {
            let other = try TestNamespace("statsd")
            defer { other.remove() }
            let config = try TestDaemon(other) { dir in TestDaemon.config(directory: dir, extra: "Stats {\n LogFile \(dir)/stats.log\n}") }
            let conntrackd = try ConntrackdProcess(other, config: config)
            defer { conntrackd.stop() }
            #expect(conntrackd.answers(within: 10))
            try other.table { _ = try $0.write(flows, operation: .create) }
            #expect(eventually(within: 5) { ((try? conntrackd.client(["-i"]).lines.count) ?? 0) == 3 })
            try other.table { _ = try $0.write(Array(flows[0..<2]), operation: .delete) }
            #expect(eventually(within: 5) { ((try? conntrackd.client(["-i"]).lines.count) ?? 0) == 1 })
            let theirs = try conntrackd.client(["-s"]).stdout
            #expect(theirs == general, "conntrackd:\n\(theirs)\nctsyncd:\n\(general)")
            // `-s ct` is `-s`; `-s cache` the stats cache in detail: the same text on both.
            #expect(try daemon.ctsyncd(["-s", "ct"]).stdout == general)
            for section in ["ct", "cache"] {
                let ours = try daemon.ctsyncd(["-s", section]).stdout
                let theirs = try conntrackd.client(["-s", section]).stdout
                #expect(theirs == ours, "-s \(section): conntrackd:\n\(theirs)\nctsyncd:\n\(ours)")
            }
        }
    }

    /// A Helper block (user-space helpers, out of scope) does not stop the daemon: it starts,
    /// and its log says the block is not acted on, and why.
    @Test func aHelperBlockIsLoggedAsOutOfScope() throws {
        let ns = try TestNamespace("hlp")
        defer { ns.remove() }
        let helper = "Helper {\n    Type ftp inet tcp {\n        QueueNum 5\n        Policy ftp {\n            ExpectMax 1\n        }\n    }\n}\n"
        let daemon = try TestDaemon(ns) { TestDaemon.config(directory: $0, extra: helper) }
        defer { daemon.stop() }
        try daemon.start()
        let log = { (try? String(contentsOfFile: daemon.logPath, encoding: .utf8)) ?? "" }
        #expect(
            eventually(within: 5) { log().contains("Helper: user-space helpers are out of scope for ctsyncd (protocol parsers on NFQUEUE") },
            "\(log())")
        #expect(log().contains("use the kernel's helpers (nft ct helper), whose expectations ExpectationSync replicates"), "\(log())")
        #expect(try daemon.ctsyncd(["-s"]).status == 0)
    }

    /// A bad configuration stops ctsyncd (and `ctsyncd --check`) with a non-zero status and
    /// one line naming the file and the line, as conntrackd 1.4.8 and later exit non-zero. Run
    /// in a namespace: were a file accepted, the daemon would start there, not on the host.
    @Test func aBadConfigurationExitsNonZeroNamingFileAndLine() throws {
        let ns = try TestNamespace("badconf")
        defer { ns.remove() }
        // Never started: its directory holds the files, its configuration is the good start of each.
        let holder = try TestDaemon(ns)
        defer { holder.stop() }
        let directory = holder.directory
        let general = TestDaemon.config(directory: directory)
        let generalLines = general.split(separator: "\n", omittingEmptySubsequences: false).count
        let link = "    UDP {\n IPv4_address 198.18.0.1\n IPv4_Destination_Address 198.18.0.2\n Port 3780\n Interface lo\n }\n"
        // Each file, the line its error is on and a word of the message.
        let cases: [(name: String, text: String, line: Int, says: String)] = [
            ("syntax", general + "\nSync {\n    Mode FTFW {\n", generalLines + 3, "missing '}'"),
            ("unknown", general + "\nStats {\n    Frobnicate on\n}\n", generalLines + 2, "unknown option 'Frobnicate'"),
            (
                "fivelinks", general + "\nSync {\n    Mode FTFW {\n    }\n" + String(repeating: link, count: 5) + "}\n",
                generalLines + 4 + 4 * 6, "too many dedicated links"
            ),
        ]
        for c in cases {
            let path = "\(directory)/\(c.name).conf"
            try c.text.write(toFile: path, atomically: true, encoding: .utf8)
            for arguments in [["-C", path], ["--check", "-C", path]] {
                let r = try ns.exec([Host.ctsyncd] + arguments, timeout: 10)
                #expect(r.status == 2, "\(arguments): \(r.status) \(r.output)")
                #expect(r.stdout.isEmpty && r.stderr.split(separator: "\n").count == 1, "\(arguments): \(r.output)")
                #expect(r.stderr.hasPrefix("ctsyncd: \(path):\(c.line):") && r.stderr.contains(c.says), "\(arguments): \(r.stderr)")
            }
            // conntrackd refuses the same files (1.4.7 already exits 1 on these).
            if Host.has("conntrackd") {
                let theirs = try ns.exec(["conntrackd", "-C", path], timeout: 10)
                #expect(theirs.status != 0, "conntrackd on \(c.name): \(theirs.output)")
            }
        }
    }

    @Test func burstAndFlushLeaveNoGhosts() throws {
        let ns = try TestNamespace("ghost")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns) { dir in
            TestDaemon.config(directory: dir, general: "NetlinkOverrunResync on")
                .replacingOccurrences(of: "NetlinkBufferSize 2097152", with: "NetlinkBufferSize 262144")
                .replacingOccurrences(of: "NetlinkBufferSizeMaxGrowth 8388608", with: "NetlinkBufferSizeMaxGrowth 524288")
        }
        defer { daemon.stop() }
        try daemon.start()
        let flows = burst(100_000)
        let created = try ns.table { try $0.write(flows, operation: .create).created }
        #expect(created == 100_000)
        func kernelKeys() throws -> Set<FlowKey> { Set(try ns.table { try $0.dump() }.map(\.key)) }
        func cacheKeys() throws -> Set<FlowKey> { Set(try daemon.internalCache().map(\.key)) }
        func cacheCount() throws -> Int { (try daemon.stats()["internal"] as? [String: Any])?["active"] as? Int ?? -1 }
        func kernelCount() throws -> Int { try ns.table { try $0.count() } }
        // Timed on the cheap counts; then the sets are compared exactly, both ways.
        let filled = try eventually(within: 5) { try cacheCount() == kernelCount() }
        var k = try kernelKeys()
        var c = try cacheKeys()
        #expect(filled && k.count == 100_000, "after the burst: cache \(c.count), kernel \(k.count)")
        #expect(
            k.subtracting(c).isEmpty && c.subtracting(k).isEmpty,
            "after the burst: \(k.subtracting(c).count) missing, \(c.subtracting(k).count) ghosts")

        #expect(try ns.ctsync(["kernel", "flush"]).status == 0)
        let emptied = try eventually(within: 5) { try cacheCount() == 0 && kernelCount() == 0 }
        k = try kernelKeys()
        c = try cacheKeys()
        #expect(emptied, "after the flush: cache \(c.count), kernel \(k.count)")
        #expect(k.isEmpty && c.isEmpty, "after the flush: \(k.subtracting(c).count) missing, \(c.subtracting(k).count) ghosts")
        let stats = try daemon.stats()
        let netlink = stats["netlink"] as? [String: Any]
        // The small buffer overflowed, and a resync repaired it.
        #expect((netlink?["overruns"] as? Int ?? 0) > 0)
        #expect((netlink?["resyncs"] as? Int ?? 0) > 0)
    }

    @Test func filterAndHashLimit() throws {
        let ns = try TestNamespace("flt")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns) { dir in
            TestDaemon.config(
                directory: dir, general: "",
                filter: """
                    Filter From Userspace {
                        Protocol Accept {
                            TCP
                            UDP
                        }
                        Address Ignore {
                            IPv4_address 198.18.99.0/24
                        }
                    }
                    """
            ).replacingOccurrences(of: "HashLimit 262144", with: "HashLimit 100")
        }
        defer { daemon.stop() }
        try daemon.start()
        var icmp = Flow(
            proto: .icmp, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!),
            icmp: ICMPInfo(type: 8, code: 0, id: 1), timeout: 60)
        icmp.status = []
        try ns.table { table in
            _ = try table.write([icmp, testFlow(1, src: "198.18.99.5"), testFlow(2)], operation: .create)
        }
        #expect(try eventually(within: 1) { try daemon.internalCache().map(\.key) == [testFlow(2).key] })
        // HashLimit 100: the 101st flow and beyond are counted, not cached, and nothing breaks.
        let created = try ns.table { try $0.write(burst(150), operation: .create).created }
        #expect(created == 150)
        #expect(try eventually(within: 2) { try daemon.internalCache().count == 100 })
        let internalStats = try daemon.stats()["internal"] as? [String: Any]
        #expect((internalStats?["no_space"] as? Int ?? 0) >= 51)
        #expect(try daemon.ctsyncd(["-s", "cache"]).stdout.contains("no space left in cache:"))
    }

    @Test func twoDaemonsInTwoNamespacesDoNotInterfere() throws {
        let a = try TestNamespace("two_a")
        defer { a.remove() }
        let b = try TestNamespace("two_b")
        defer { b.remove() }
        let da = try TestDaemon(a)
        defer { da.stop() }
        let db = try TestDaemon(b)
        defer { db.stop() }
        try da.start()
        try db.start()
        try a.table { _ = try $0.write(burst(10), operation: .create) }
        try b.table { _ = try $0.write(burst(20, base: 0xC612_8000), operation: .create) }
        #expect(try eventually(within: 2) { try da.internalCache().count == 10 && db.internalCache().count == 20 })
        #expect(try Set(da.internalCache().map(\.key)) == Set(burst(10).map(\.key)))
    }

    @Test func lockFileRefusesASecondDaemonAndTakesOverAStaleOne() throws {
        let ns = try TestNamespace("lck")
        defer { ns.remove() }
        let first = try TestDaemon(ns)
        defer { first.stop() }
        // A stale lock: a file naming a dead process, held by nobody.
        try "999999\n".write(toFile: first.lockPath, atomically: true, encoding: .utf8)
        try first.start()
        let second = try ns.exec([Host.ctsyncd, "-C", first.configPath], timeout: 20)
        #expect(second.status == 1)
        #expect(second.stderr.contains("is held by another ctsyncd (pid \(first.process.processIdentifier))"), "\(second.stderr)")
        #expect(first.process.isRunning)
        // SIGTERM: orderly shutdown, socket and lock removed.
        kill(first.process.processIdentifier, SIGTERM)
        #expect(eventually(within: 5) { !first.process.isRunning })
        #expect(!FileManager.default.fileExists(atPath: first.socketPath))
        #expect(!FileManager.default.fileExists(atPath: first.lockPath))
    }

    @Test func controlSocketSurvivesBadRequests() throws {
        let ns = try TestNamespace("ctl")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns)
        defer { daemon.stop() }
        try daemon.start()
        let attrs = try FileManager.default.attributesOfItem(atPath: daemon.socketPath)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let python = """
            import socket, struct, sys
            def ask(data):
                s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
                try:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                except OSError as e:
                    pass  # the daemon may answer before it has read everything
                out = b""
                try:
                    while True:
                        d = s.recv(65536)
                        if not d: break
                        out += d
                except OSError as e:
                    return "<" + str(e) + ">"
                return out.decode(errors="replace").splitlines()[0] if out else "<nothing>"
            print(ask(b'{"command": "frobnicate"}\\n'))
            print(ask(b'{not json\\n'))
            print(ask(struct.pack("=i", 999)))
            print(ask(b'\\x01\\x02'))
            print(ask(b'{' + b'x' * 70000))
            print(ask(b'{"command":"dump","cache":"internal","format":"yaml"}\\n'))
            print(ask(struct.pack("=i", 21)))
            """
        let r = try run(["python3", "-c", python, daemon.socketPath], timeout: 60)
        let lines = r.lines
        #expect(lines.count == 7, "\(r.stdout) \(r.stderr)")
        #expect(lines[0].contains("unknown command 'frobnicate'"))
        #expect(lines[1].contains("\"status\":\"error\""))
        #expect(lines[2] == "ctsyncd: unknown request code 999")
        #expect(lines[3].contains("expected a 4-byte request code"))
        #expect(lines[4].contains("request larger than 65536 bytes"))
        #expect(lines[5].contains("unknown dump format 'yaml'"))
        #expect(lines[6] == "cache internal:")
        // Still serving.
        #expect(try daemon.ctsyncd(["-s"]).status == 0)
        // conntrackd's own client speaks the same protocol.
        if Host.runs(if: Host.has("conntrackd")) {
            let theirs = try ns.exec(["conntrackd", "-C", daemon.configPath, "-s"])
            #expect(theirs.stdout.hasPrefix("cache internal:"), "\(theirs.stdout) \(theirs.stderr)")
        }
    }

    @Test func pollingModeFollowsTheKernelWithoutEvents() throws {
        let ns = try TestNamespace("poll")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns) { TestDaemon.config(directory: $0, general: "PollSecs 1") }
        defer { daemon.stop() }
        try daemon.start()
        try ns.table { _ = try $0.write(burst(50), operation: .create) }
        #expect(try eventually(within: 3) { try daemon.internalCache().count == 50 })
        try ns.table { try $0.flush() }
        #expect(try eventually(within: 3) { try daemon.internalCache().isEmpty })
        let netlink = try daemon.stats()["netlink"] as? [String: Any]
        #expect(netlink?["events_received"] as? Int == 0)
    }

    @Test func resetTimersSetsPurgeTimeout() throws {
        let ns = try TestNamespace("rst")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns)
        defer { daemon.stop() }
        try daemon.start()
        try ns.table { _ = try $0.write([testFlow(1), testFlow(2)], operation: .create) }
        #expect(try daemon.quietly(["-t"]))
        let timeouts = try ns.table { try $0.dump().compactMap(\.timeout) }
        #expect(timeouts.count == 2 && timeouts.allSatisfy { $0 <= 60 })
    }

    @Test func backgroundAndSystemdNotify() throws {
        let ns = try TestNamespace("bg")
        defer { ns.remove() }
        let daemon = try TestDaemon(ns) { TestDaemon.config(directory: $0, general: "Systemd on") }
        defer {
            _ = try? daemon.ctsyncd(["-k"])
            daemon.stop()
        }
        // A datagram socket standing in for systemd's.
        let notifyPath = daemon.directory + "/notify"
        let receiver = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(receiver) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in notifyPath.utf8.enumerated() { raw[i] = b }
        }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(receiver, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(receiver, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // -d returns only once the daemon serves requests.
        let started = try ns.exec(["env", "NOTIFY_SOCKET=\(notifyPath)", Host.ctsyncd, "-C", daemon.configPath, "-d"], timeout: 30)
        #expect(started.status == 0, "\(started.stderr)")
        #expect(try daemon.ctsyncd(["-s"]).status == 0)
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
        #expect(n > 0 && String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).hasPrefix("READY=1"))
        // The background daemon keeps its name (pidof, pgrep -x, keepalived's track_process).
        let pid = try String(contentsOfFile: daemon.lockPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let comm = try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
        #expect(comm == "ctsyncd\n", "comm of pid \(pid): \(comm)")
        let commandLine = try String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8).split(separator: "\0")
        #expect(commandLine.first.map { $0.hasSuffix("/ctsyncd") } == true, "\(commandLine)")
        // A second -d on the same configuration fails, with the reason.
        let again = try ns.exec([Host.ctsyncd, "-C", daemon.configPath, "-d"], timeout: 30)
        #expect(again.status == 1 && again.stderr.contains("is held by another ctsyncd"), "\(again.stderr)")
    }
}
