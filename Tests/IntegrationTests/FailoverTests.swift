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
}
