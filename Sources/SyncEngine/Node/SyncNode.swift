import FlowModel
import SyncProtocol

/// One firewall's sync state, whole and pure: the internal cache (the kernel table, exactly),
/// the external cache (what the peers replicated), the sync mode, and every policy that decides
/// exactness: resync after overruns and for flows that never report, the peer-restart sweep,
/// ALARM's expiry, the choice of link, and where the peer's flows go (external cache or kernel).
///
/// Inputs: kernel events (`kernelEvents`), datagrams with the link they came on (`receive`),
/// control commands (`flushCaches`, `sendBulk`, `requestPeerResync`, `resyncWithKernel`) and
/// time (`tick`). Outputs go through the `SyncNodeEnvironment` the caller passes in: datagrams
/// to send, kernel dumps and writes, log lines. `nextDeadline` says when `tick` next has work.
/// No sockets, no clock, no C: the daemon drives it from its poll loop, the tests from a
/// simulated network, seeded and deterministic.
public struct SyncNode: Sendable {
    /// What the configuration decides for a node.
    public struct Settings: Sendable {
        /// `HashLimit`: the most flows each cache holds.
        public var hashLimit: Int
        /// `HashSize`: the flows to make room for at start.
        public var expectedFlows: Int
        /// The `Filter` section: the flows the internal cache mirrors.
        public var accepts: @Sendable (Flow) -> Bool
        /// Kernel events are read (false: the table is polled, `PollSecs`).
        public var listensToEvents: Bool
        /// `PollSecs`, in milliseconds: the table is re-read this often (instead of events).
        public var pollMilliseconds: Int64?
        /// `NetlinkOverrunResync`: the latest time (seconds) after an overrun at which the
        /// table is re-read; nil when off.
        public var overrunResyncSeconds: Int?
        /// Stats mode: every flow that ends is handed to `flowEnded`.
        public var logsEndedFlows: Bool
        /// Applied to every flow the peer sends before it is cached or injected (`IgnoreReceived`:
        /// labels, helper, mark or sequence adjustment dropped).
        public var receivedTransform: (@Sendable (Flow) -> Flow)?
        /// The Sync section; nil for a node that only mirrors its kernel.
        public var sync: Sync?
        /// `Options { ExpectationSync }`: which expectations are replicated (their helper);
        /// nil when expectations are not.
        public var expectations: (@Sendable (Expectation) -> Bool)?

        public init(
            hashLimit: Int, expectedFlows: Int = 0, accepts: @escaping @Sendable (Flow) -> Bool = { _ in true }, listensToEvents: Bool = true,
            pollMilliseconds: Int64? = nil, overrunResyncSeconds: Int? = 30, logsEndedFlows: Bool = false, sync: Sync? = nil
        ) {
            self.hashLimit = hashLimit
            self.expectedFlows = expectedFlows
            self.accepts = accepts
            self.listensToEvents = listensToEvents
            self.pollMilliseconds = pollMilliseconds
            self.overrunResyncSeconds = overrunResyncSeconds
            self.logsEndedFlows = logsEndedFlows
            self.sync = sync
        }
    }

    /// Replication's settings.
    public struct Sync: Sendable {
        public var mode: SyncModeSettings
        /// How many dedicated links there are (all listened on, one sends).
        public var linkCount: Int
        /// The link that sends first (the configuration's default link, else the first).
        public var initialLink: Int
        /// The links' names for the log (their interfaces).
        public var linkNames: [String]
        /// The largest datagram payload every link carries.
        public var payloadLimit: Int
        public var encodeOptions: EncodeOptions
        /// `DisableExternalCache on`: the peer's flows go into the kernel as they arrive.
        public var injects: Bool
        /// `StartupResync on`: ask the peer for its table at start.
        public var startupResync: Bool
        /// `DisableInternalCache on` (NOTRACK): no internal cache; kernel events go to the peer
        /// as they come, a bulk (`-B`, the peer's resync request) is read from the kernel.
        public var bypassesInternalCache = false
        /// The number of the first message (the daemon takes the clock's seconds, as conntrackd).
        public var initialSequence: UInt32
        /// `Options { UpdateDelay }` (ms, 0 = off): what is queued waits up to this long for
        /// more changes before it goes out, unless it already fills a datagram; several
        /// updates of one flow meanwhile go out as one message (pfsync's `maxupd`).
        public var updateDelayMilliseconds: Int64 = 0

