import CoreMetrics
import Prometheus

/// The daemon's figures as Prometheus metrics, through swift-metrics with swift-prometheus'
/// factory and registry (no hand-written exposition text). The figures themselves are the
/// ones `ctsync stats -o json` shows (`DaemonStatistics`): at each scrape they are read once
/// and the metrics brought up to date: gauges set, counters advanced by what they grew since.
/// docs/operations.md ("Metrics") lists every name.
final class DaemonMetrics {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private var counters: [String: (counter: CoreMetrics.Counter, last: Int64)] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]
    private let commitDuration: CoreMetrics.Timer

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["ctsync_commit_duration_seconds"] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
        commitDuration = CoreMetrics.Timer(label: "ctsync_commit_duration_seconds", dimensions: [], factory: factory)
    }

    /// A commit ended after `seconds`.
    func commitEnded(seconds: Double) {
        commitDuration.recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    /// The exposition, with every figure as it is now.
    func render(_ s: DaemonStatistics) -> [UInt8] {
        update(s)
        return registry.emitToBuffer()
    }

    private func key(_ name: String, _ dimensions: [(String, String)]) -> String {
        dimensions.isEmpty ? name : name + "{" + dimensions.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    private func gauge(_ name: String, _ value: Double, labels dimensions: [(String, String)] = []) {
        let k = key(name, dimensions)
        let g = gauges[k] ?? CoreMetrics.Gauge(label: name, dimensions: dimensions, factory: factory)
        gauges[k] = g
        g.record(value)
    }

    private func gauge<T: BinaryInteger>(_ name: String, _ value: T, labels dimensions: [(String, String)] = []) {
        gauge(name, Double(value), labels: dimensions)
    }

    /// A monotonic figure: the counter advances by its growth. A figure that went down (a
    /// counter the daemon reset) starts the count again from there.
    private func counter<T: BinaryInteger>(_ name: String, _ value: T, labels dimensions: [(String, String)] = []) {
        let k = key(name, dimensions)
        let now = Int64(clamping: value)
        if var entry = counters[k] {
            if now > entry.last { entry.counter.increment(by: now - entry.last) }
            entry.last = now
            counters[k] = entry
        } else {
            let c = CoreMetrics.Counter(label: name, dimensions: dimensions, factory: factory)
            if now > 0 { c.increment(by: now) }
            counters[k] = (c, now)
        }
    }

    private func update(_ s: DaemonStatistics) {
        gauge("ctsync_uptime_seconds", s.uptimeSeconds)
        gauge("ctsync_cache_limit_flows", s.hashLimit)
        for (name, cache) in [("internal", s.internalCache), ("external", s.externalCache)] {
            let d = [("cache", name)]
            gauge("ctsync_cache_flows", cache.active, labels: d)
            counter("ctsync_cache_created_total", cache.created, labels: d)
            counter("ctsync_cache_updated_total", cache.updated, labels: d)
            counter("ctsync_cache_destroyed_total", cache.destroyed, labels: d)
            counter("ctsync_cache_failed_total", cache.createFailed, labels: d + [("operation", "create")])
            counter("ctsync_cache_failed_total", cache.updateFailed, labels: d + [("operation", "update")])
            counter("ctsync_cache_failed_total", cache.destroyFailed, labels: d + [("operation", "destroy")])
            counter("ctsync_cache_full_total", cache.noSpace, labels: d)
        }
        counter("ctsync_netlink_events_total", s.netlink.eventsReceived)
        counter("ctsync_netlink_events_filtered_total", s.netlink.eventsFiltered)
        counter("ctsync_netlink_overruns_total", s.netlink.overruns)
        counter("ctsync_kernel_resyncs_total", s.netlink.resyncs)
        gauge("ctsync_netlink_buffer_bytes", s.netlink.bufferSize)
        counter("ctsync_commits_total", s.commit.commits)
        gauge("ctsync_commit_running", s.commit.running ? 1 : 0)
        for (result, value) in [("created", s.commit.created), ("updated", s.commit.updated), ("failed", s.commit.failed)] {
            counter("ctsync_commit_flows_total", value, labels: [("result", result)])
        }
        if let i = s.inject {
            for (result, value) in [("created", i.created), ("updated", i.updated), ("failed", i.failed), ("destroyed", i.destroyed)] {
                counter("ctsync_inject_flows_total", value, labels: [("result", result)])
            }
        }
        counter("ctsync_control_requests_total", s.control.requests)
        guard let y = s.sync else { return }
        let mode = [("mode", y.mode.lowercased())]
        gauge("ctsync_sync_info", 1, labels: mode)
        gauge("ctsync_in_sync", y.inSync ? 1 : 0)
        // Never heard: no sample (a gauge of "seconds ago" has no honest value then).
        if let heard = y.peerHeardMsAgo { gauge("ctsync_peer_last_heard_seconds", Double(heard) / 1000) }
        counter("ctsync_messages_sent_total", y.sent)
        counter("ctsync_messages_received_total", y.received)
        counter("ctsync_messages_retransmitted_total", y.retransmitted)
        counter("ctsync_messages_lost_total", y.lost)
        counter("ctsync_messages_malformed_total", y.malformed)
        counter("ctsync_messages_coalesced_total", y.coalesced)
        counter("ctsync_acks_sent_total", y.acksSent)
        counter("ctsync_nacks_sent_total", y.nacksSent)
        counter("ctsync_nacks_received_total", y.nacksReceived)
        gauge("ctsync_resend_queue_messages", y.resendQueue)
        counter("ctsync_resend_queue_overflows_total", y.resendQueueOverflows)
        counter("ctsync_peer_restarts_total", y.peerRestarts)
        counter("ctsync_peer_silences_total", y.peerSilences)
        counter("ctsync_stall_repairs_total", y.stallRepairs)
        counter("ctsync_received_flows_refused_total", y.receivedFiltered, labels: [("reason", "filter")])
        counter("ctsync_received_flows_refused_total", y.receivedRefused, labels: [("reason", "cache_full")])
        counter("ctsync_unknown_peer_total", y.unknownPeer)
        if let a = y.auth {
            counter("ctsync_auth_frames_accepted_total", a.accepted)
            counter("ctsync_auth_frames_refused_total", a.refused)
        }
        for link in y.links {
            let d = [("link", link.interface), ("kind", link.kind)]
            gauge("ctsync_link_up", link.up ? 1 : 0, labels: d)
            gauge("ctsync_link_current", link.current ? 1 : 0, labels: d)
            counter("ctsync_link_datagrams_sent_total", link.datagramsSent, labels: d)
            counter("ctsync_link_datagrams_received_total", link.datagramsReceived, labels: d)
            counter("ctsync_link_bytes_sent_total", link.bytesSent, labels: d)
            counter("ctsync_link_bytes_received_total", link.bytesReceived, labels: d)
            counter("ctsync_link_send_errors_total", link.sendErrors, labels: d)
            counter("ctsync_link_unknown_peer_total", link.unknownPeer, labels: d)
        }
    }
}
