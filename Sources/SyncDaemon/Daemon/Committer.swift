import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SyncEngine
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Commits the external cache into the kernel table on a thread of its own, one commit at a
/// time, so the daemon's loop (kernel events, the peer, the control socket) keeps running
/// meanwhile — conntrackd interleaves its commit with the loop in steps instead.
///
/// The daemon hands over a snapshot (values, not the cache), so flushes or updates of the
/// external cache during the commit do not disturb it. When the thread is done it writes one
/// byte to `wakeDescriptor`'s pipe; the daemon then collects the report.
final class Committer: @unchecked Sendable {
    /// Polled by the daemon: readable when a commit has finished.
    let wakeDescriptor: Int32
    private let wakeWrite: Int32
    private let lock = NSLock()
    private var finished: CommitReport?
    /// Whether a commit runs (touched on the daemon's thread only).
    private(set) var running = false
    /// The control connections waiting for this commit's answer.
    var waitingToken: Int?

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw DaemonError.startup("pipe: \(errnoText(errno))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeDescriptor = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        Glibc.close(wakeDescriptor)
        Glibc.close(wakeWrite)
    }

    /// Starts committing a snapshot of the external cache (a copy-on-write reference: the
    /// daemon's next change to the cache copies it, the commit thread reads this one).
    func start(_ entries: CacheEntries, now: Int64, commitTimeout: Int?, windowTracking: Bool, batchSize: Int) {
        let limits = KernelTimeouts.read()
        precondition(!running)
        running = true
        let thread = Thread { [self] in
            // Named for `top -H`, `ps -L` and the tests (Foundation does not pass the name on
            // to the kernel, and pthread_setname_np is not visible to Swift here).
            try? "ctsyncd-commit".write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            // Prepared one by one as the messages are built: no second copy of the table.
            let flows = entries.lazy.map {
                Self.prepare($0, now: now, commitTimeout: commitTimeout, windowTracking: windowTracking, limits: limits)
            }
            let report = Self.commit(flows, batchSize: batchSize)
            lock.withLock { finished = report }
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
        }
        thread.name = "ctsyncd-commit"
        thread.start()
    }

    /// The finished commit's report, once; nil while it still runs.
    func collect() -> CommitReport? {
        var sink = [UInt8](repeating: 0, count: 16)
        _ = sink.withUnsafeMutableBytes { read(wakeDescriptor, $0.baseAddress, $0.count) }
        let report = lock.withLock {
            defer { finished = nil }
            return finished
        }
        if report != nil { running = false }
        return report
    }

    /// The commit itself: created in batches, the flows that exist already updated.
    static func commit<C: RandomAccessCollection>(_ flows: C, batchSize: Int) -> CommitReport where C.Element == Flow, C.Index == Int {
        var report = CommitReport()
        report.attempted = flows.count
        let start = monotonicMilliseconds()
        do {
            let table = try KernelTable()
            let written = try table.write(flows, operation: .createOrUpdate, batchSize: batchSize)
            report.created = written.created
            report.updated = written.updated
            report.failed = written.failures.count
            for failure in written.failures { report.errors[errnoText(failure.errno), default: 0] += 1 }
        } catch {
            report.failed = flows.count - report.created - report.updated
            report.errors["\(error)", default: 0] += report.failed
        }
        report.seconds = Double(monotonicMilliseconds() - start) / 1000
        return report
    }

    /// Prepares the external cache's flows for the kernel, as conntrackd does: the timeout is
    /// `CommitTimeout` when set, else what was left of the peer's timeout (60 s when nothing
    /// is left or none was sent); the EXPECTED bit is cleared (the kernel refuses it); unless
    /// `TCPWindowTracking` is on, TCP flows are made liberal in both directions, since the
    /// window data the peer saw is not carried.
    /// Without `CommitTimeout`, no more than the kernel's own timeout for the flow's state
    /// (`limits`): what the peer sent is not trusted to be sane.
    static func prepare(
        _ entry: CacheEntry, now: Int64, commitTimeout: Int?, windowTracking: Bool, limits: KernelTimeouts = .defaults
    ) -> Flow {
        var flow = entry.flow
        if let fixed = commitTimeout {
            flow.timeout = UInt32(clamping: fixed)
        } else {
            let left = Int64(flow.timeout ?? 0) - max(0, now - entry.lastUpdate)
            flow.timeout = min(left > 0 ? UInt32(clamping: left) : 60, limits.cap(for: flow))
        }
        flow.status.remove(.expected)
        if !windowTracking, var tcp = flow.tcp {
            tcp.originalFlags |= TCPInfo.beLiberal
            tcp.replyFlags |= TCPInfo.beLiberal
            flow.tcp = tcp
        }
        flow.id = nil
        return flow
    }
}