        public init(
            mode: SyncModeSettings, linkCount: Int = 1, initialLink: Int = 0, linkNames: [String] = [], payloadLimit: Int = 1472,
            encodeOptions: EncodeOptions = EncodeOptions(),
            injects: Bool = false, startupResync: Bool = false, initialSequence: UInt32 = 0
        ) {
            self.mode = mode
            self.linkCount = max(1, linkCount)
            self.initialLink = min(max(0, initialLink), self.linkCount - 1)
            self.linkNames = (0..<self.linkCount).map { $0 < linkNames.count ? linkNames[$0] : "link \($0)" }
            self.payloadLimit = payloadLimit
            self.encodeOptions = encodeOptions
            self.injects = injects
            self.startupResync = startupResync
            self.initialSequence = initialSequence
        }
    }

    public let settings: Settings
    public internal(set) var internalCache: FlowCache
    public internal(set) var externalCache: FlowCache
    /// The sync mode; nil without a Sync section.
    public internal(set) var mode: (any SyncMode)?
    /// The link that sends now.
    public internal(set) var currentLink: Int
    /// Malformed messages by conntrackd's `-s network` category.
    public internal(set) var malformed: [String: Int] = [:]
    public internal(set) var mirror = MirrorCounters()
    /// The peer's flows the `Filter` section refused (they never reach the external cache or
    /// the kernel), and those refused because the external cache was full.
    public internal(set) var receivedFiltered = 0
    public internal(set) var receivedRefused = 0
    /// `ExpectationSync`: the kernel's expectations (internal) and the peer's (external).
    public internal(set) var internalExpectations: ExpectationCache
    public internal(set) var externalExpectations: ExpectationCache
    public internal(set) var expectationEventsReceived = 0
    public internal(set) var expectationEventsFiltered = 0
    /// Expectation messages received without `ExpectationSync` (dropped, as conntrackd).
    public internal(set) var expectationsIgnored = 0
    /// After the peer restarted: its expectations not announced again yet.
    var staleExpectations: Set<ExpectationKey>?
    var expectationInjectQueue: [(FlowMessageKind, Expectation)] = []
    /// ALARM: when the internal expectations are next sent again.
    var nextExpectationRefresh: Int64 = 0

    // Kernel mirror.
    /// When a resync from a dump is owed (after an overrun), the latest time it runs.
    var resyncDue: Int64?
    /// The last time an event arrived: an owed resync runs once the stream is quiet.
    var lastEventAt: Int64 = 0
    /// Flows loaded from the table at start that have not reported an event since (see
    /// `checkSilentFlows`).
    var silent: Set<FlowKey> = []
    var silentCheckDue: Int64?
    var pollDue: Int64?

