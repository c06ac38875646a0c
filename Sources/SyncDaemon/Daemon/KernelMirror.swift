import Conntrack
import Foundation
import SyncEngine
import SystemCalls

/// The kernel side of the daemon: reading the event socket in batches for the node, growing its
/// buffer after an overrun, and the `nf_conntrack_events` setting that decides whether every flow
/// reports its end. What the events mean for the caches is the node's (`SyncNode.kernelEvents`).
extension Daemon {
    func readEvents(_ listener: EventListener) {
        // The socket first: everything it holds moves into the listener's queue, so a burst
        // at the kernel's rate waits there instead of overflowing the socket's buffer while
        // the node works. Then EventIterationLimit events (conntrackd's "per wakeup") go to the
        // node as one batch, and the other sources get their turn.
        let limit = max(1, config.general.eventIterationLimit)
        let overruns = listener.overruns
        do {
            // Up to four times what a turn handles (at least 256 datagrams: four recvmmsg calls):
            // the socket is read faster than the kernel fills it, and the first events of a
            // burst go to the peer before its last ones have been read.
            try listener.drain(maximumDatagrams: max(256, 4 * limit))
        } catch {
            log.error("reading events: \(error)")
        }
        if listener.overruns > overruns { growBuffer(listener) }
        do {
            // The batch is a slice of the listener's queue: gone before the queue is touched again.
            let events = listener.take(limit: limit)
            if events.isEmpty { return }
            node.kernelEvents(events, now: monotonicMilliseconds(), environment: environment)
        }
        listener.releaseTaken()
    }

    /// Events were lost: the socket's buffer doubles, up to `NetlinkBufferSizeMaxGrowth` (the
    /// node owes itself a resync from a dump).
    private func growBuffer(_ listener: EventListener) {
        let maxGrowth = max(config.general.netlinkBufferSizeMaxGrowth, bufferSize)
        if bufferSize < maxGrowth {
            bufferSize = min(maxGrowth, bufferSize * 2)
            try? listener.setReceiveBufferSize(bufferSize)
            stats.bufferSize = listener.receiveBufferSize
            log.warning("netlink event overrun: receive buffer grown to \(bufferSize) bytes")
        } else {
            log.warning("netlink event overrun (buffer at NetlinkBufferSizeMaxGrowth, \(maxGrowth) bytes)")
        }
    }

    static let eventsSettingPath = "/proc/sys/net/netfilter/nf_conntrack_events"
    /// `nf_conntrack_events` in this namespace: "1" every new flow gets its event extension,
    /// "2" only while someone listens.
    static var eventsSetting: String? {
        (try? String(contentsOfFile: eventsSettingPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    static var eventsForEveryFlow: Bool { eventsSetting == "1" }

    /// The kernel gives a flow its event extension when it is created and someone listens,
    /// or always with `nf_conntrack_events=1`. Set that (in this namespace) so flows created
    /// while the daemon is not running, e.g. during a restart, still report their end.
    func ensureEventsForEveryFlow() {
        guard Self.eventsSetting == "2" else { return }
        if (try? "1\n".write(toFile: Self.eventsSettingPath, atomically: false, encoding: .utf8)) != nil {
            log.notice("net.netfilter.nf_conntrack_events was 2 (events only for flows created while someone listens): set to 1")
        } else {
            log.warning("net.netfilter.nf_conntrack_events is 2: flows created while ctsyncd is not running will not report their end")
        }
    }
}
