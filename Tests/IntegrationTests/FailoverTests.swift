import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The end-to-end failover: client, server, two firewalls with keepalived (unicast VRRP) and
/// ctsyncd, a TCP connection exchanging a counter every 100 ms through the master. The master
/// crashes; the backup's notify script commits; the connection must go on (no reset, counter
/// increasing, longest gap reported). Then failback, and a control run where the backup does
/// not commit and the connection must stall. The scenario is scripts/failover/failover-test.sh
/// (also usable by hand and with conntrackd); this test runs it with the ctsyncd built here and
/// checks its RESULT line.
@Suite(.serialized, requiresNamespaces) struct FailoverTests {
    static let hasKeepalived = Host.has("keepalived") && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

    @Test(.enabled(if: Host.runs(if: hasKeepalived), "needs keepalived and /usr/bin/python3 (scripts/install-deps.sh installs them)"))
    func tcpSessionSurvivesKeepalivedFailoverAndFailback() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("scripts/failover/failover-test.sh").path
        let r = try run(["/usr/bin/env", "CTSYNCD=\(Host.ctsyncd)", "DAEMON=ctsyncd", "bash", script], timeout: 150)
        let line = try #require(r.lines.last { $0.hasPrefix("RESULT ") }, "no RESULT line; stderr:\n\(r.stderr)")
        let result = try #require(
            try JSONSerialization.jsonObject(with: Data(line.dropFirst("RESULT ".count).utf8)) as? [String: Any])
        let gap = result["max_gap_ms"] as? Double ?? -1
        print("failover: longest gap \(gap) ms, takeover \(result["takeover_ms"] ?? "?") ms, failback gap \(result["failback_max_gap_ms"] ?? "?") ms")
        #expect(r.status == 0, "failures: \(result["failures"] ?? "?")\n\(r.stderr.suffix(12000))")
        #expect(result["passed"] as? Bool == true)
        // The session survived the crash: no reset, the counter went on, within the gap limit.
        #expect(result["survived"] as? Bool == true)
        #expect(result["fw2_committed"] as? Bool == true)
        #expect(gap > 0 && gap < 3000, "longest gap \(gap) ms")
        #expect((result["counter_after"] as? Int ?? 0) > (result["counter_before"] as? Int ?? 0))
        #expect(result["failback_survived"] as? Bool == true)
        // Control: without the commit the same kind of connection stalls, so the test can fail.
        #expect(result["control_replicated"] as? Bool == true)
        #expect(result["control_survived"] as? Bool == false)
        #expect(result["control_kernel_had_flow"] as? Bool == false, "without a commit the backup's kernel must not know the flow")
        #expect(result["control_recovered_by_commit"] as? Bool == true)
    }

    /// The reset window (docs/failover.md, "No reset window"): NAT to the VIPs, the server
    /// pushing every 10 ms, a table as large as `nf_conntrack_max` allows for both firewalls
    /// (110,000 flows here: each firewall holds them once the commit is done) to commit, fw1 crashes. With the shipped script's
    /// takeover gate the connection survives and the new master sends no reset; the control run
    /// without the gate is reset (so the test can fail). scripts/failover/takeover-test.sh.
    @Test(.enabled(if: Host.runs(if: hasKeepalived), "needs keepalived and /usr/bin/python3 (scripts/install-deps.sh installs them)"))
    func aTakeoverWithNATSendsNoReset() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("scripts/failover/takeover-test.sh").path
        // Both firewalls hold the table after the commit; room is left for the rest of the host.
        let limit =
            Int(
                (try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_max", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 262_144
        let flows = max(10_000, min(110_000, (limit - 40_000) / 2))
        let r = try run(["/usr/bin/env", "CTSYNCD=\(Host.ctsyncd)", "TK_FLOWS=\(flows)", "bash", script], timeout: 300)
        let results = try r.lines.filter { $0.hasPrefix("RESULT ") }.map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.dropFirst("RESULT ".count).utf8)) as? [String: Any])
        }
        let gated = try #require(results.first { $0["run"] as? String == "gated" }, "no gated RESULT; stderr:\n\(r.stderr.suffix(8000))")
        let control = try #require(results.first { $0["run"] as? String == "control" }, "no control RESULT")
        print("takeover: gated \(gated), control \(control)")
        #expect(gated["survived"] as? Bool == true && gated["server_reset"] as? Bool == false, "\(gated)\n\(r.stderr.suffix(8000))")
        #expect(gated["fw2_resets"] as? Int == 0)
        #expect(gated["committed"] as? Bool == true)
        // The control run shows the test can fail: without the gate a pushed packet lands in the
        // window and is reset. Timing decides whether one does; on a loaded host the window has
        // been missed once in many runs, so a control run that was not reset gets one more try.
        var controlReset = control["server_reset"] as? Bool == true || (control["fw2_resets"] as? Int ?? 0) > 0
        if !controlReset {
            let again = try run(["/usr/bin/env", "CTSYNCD=\(Host.ctsyncd)", "TK_FLOWS=\(flows)", "TK_RUNS=control", "bash", script], timeout: 240)
            let second = try again.lines.last { $0.hasPrefix("RESULT ") }.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.dropFirst("RESULT ".count).utf8)) as? [String: Any]
            }
            print("takeover (control, second try): \(second ?? [:])")
            controlReset = second?["server_reset"] as? Bool == true || (second?["fw2_resets"] as? Int ?? 0) > 0
        }
        #expect(controlReset, "control not reset: \(control)")
        #expect(gated["passed"] as? Bool == true)
        // Graceful: fw1's keepalived stops (fw1 keeps running), the same must hold.
        let g = try run(["/usr/bin/env", "CTSYNCD=\(Host.ctsyncd)", "TK_FLOWS=50000", "TK_CRASH=0", "TK_RUNS=gated", "bash", script], timeout: 180)
        let graceful = try #require(
            try g.lines.last { $0.hasPrefix("RESULT ") }.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.dropFirst("RESULT ".count).utf8)) as? [String: Any]
            }, "no graceful RESULT; stderr:\n\(g.stderr.suffix(8000))")
        print("takeover (graceful): \(graceful)")
        #expect(graceful["survived"] as? Bool == true && graceful["fw2_resets"] as? Int == 0, "\(graceful)\n\(g.stderr.suffix(8000))")
    }

    /// keepalived tracks `ctsync health` as the shipped keepalived.conf does: fw1, out of sync
    /// (its external cache too small for fw2's table), is not preferred although its priority
    /// is higher; in sync again, it takes over. scripts/failover/election-test.sh.
    @Test(.enabled(if: Host.runs(if: hasKeepalived), "needs keepalived and /usr/bin/python3 (scripts/install-deps.sh installs them)"))
    func aNodeOutOfSyncLosesTheElection() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("scripts/failover/election-test.sh").path
        let r = try run(["/usr/bin/env", "CTSYNCD=\(Host.ctsyncd)", "bash", script], timeout: 150)
        let result = try #require(
            try r.lines.last { $0.hasPrefix("RESULT ") }.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.dropFirst("RESULT ".count).utf8)) as? [String: Any]
            }, "no RESULT; stderr:\n\(r.stderr.suffix(8000))")
        print("election: \(result)")
        #expect(result["kept_backup_while_out_of_sync"] as? Bool == true, "\(result)\n\(r.stderr.suffix(8000))")
        #expect((result["unhealthy_reason"] as? String ?? "").contains("external cache is full"))
        #expect(result["took_over_when_in_sync"] as? Bool == true, "\(result)\n\(r.stderr.suffix(8000))")
        #expect(r.status == 0)
    }
}