    // Peer side.
    /// After the peer restarted: its flows we hold that it has not announced again yet.
    var stale: Set<FlowKey>?
    /// The restarted peer acknowledged our resync request (reliable modes): the sweep waits for
    /// it, so a forged HELLO, which no real peer follows up, sweeps nothing.
    var staleResyncAcknowledged = false
    var lastPeerData: Int64 = 0
    /// Sync health (`SyncNode+Health.swift`): when the peer was last heard (a message the mode
    /// took), when we asked for its table and when it acknowledged that, when a flow of its
    /// last arrived and one was last refused, whether the first table has come in whole.
    public internal(set) var peerHeardAt: Int64?
    var peerSilenceLogged = false
    var tableRequestedAt: Int64? {
        didSet { if tableRequestedAt != nil && tableRequestedAt != oldValue { flowsAtTableRequest = flowsFromPeer } }
    }
    /// Flow messages taken from the peer so far, and when its table was last asked for: how
    /// many came since (`followSyncProgress` judges a table under churn by it).
    var flowsFromPeer = 0
    var flowsAtTableRequest = 0
    var tableRequestPending = false
    /// The table was asked for with a RESYNC (acknowledged in FTFW), not only announced by our
    /// HELLO at start (the peer then sends it unasked).
    var tableRequestExplicit = false
    var tableAcknowledgedAt: Int64?
    var lastFlowFromPeer: Int64?
    var lastRefusedAt: Int64?
    public internal(set) var initialSyncComplete = false
    public internal(set) var peerSilences = 0
    /// Stalls noticed and repaired (a silent link left, unacknowledged messages sent again, a
    /// table that did not come asked for again).
    public internal(set) var stallRepairs = 0
    var nextSilenceSwitch: Int64 = .min / 2
    /// Unrecovered loss (`SyncNode+Health.swift`): our messages the mode gave up unacknowledged
    /// (its resend queue full) seen so far, and whether the peer's copy may lack some now;
    /// the peer's messages lost (gaps) seen so far, and what was lost when it was last heard
    /// again after a silence; whether the table asked for was asked for because of a loss.
    var overflowsSeen = 0
    var givenUp = false
    var lostSeen = 0
    var lostAtSilenceEnd: (lost: Int, until: Int64)?
    var tableRequestForLoss = false
    /// A loss seen that no table request has covered yet.
    var lossPending = false
    /// NOTRACK: the sweep after a table asked for because of a loss is made only if the lost
    /// count is still this when it is due.
    var sweepUnlessLostFrom: Int?
    /// Why the external cache is suspect (the sweep's log line).
    var sweepReason = ""
    var nextLossTableRequest: Int64 = .min / 2
    var nextLossBulk: Int64 = .min / 2
    var nextStallRepair: Int64 = .min / 2
    /// Bulk answers to the peer's resync requests: at most one per `bulkIntervalMilliseconds`;
    /// requests meanwhile are answered together when it has passed.
    var lastBulk: Int64 = .min / 2
    var bulkOwed = false
    public static let bulkIntervalMilliseconds: Int64 = 1000
    /// The peer's flows refused since the last log line about it (the external cache at
    /// `HashLimit`), and when the next line may go out.
    var refusedSinceLog = 0
    var nextRefusalLog: Int64 = .min / 2
    static let refusalLogMilliseconds: Int64 = 10_000
    var nextLinkCheck: Int64 = 0
    var noLinkLogged = false
    /// Since when the mode's queue has held messages the coalescing delay keeps back.
    var heldSince: Int64?
    /// A flow was created or destroyed since the last transmit: nothing is held back then
    /// (the delay merges a flow's updates; a new or ended flow is news the peer needs now).
    var urgentQueued = false
    /// Received for the kernel (`DisableExternalCache`), written at the next `transmit`.
    var injectQueue: [(FlowMessageKind, Flow)] = []
    /// `DisableInternalCache`: the flows of events not sent yet (the latest of each), which
    /// the mode's queue names by key.
    var bypass: [FlowKey: Flow] = [:]
    public internal(set) var bypassCounters = BypassCounters()
    /// Whether the internal cache is bypassed (`DisableInternalCache`).
    public var bypassesInternalCache: Bool { settings.sync?.bypassesInternalCache ?? false }
    /// The encoded messages of a transmit, and where each datagram of them ends.
    var datagram: [UInt8] = []
    var datagramEnds: [Int] = []

    /// Quiet time (no data from the restarted peer) after which the flows it did not announce
    /// again are ghosts.
    public static let staleSweepMilliseconds: Int64 = 2000
    /// Quiet time after the last event before an owed resync runs.
    public static let resyncQuietMilliseconds: Int64 = 200

    public init(settings: Settings, now: Int64) {
        self.settings = settings
        internalCache = FlowCache(limit: settings.hashLimit, expectedCount: min(settings.expectedFlows, settings.hashLimit))
        externalCache = FlowCache(limit: settings.hashLimit)
        internalExpectations = ExpectationCache(limit: settings.expectations == nil ? 0 : settings.hashLimit)
        externalExpectations = ExpectationCache(limit: settings.expectations == nil ? 0 : settings.hashLimit)
        mode = settings.sync.map { $0.mode.make(initialSequence: $0.initialSequence, now: now) }
        currentLink = settings.sync?.initialLink ?? 0
        nextLinkCheck = now
        if let poll = settings.pollMilliseconds, !settings.listensToEvents { pollDue = now + max(1, poll) }
    }

    /// The number of links (0 without a Sync section).
    public var linkCount: Int { settings.sync?.linkCount ?? 0 }
    /// True when the peer's flows go into the kernel instead of the external cache.
    public var injects: Bool { settings.sync?.injects ?? false }

