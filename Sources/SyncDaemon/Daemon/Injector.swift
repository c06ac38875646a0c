import Conntrack
import Logging
import SyncEngine
import SyncProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `DisableExternalCache on`: writes the peer's flows into the kernel table as they arrive, in
/// order, batched by runs of the same kind: new and updated flows are created (or updated when
/// they exist), destroyed ones deleted (one already gone is no failure). Its netlink socket has
/// a port of its own, by which the kernel's events for what it wrote are told apart (not ours
/// to replicate).
final class Injector {
    private let table: KernelTable
    private let windowTracking: Bool
    /// The kernel's timeouts, read at start: what the peer sends gets no more.
    private let limits = KernelTimeouts.read()
    /// conntrackd's `external inject` figures.
    private(set) var counters = CacheCounters()

    init(windowTracking: Bool) throws {
        table = try KernelTable()
        self.windowTracking = windowTracking
    }

    /// The netlink port the kernel's events for our writes carry.
    var portID: UInt32 { table.portID }

    func inject(_ changes: [(FlowMessageKind, Flow)], log: Logger) {
        let now = monotonicMilliseconds() / 1000
        var start = 0
        while start < changes.count {
            let deleting = changes[start].0 == .destroy
            var end = start
            while end < changes.count && (changes[end].0 == .destroy) == deleting { end += 1 }
            let flows = changes[start..<end].map {
                Committer.prepare(
                    CacheEntry(flow: $0.1, since: now, lastUpdate: now), now: now, commitTimeout: nil, windowTracking: windowTracking, limits: limits)
            }
            do {
                let report = try table.write(flows, operation: deleting ? .delete : .createOrUpdate)
                if deleting {
                    counters.destroyed += report.deleted
                    counters.destroyFailed += report.failures.filter { $0.errno != ENOENT }.count
                } else {
                    counters.created += report.created
                    counters.updated += report.updated
                    counters.createFailed += report.failures.count
                }
            } catch {
                log.error("injecting \(flows.count) flows from the peer failed: \(error)")
                if deleting { counters.destroyFailed += flows.count } else { counters.createFailed += flows.count }
            }
            start = end
        }
    }
}
