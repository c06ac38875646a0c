import Conntrack
import Foundation
import Testing

/// `ctsync health` on a real pair, and a sync that repairs itself: all sync traffic from a to
/// b dropped for 20 s (nftables) while a's table changes, then let through. Both nodes report
/// the fault during the outage (b: the peer unheard; a: its messages unacknowledged), b's
/// external cache converges to a's kernel table without a restart, and both are healthy again.
@Suite(.serialized, requiresNamespaces) struct HealthIntegrationTests {
    func health(_ daemon: TestDaemon) throws -> (status: Int32, verdict: [String: Any]) {
        let r = try daemon.namespace.ctsync(["health", "-o", "json", "-C", daemon.configPath])
        let verdict = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
        return (r.status, verdict)
    }

    @Test func aOneWayOutageIsReportedAndRepairsItself() throws {
        let pair = try SyncPair("hlt")
        defer { pair.remove() }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let first = burst(2000)
        try pair.a.table { _ = try $0.write(first, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 2000 })
        #expect(
            try eventually(within: 10) { try health(db).status == 0 && health(da).status == 0 },
            "\(String(describing: try? health(db).verdict)) \(String(describing: try? health(da).verdict))")
        let text = try db.namespace.ctsync(["health", "-C", db.configPath])
        #expect(text.status == 0 && text.stdout.hasPrefix("healthy: in sync with the peer (FTFW"), "\(text.stdout)")
        let pids = (da.process.processIdentifier, db.process.processIdentifier)

        // a -> b cut: b hears nothing from a, a's messages are not acknowledged.
        let cut =
            "table inet ctthealth {\n chain input {\n type filter hook input priority -300;\n ip saddr 198.18.254.1 udp dport \(SyncPair.port) drop\n }\n}\n"
        #expect(try pair.b.exec(["nft", "-f", "-"], input: cut).status == 0)
        let outageStarted = Date()
        let second = burst(1000, base: 0xC613_0000)
        try pair.a.table { _ = try $0.write(second, operation: .create) }
        try pair.a.table { _ = try $0.write(Array(first[0..<500]), operation: .delete) }
        #expect(
            try eventually(within: 10) {
                let (status, verdict) = try health(db)
                return status == 1 && ((verdict["reasons"] as? [String]) ?? []).contains { $0.contains("has not been heard for") }
            }, "\(String(describing: try? health(db).verdict))")
        #expect(
            try eventually(within: 12) {
                let (status, verdict) = try health(da)
                return status == 1 && ((verdict["reasons"] as? [String]) ?? []).contains { $0.contains("unacknowledged for") }
            }, "\(String(describing: try? health(da).verdict))")
        let unhealthyText = try db.namespace.ctsync(["health", "-C", db.configPath])
        #expect(unhealthyText.status == 1 && unhealthyText.stdout.hasPrefix("unhealthy: the peer has not been heard for"), "\(unhealthyText.stdout)")
        // Hold the cut for 20 s in all.
        let remaining = 20 - Date().timeIntervalSince(outageStarted)
        if remaining > 0 { Thread.sleep(forTimeInterval: remaining) }
        #expect(try pair.b.exec(["nft", "delete", "table", "inet", "ctthealth"]).status == 0)
        let restored = Date()

        let expected = Set(first[500...].map(\.key)).union(second.map(\.key))
        #expect(try eventually(within: 15) { Set(try db.externalCache().map(\.key)) == expected })
        let convergence = Date().timeIntervalSince(restored)
        #expect(
            try eventually(within: 10) { try health(db).status == 0 && health(da).status == 0 },
            "\(String(describing: try? health(db).verdict)) \(String(describing: try? health(da).verdict))")
        print("health: converged \(String(format: "%.1f", convergence)) s after a 20 s one-way outage")
        #expect(da.process.processIdentifier == pids.0 && db.process.processIdentifier == pids.1 && da.process.isRunning && db.process.isRunning)
        #expect(
            db.stderr.contains("the peer has been silent for") && db.stderr.contains("the peer is heard again after"), "\(db.stderr.suffix(2000))")

        // No daemon: exit 2, said so.
        db.stop()
        let gone = try db.namespace.ctsync(["health", "-C", db.configPath])
        #expect(gone.status == 2 && gone.stderr.contains("unhealthy: the daemon does not answer"), "\(gone.stderr)")
    }
}