    /// Loads the kernel's table into the internal cache (subscribe to events first: what
    /// changes meanwhile is queued, not lost), announces it to the peer, and asks for the
    /// peer's when configured to.
    public mutating func start(now: Int64, environment env: some SyncNodeEnvironment) throws {
        if bypassesInternalCache {
            // As conntrackd: no table read at start, nothing announced; events from now on.
            env.log(.notice, "disabling internal cache (DisableInternalCache): kernel events go to the peer as they come")
            if settings.sync?.startupResync == true {
                tableRequestedAt = now
                tableRequestExplicit = true
                mode!.requestResync()
                env.log(.notice, "resync requested from the peer (StartupResync)")
            }
            return
        }
        let dumped = try env.readKernelTable()
        let result = internalCache.resync(with: dumped, now: now / 1000, accepts: settings.accepts)
        env.log(
            .notice,
            "internal cache loaded: \(internalCache.count) flows from the kernel (\(dumped.count - internalCache.count) filtered out\(result.rejected > 0 ? ", \(result.rejected) over HashLimit" : ""))"
        )
        if settings.listensToEvents && internalCache.count > 0 {
            silent = Set(internalCache.keys)
            silentCheckDue = now + Self.silentPeriod(flows: dumped.count)
        }
        try loadExpectations(now: now, environment: env)
        guard mode != nil, let sync = settings.sync else { return }
        // The mode is mutated in place (`mode!`) everywhere: a copy would duplicate its queues.
        mode!.enqueueAll(internalCache.keys)
        if sync.startupResync {
            tableRequestedAt = now
            tableRequestExplicit = true
            mode!.requestResync()
            env.log(.notice, "resync requested from the peer (StartupResync)")
        }
    }

    /// When `tick` next has something to do (nil: only an input can give it work).
    public var nextDeadline: Int64? {
        var deadlines: [Int64?] = [
            silentCheckDue, pollDue, mode?.nextTick, heldSince.map { $0 + (settings.sync?.updateDelayMilliseconds ?? 0) },
            stale == nil || !staleResyncAcknowledged ? nil : lastPeerData + Self.staleSweepMilliseconds,
            bulkOwed ? lastBulk + Self.bulkIntervalMilliseconds : nil,
        ]
        if let due = resyncDue { deadlines.append(min(due, lastEventAt + Self.resyncQuietMilliseconds)) }
        if linkCount > 1 { deadlines.append(nextLinkCheck) }
        return deadlines.compactMap { $0 }.min()
    }

    /// Runs what is due: an owed resync, the silent-flow re-read, polling, the mode's timers
    /// (keep-alives, acknowledgements, ALARM's refresh and expiry), the link check, the sweep
    /// after a peer's restart.
    public mutating func tick(now: Int64, environment env: some SyncNodeEnvironment) {
        if let due = resyncDue, now >= due || now - lastEventAt >= Self.resyncQuietMilliseconds {
            resyncDue = nil
            resyncWithKernel(reason: "event overrun", now: now, environment: env)
        }
        if let due = silentCheckDue, now >= due { checkSilentFlows(now: now, environment: env) }
        if let due = pollDue, now >= due {
            resyncWithKernel(reason: "poll", now: now, environment: env)
            pollDue = now + max(1, settings.pollMilliseconds ?? 1000)
        }
        if let due = mode?.nextTick, now >= due, let expiry = mode!.tick(now: now, internalCache: internalCache) {
            expireExternal(before: expiry, environment: env)
            // ALARM's refresh: the expectations (few) go again all at once each RefreshTime.
            if syncsExpectations, now >= nextExpectationRefresh, case .alarm(let refresh, _) = settings.sync?.mode {
                nextExpectationRefresh = now + Int64(max(1, refresh)) * 1000
                enqueueAllExpectations()
            }
        }
        if linkCount > 1, now >= nextLinkCheck { checkLinks(now: now, environment: env) }
        if bulkOwed && now >= lastBulk + Self.bulkIntervalMilliseconds { sendRequestedBulk(now: now, environment: env) }
        sweepStale(now: now, environment: env)
        followSyncProgress(now: now, environment: env)
    }

    // MARK: - Announcing local changes

    /// Tells the peer about a change of the internal cache.
    mutating func announce(_ change: CacheChange) {
        guard mode != nil else { return }
        switch change {
        case .created(let key):
            mode!.flowChanged(key, created: true)
            urgentQueued = true
        case .updated(let key): mode!.flowChanged(key, created: false)
        case .destroyed(let flow):
            mode!.flowDestroyed(flow)
            urgentQueued = true
        case .rejected, .none: break
        }
    }
}
