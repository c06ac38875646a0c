import Conntrack
import Logging
import SyncEngine
import SyncProtocol

/// The sync node's way out of the daemon: its datagrams go to the links, its dumps and writes
/// to the kernel, its log lines to the daemon's logger. Called only from the daemon's loop.
final class DaemonEnvironment: SyncNodeEnvironment {
    let links: SyncLinks?
    let log: Logger
    /// Stats mode: the log of flows that ended.
    let flowLog: FlowLog?
    /// `DisableExternalCache`: writes the peer's flows into the kernel as they arrive.
    let injector: Injector?
    /// `DisableExternalCache` with `ExpectationSync`: writes the peer's expectations (its
    /// port's events are not replicated back).
    let expectationWriter: KernelTable?
    var expectationInjectCounters = CacheCounters()

    init(links: SyncLinks?, log: Logger, flowLog: FlowLog?, injector: Injector?, expectationWriter: KernelTable? = nil) {
        self.links = links
        self.log = log
        self.flowLog = flowLog
        self.injector = injector
        self.expectationWriter = expectationWriter
    }

    func send(_ datagram: UnsafeRawBufferPointer, link: Int) -> Bool {
        links?[link].send(datagram) ?? false
    }

    func canSend(link: Int) -> Bool { links?[link].canSend ?? false }

    func isRunning(link: Int) -> Bool {
        guard let links else { return false }
        return SyncLinks.status(links[link].config.interface) == "RUNNING"
    }

    func readKernelTable() throws -> [Flow] { try KernelTable().dump() }

    func inject(_ changes: [(FlowMessageKind, Flow)]) { injector?.inject(changes, log: log) }

    func flowEnded(_ flow: Flow) { flowLog?.ended(flow) }

    func log(_ level: NodeLogLevel, _ message: String) {
        switch level {
        case .notice: log.notice("\(message)")
        case .warning: log.warning("\(message)")
        case .error: log.error("\(message)")
        }
    }
}
