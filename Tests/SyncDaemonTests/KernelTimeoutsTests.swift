import Configuration
import FlowModel
import Foundation
import SyncEngine
import Testing

@testable import SyncDaemon

/// What the peer sends is written into the kernel with no more time than the kernel's own
/// timeout for the flow's state; `CommitTimeout`, when set, is the operator's choice.
@Suite struct KernelTimeoutsTests {
    func flow(_ proto: L4Protocol, state: TCPState? = nil, timeout: UInt32) -> Flow {
        var f = Flow(
            proto: proto, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1, destinationPort: 2),
            timeout: timeout)
        if let state { f.tcp = TCPInfo(state: state) }
        return f
    }

    @Test func readsTheSysctlsAndKeepsDefaultsForWhatIsMissing() throws {
        let directory = NSTemporaryDirectory() + "ctsync-timeouts-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "7200\n".write(toFile: directory + "/nf_conntrack_tcp_timeout_established", atomically: true, encoding: .utf8)
        try "not a number".write(toFile: directory + "/nf_conntrack_udp_timeout_stream", atomically: true, encoding: .utf8)
        let t = KernelTimeouts.read(from: directory)
        #expect(t.tcp[3] == 7200 && t.tcp[7] == 120 && t.udpStream == 120 && t.generic == 600)
    }

    @Test func preparedFlowsAreCapped() {
        let now: Int64 = 1000
        func prepared(_ f: Flow, commitTimeout: Int? = nil) -> UInt32? {
            Committer.prepare(CacheEntry(flow: f, since: now, lastUpdate: now), now: now, commitTimeout: commitTimeout, windowTracking: false).timeout
        }
        #expect(prepared(flow(.tcp, state: .established, timeout: 8_553_600)) == 432_000)
        #expect(prepared(flow(.tcp, state: .timeWait, timeout: 3000)) == 120)
        #expect(prepared(flow(.tcp, state: .established, timeout: 300)) == 300)
        #expect(prepared(flow(.udp, timeout: 99_999)) == 120)
        #expect(prepared(flow(.icmp, timeout: 99_999)) == 30)
        #expect(prepared(flow(.gre, timeout: 99_999)) == 600)
        // The operator's CommitTimeout is not capped.
        #expect(prepared(flow(.tcp, state: .established, timeout: 8_553_600), commitTimeout: 900_000) == 900_000)
    }
}

/// `IgnoreReceived`: the node's settings strip the listed attributes from the peer's flows.
@Suite struct IgnoreReceivedSettingsTests {
    @Test func theListedAttributesAreDropped() throws {
        let text = """
            Sync {
                Mode FTFW { }
                Options { IgnoreReceived { Labels Helper } }
                UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }
            }
            """
        let settings = Daemon.nodeSettings(try DaemonConfig.parse(text, path: "t.conf"), links: nil)
        var flow = Flow(
            proto: .tcp, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1, destinationPort: 21),
            tcp: TCPInfo(state: .established), status: [.assured, .helper], timeout: 100, mark: 9)
        flow.labels = FlowLabels(bits: [3, 100])
        flow.helper = "ftp"
        let transform = try #require(settings.receivedTransform)
        let received = transform(flow)
        #expect(received.labels == FlowLabels() && received.helper == nil && !received.status.contains(.helper))
        #expect(received.mark == 9 && received.key == flow.key && received.tcp == flow.tcp)
        // Without the option nothing is touched.
        let plain = Daemon.nodeSettings(
            try DaemonConfig.parse(text.replacingOccurrences(of: "IgnoreReceived { Labels Helper }", with: ""), path: "t.conf"), links: nil)
        #expect(plain.receivedTransform == nil)
    }
}
