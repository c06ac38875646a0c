import FlowModel
import Foundation
import Testing

/// The `Metrics` endpoint of a replicating pair: Prometheus' text format, the figures of
/// `ctsync stats -o json`, per-link state and the peer last heard; anything else gets a 404.
@Suite(.serialized, requiresNamespaces) struct MetricsTests {
    /// `GET path` on the endpoint from inside `namespace`: status and body.
    func scrape(_ namespace: TestNamespace, _ path: String = "/metrics") throws -> (status: Int, body: String) {
        let script = """
            import sys, urllib.request, urllib.error
            try:
                r = urllib.request.urlopen("http://127.0.0.1:9497" + sys.argv[1], timeout=5)
                print(r.status); print(r.headers["Content-Type"]); sys.stdout.write(r.read().decode())
            except urllib.error.HTTPError as e:
                print(e.code); print(e.headers["Content-Type"])
            """
        let r = try namespace.exec(["python3", "-c", script, path])
        let lines = r.stdout.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? 0, lines.count > 2 ? String(lines[2]) : "")
    }

    /// The value of one sample line (`name{labels} value`).
    func sample(_ body: String, _ series: String) -> Double? {
        for line in body.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func endpointServesThePairsFigures() throws {
        let pair = try SyncPair("met")
        defer { pair.remove() }
        #expect(try pair.b.exec(["ip", "link", "set", "lo", "up"]).status == 0)
        let da = try TestDaemon(pair.a) {
            TestDaemon.config(directory: $0, extra: pair.syncSection(local: "198.18.254.1", peer: "198.18.254.2", interface: "\(pair.linkName)a"))
        }
        let db = try TestDaemon(pair.b) {
            TestDaemon.config(
                directory: $0,
                extra: pair.syncSection(local: "198.18.254.2", peer: "198.18.254.1", interface: "\(pair.linkName)b")
                    + "\nMetrics {\n    IPv4_address 127.0.0.1\n    Port 9497\n}\n")
        }
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = (1...20).map { testFlow($0) }
        try pair.a.table { _ = try $0.write(flows, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 20 })

        let (status, body) = try scrape(pair.b)
        #expect(status == 200, "\(body)")
        #expect(sample(body, #"ctsync_cache_flows{cache="external"}"#) == 20, "\(body)")
        #expect((sample(body, "ctsync_messages_received_total") ?? 0) >= 20)
        #expect(sample(body, "ctsync_in_sync") != nil)
        #expect(sample(body, #"ctsync_link_up{link="\#(pair.linkName)b",kind="udp"}"#) == 1, "\(body)")
        #expect(sample(body, #"ctsync_link_current{link="\#(pair.linkName)b",kind="udp"}"#) == 1)
        #expect((sample(body, #"ctsync_link_datagrams_received_total{link="\#(pair.linkName)b",kind="udp"}"#) ?? 0) >= 1)
        let heard = try #require(sample(body, "ctsync_peer_last_heard_seconds"), "\(body)")
        #expect(heard >= 0 && heard < 5)
        #expect(body.contains("# TYPE ctsync_commit_duration_seconds histogram"))
        #expect(body.contains("# TYPE ctsync_messages_received_total counter"))

        // A commit lands in the histogram; counters only grow.
        #expect(try db.ctsyncd(["-c"]).status == 0)
        let after = try scrape(pair.b).body
        #expect(sample(after, "ctsync_commit_duration_seconds_count") == 1, "\(after)")
        #expect(sample(after, "ctsync_commits_total") == 1)
        #expect(sample(after, #"ctsync_commit_flows_total{result="created"}"#) == 20, "\(after)")
        #expect((sample(after, "ctsync_messages_received_total") ?? 0) >= (sample(body, "ctsync_messages_received_total") ?? 0))

        // The JSON stats carry the same: per-link state and the peer last heard.
        let stats = try db.stats()
        let sync = try #require(stats["sync"] as? [String: Any])
        let links = try #require(sync["links"] as? [[String: Any]])
        #expect(links.count == 1 && links[0]["up"] as? Bool == true && links[0]["current"] as? Bool == true)
        #expect(links[0]["interface"] as? String == "\(pair.linkName)b" && links[0]["kind"] as? String == "udp")
        #expect((sync["peer_heard_ms_ago"] as? Int ?? -1) >= 0)

        #expect(try scrape(pair.b, "/nothing").status == 404)

        // ctsync top: two frames (not a terminal), the second with rates.
        let top = try pair.b.ctsync(["top", "-n", "2", "-i", "0.2", "-C", db.configPath])
        #expect(top.status == 0, "\(top.stderr)")
        #expect(top.stdout.components(separatedBy: "ctsync top - ").count == 3, "\(top.stdout)")
        #expect(top.stdout.contains("sync FTFW") && top.stdout.contains("external 20 flows"), "\(top.stdout)")
        let linkLines = top.stdout.split(separator: "\n").filter { $0.hasPrefix("\(pair.linkName)b") }
        #expect(linkLines.count == 2 && linkLines.allSatisfy { $0.contains("udp") && $0.contains("up") && $0.contains("yes") }, "\(top.stdout)")
        #expect(linkLines.last.map { !$0.contains(" -  ") } == true, "\(top.stdout)")
        // On a terminal it refreshes until q: run it on a pseudo-terminal, press q after its
        // first frame, and it must end (bounded) with status 0.
        let onTerminal = """
            import os, pty, select, sys, time
            pid, fd = pty.fork()
            if pid == 0:
                os.execv(sys.argv[1], sys.argv[1:])
            seen, deadline = b"", time.time() + 10
            while b"ctsync top - " not in seen and time.time() < deadline:
                if select.select([fd], [], [], 0.2)[0]:
                    seen += os.read(fd, 65536)
            os.write(fd, b"q")
            while time.time() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    print("exit", os.waitstatus_to_exitcode(status))
                    sys.exit(0)
                if select.select([fd], [], [], 0.1)[0]:
                    try:
                        os.read(fd, 65536)
                    except OSError:
                        pass
            os.kill(pid, 9)
            print("still running")
            """
        let interactive = try pair.b.exec(["python3", "-c", onTerminal, Host.ctsync, "top", "-i", "0.2", "-C", db.configPath], timeout: 20)
        #expect(interactive.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "exit 0", "\(interactive.stdout) \(interactive.stderr)")
    }
}
