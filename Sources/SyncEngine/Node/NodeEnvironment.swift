import FlowModel
import SyncProtocol

/// How loud a node's log line is (the daemon maps it to its logger's levels).
public enum NodeLogLevel: Sendable, Equatable {
    case notice
    case warning
    case error
}

/// Where a `SyncNode` meets the world: the links to the peers, the kernel table and the log.
///
/// The node never opens a socket, reads a clock or calls C; everything it does outside itself
/// goes through these calls, made synchronously while one of its methods runs. The daemon's
/// implementation is a thin layer over its channels, `KernelTable` and logger; the simulation's
/// is a lossy network and an in-memory kernel table, so the node the daemon runs is the node the
/// simulations test.
public protocol SyncNodeEnvironment: AnyObject {
    /// Sends one datagram on link `link`; false when the link refused it (network down, no
    /// route), which makes the node look for a link that runs.
    func send(_ datagram: UnsafeRawBufferPointer, link: Int) -> Bool
    /// Whether link `link` takes a datagram now (a TCP link that is reconnecting with its queue
    /// full does not: the messages then wait in the mode, one per flow, in their latest state).
    func canSend(link: Int) -> Bool
    /// Whether link `link`'s interface is up and running (asked each second with several links
    /// and after a failed send).
    func isRunning(link: Int) -> Bool
    /// A full dump of the kernel's conntrack table.
    func readKernelTable() throws -> [Flow]
    /// Writes the peer's flows into the kernel table, in order (`DisableExternalCache`).
    func inject(_ changes: [(FlowMessageKind, Flow)])
    /// A flow the internal cache held ended (Stats mode logs it).
    func flowEnded(_ flow: Flow)
    /// A line for the log.
    func log(_ level: NodeLogLevel, _ message: String)
    /// A dump of the kernel's expectation table (`ExpectationSync`).
    func readKernelExpectations() throws -> [Expectation]
    /// Writes the peer's expectations into the kernel, in order (`DisableExternalCache`).
    func injectExpectations(_ changes: [(FlowMessageKind, Expectation)])
}

extension SyncNodeEnvironment {
    /// A world without expectations (the simulations that do not use them).
    public func readKernelExpectations() throws -> [Expectation] { [] }
    public func injectExpectations(_ changes: [(FlowMessageKind, Expectation)]) {}
}

/// The kernel mirror's counters (conntrackd's netlink statistics, and ctsync's resync figures).
/// `DisableInternalCache`: the kernel events sent straight to the peer, by kind
/// (conntrackd's "internal bypass" block of `-s`).
public struct BypassCounters: Sendable, Equatable, Codable {
    public var new = 0
    public var updated = 0
    public var destroyed = 0
    public init() {}
}

public struct MirrorCounters: Sendable, Equatable, Codable {
    public var eventsReceived = 0
    public var eventsFiltered = 0
    public var overruns = 0
    public var resyncs = 0
    /// Flows a resync found in the cache but no longer in the kernel (removed: no ghosts).
    public var resyncRemoved = 0
    /// Flows a resync found in the kernel but missing from the cache (added).
    public var resyncAdded = 0
    public init() {}
}
