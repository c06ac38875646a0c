/// Whether this node is in sync with its peer, as `ctsync health` (and keepalived's
/// `track_script`) asks: a node that is not should not be preferred as master.
public struct SyncHealth: Sendable, Equatable, Codable {
    public var healthy: Bool
    /// Why not, one line each (empty when healthy).
    public var reasons: [String]
    public var mode: String
    /// Milliseconds since the peer was last heard (a message the mode took); nil: never.
    public var peerHeardMsAgo: Int64?
    /// The peer's table has come in whole since we last asked for it (at start, after its
    /// restart, after `-n`).
    public var initialSyncComplete: Bool
    /// Milliseconds our oldest unacknowledged messages have waited with no acknowledgement
    /// making progress (FTFW); nil when nothing waits.
    public var unacknowledgedMs: Int64?
    /// Milliseconds since a flow of the peer was last refused by a full external cache.
    public var refusedMsAgo: Int64?
    public var externalFlows: Int
    /// Messages of the peer were lost beyond what the protocol repairs (a gap after a silence,
    /// any gap in NOTRACK): its table was asked for again and has not come in whole yet.
    public var unrecoveredLoss: Bool = false
}

/// The thresholds of a verdict (`ctsync health --peer-timeout --loss-timeout`).
public struct HealthLimits: Sendable, Equatable {
    /// The peer must have been heard within this long (it sends at least one keep-alive a second).
    public var peerTimeoutMs: Int64
    /// Our messages may wait this long for an acknowledgement that makes progress.
    public var lossTimeoutMs: Int64
    /// A refusal by a full external cache this recent makes the node unhealthy.
    public var refusalWindowMs: Int64
    public init(peerTimeoutMs: Int64 = 3000, lossTimeoutMs: Int64 = 5000, refusalWindowMs: Int64 = 10_000) {
        self.peerTimeoutMs = peerTimeoutMs
        self.lossTimeoutMs = lossTimeoutMs
        self.refusalWindowMs = refusalWindowMs
    }
}

extension SyncNode {
    /// How long the peer's flow messages must have stopped after it acknowledged our table
    /// request for its table to count as complete: its bulk goes out as fast as it can, and a
    /// peer with nothing queued says so with a keep-alive within a second.
    static let tableQuietMilliseconds: Int64 = 1000
    /// A peer not heard for this long is logged as silent (and again when it is back).
    static let peerSilenceMilliseconds: Int64 = 3000

    /// The verdict now.
    public func health(now: Int64, limits: HealthLimits = HealthLimits()) -> SyncHealth {
        var reasons: [String] = []
        let heard = peerHeardAt.map { now - $0 }
        let unacknowledged = mode?.unacknowledgedSince.map { now - $0 }
        let refused = lastRefusedAt.map { now - $0 }
        if mode == nil {
            reasons.append("no Sync section: nothing to be in sync with")
        } else {
            if let heard {
                if heard > limits.peerTimeoutMs { reasons.append("the peer has not been heard for \(heard / 1000) s") }
            } else {
                reasons.append("the peer has not been heard since the daemon started")
            }
            if lossPending || (tableRequestForLoss && tableRequestedAt != nil) {
                reasons.append(
                    "unrecovered loss: messages of the peer were lost beyond repair; its table, asked for again, has not come in whole yet")
            } else if !initialSyncComplete || tableRequestedAt != nil || tableRequestPending {
                reasons.append(
                    initialSyncComplete
                        ? "the peer's table, asked for again, has not come in whole yet" : "the peer's table has not come in whole yet")
            }
            if let unacknowledged, unacknowledged > limits.lossTimeoutMs {
                reasons.append(
                    "\(mode!.resendQueueLength) of our messages unacknowledged for \(unacknowledged / 1000) s: the peer does not get them")
            }
            if let refused, refused <= limits.refusalWindowMs {
                reasons.append("the external cache is full (HashLimit): the peer's flows are being refused")
            }
        }
        return SyncHealth(
            healthy: reasons.isEmpty, reasons: reasons, mode: mode?.name ?? "none", peerHeardMsAgo: heard,
            initialSyncComplete: initialSyncComplete && tableRequestedAt == nil && !tableRequestPending, unacknowledgedMs: unacknowledged,
            refusedMsAgo: refused, externalFlows: externalCache.count,
            unrecoveredLoss: lossPending || (tableRequestForLoss && tableRequestedAt != nil))
    }

    /// The peer was heard: note it, and say so if it had been silent.
    mutating func heardPeer(now: Int64, environment env: some SyncNodeEnvironment) {
        if peerSilenceLogged, let last = peerHeardAt {
            env.log(.warning, "the peer is heard again after \((now - last) / 1000) s of silence")
            peerSilenceLogged = false
            // What the peer sent during the silence may be beyond its resend queue: a gap in
            // what comes now (seen at the next tick) has its table asked for again.
            lostAtSilenceEnd = (lostSeen, now + Self.lossAfterSilenceMilliseconds)
        }
        if peerHeardAt == nil && tableRequestedAt == nil && !initialSyncComplete, mode != nil {
            // First contact: ask for the peer's table. A ctsyncd peer announces it unasked, but
            // conntrackd does not, and it forgets what it sent before our HELLO: it empties its
            // resend queue on every HELLO, and over TCP it drops what it sends while its
            // connection to us is still being made (1 s apart, ErrorQueueLength sends kept). A
            // burst in that second never reached us and is never resent; the table brings it.
            // ALARM answers no request: its refresh carries the table.
            if case .alarm? = settings.sync?.mode {
                tableRequestedAt = now
                tableRequestExplicit = false
            } else {
                tableRequestedAt = now
                tableRequestExplicit = true
                mode!.requestResync()
            }
        }
        peerHeardAt = now
        // ALARM has no table to ask for: hearing the peer is being in step with it.
        if case .alarm? = settings.sync?.mode { initialSyncComplete = true }
    }

    /// From `tick`: dates a table request made by a command, decides when a requested table has
    /// come in whole, and logs a peer that went silent.
    mutating func followSyncProgress(now: Int64, environment env: some SyncNodeEnvironment) {
        guard mode != nil else { return }
        if tableRequestPending {
            tableRequestPending = false
            tableRequestedAt = now
            tableRequestExplicit = true
        }
        if let requested = tableRequestedAt, let heard = peerHeardAt, heard >= requested {
            let reliable: Bool
            if case .ftfw? = settings.sync?.mode { reliable = true } else { reliable = false }
            // FTFW: the peer acknowledged the request, then its flows stopped for a while.
            // NOTRACK: no acknowledgements: the peer was heard after the request and then
            // went quiet. A peer whose own table keeps changing is never quiet: then the table is
            // in once no more flows came since the answer than a bulk sends at its slowest in
            // that time (`bulkMinimumFlowsPerSecond`), and at the latest after a minute.
            let acknowledged = reliable && tableRequestExplicit
            let answered = acknowledged ? (tableAcknowledgedAt.map { $0 >= requested } ?? false) : true
            let answeredAt = acknowledged ? tableAcknowledgedAt ?? requested : requested
            let since = max(answeredAt, lastFlowFromPeer ?? .min)
            let sinceAnswer = now - answeredAt
            let received = Int64(flowsFromPeer &- flowsAtTableRequest)
            let quiet = now - since >= Self.tableQuietMilliseconds
            let paced = sinceAnswer >= Self.tableChurnMilliseconds && received * 1000 <= sinceAnswer * Self.bulkMinimumFlowsPerSecond
            if answered && (quiet || paced || sinceAnswer >= Self.tableLongestMilliseconds) {
                tableRequestedAt = nil
                // Under churn the sweep after a restart or a loss cannot wait for quiet either:
                // it goes now that the table is in.
                if !quiet, stale != nil, staleResyncAcknowledged { sweepStale(now: now, environment: env, tableIn: true) }
                if !initialSyncComplete {
                    env.log(.notice, "in sync: the peer's table has come in (\(externalCache.count) flows)")
                } else if tableRequestForLoss {
                    env.log(.notice, "the loss is repaired: the peer's table has come in again (\(externalCache.count) flows)")
                }
                tableRequestForLoss = false
                initialSyncComplete = true
            }
        }
        if let last = peerHeardAt, !peerSilenceLogged, now - last >= Self.peerSilenceMilliseconds {
            peerSilenceLogged = true
            peerSilences &+= 1
            env.log(.warning, "the peer has been silent for \((now - last) / 1000) s (no message, not even a keep-alive)")
        }
        followLoss(now: now, environment: env)
        repairStalls(now: now, environment: env)
    }

    /// Loss the protocol does not repair by itself, repaired with a table (logged at warning
    /// level, counted in `stallRepairs`):
    /// - our messages the mode gave up unacknowledged (FTFW's resend queue full: the peer did
    ///   not acknowledge for that long): once the peer acknowledges again, our whole table goes
    ///   (at most every 10 s); the peer's copy lacked them;
    /// - messages of the peer lost in a gap just after a silence (what it sent meanwhile may
    ///   have left its resend queue), or in NOTRACK, which resends nothing: its table is asked
    ///   for (at most every 30 s), and until it is in, `health` says "unrecovered loss".
    mutating func followLoss(now: Int64, environment env: some SyncNodeEnvironment) {
        let counters = mode!.counters
        let heardRecently = peerHeardAt.map { now - $0 < Self.peerSilenceMilliseconds } ?? false
        if counters.resendQueueOverflows != overflowsSeen {
            if !givenUp {
                givenUp = true
                env.log(
                    .warning,
                    "\(counters.resendQueueOverflows &- overflowsSeen) of our messages given up unacknowledged (resend queue full): the peer lacks them until our table goes again, once it acknowledges"
                )
            }
            overflowsSeen = counters.resendQueueOverflows
        }
        let acknowledging = mode!.unacknowledgedSince.map { now - $0 < Self.tableQuietMilliseconds } ?? true
        if givenUp, heardRecently, acknowledging, now >= nextLossBulk {
            givenUp = false
            nextLossBulk = now + Self.lossBulkMilliseconds
            stallRepairs &+= 1
            let sent = sendBulk(environment: env) ?? 0
            env.log(.warning, "the peer acknowledges again: sending our table (\(sent) flows) to repair the messages given up")
        }
        let lost = counters.lost
        var lossOwed = false
        if let check = lostAtSilenceEnd {
            if lost != check.lost {
                lossOwed = true
                lostAtSilenceEnd = nil
            } else if now >= check.until {
                lostAtSilenceEnd = nil
            }
        }
        // ALARM's refresh carries the whole table again anyway: it answers no request.
        if case .alarm? = settings.sync?.mode { lossOwed = false }
        if case .notrack? = settings.sync?.mode, lost != lostSeen { lossOwed = true }
        lostSeen = lost
        if lossOwed { lossPending = true }
        guard lossPending, heardRecently, now >= nextLossTableRequest, tableRequestedAt == nil else { return }
        lossPending = false
        tableRequestForLoss = true
        nextLossTableRequest = now + Self.lossTableMilliseconds
        stallRepairs &+= 1
        env.log(.warning, "messages of the peer lost beyond repair (\(lost) lost so far): asking for its table again")
        // What the table does not name again is a ghost (its DESTROY was among the lost) and is
        // swept as after a restart. FTFW's table comes whole; NOTRACK's may lose messages too,
        // and a sweep would then remove flows whose announcement was lost: it is made only if
        // nothing was lost while the table came (else the next request, 30 s on, tries again).
        suspectExternalCache(now: now, reason: "after a loss beyond repair")
        if case .ftfw? = settings.sync?.mode {} else { sweepUnlessLostFrom = lost }
        tableRequestedAt = now
        tableRequestExplicit = true
        mode!.requestResync()
    }

    /// A flow message of the peer was taken.
    mutating func notePeerFlow(_ now: Int64) {
        lastFlowFromPeer = now
        flowsFromPeer &+= 1
    }

    /// A table asked for under churn: judged no sooner than this after the answer, and at the
    /// latest this long after it; a bulk sends at least this many flows a second (ctsyncd and
    /// conntrackd send 100,000 and more on a healthy link).
    static let tableChurnMilliseconds: Int64 = 2000
    static let tableLongestMilliseconds: Int64 = 60_000
    static let bulkMinimumFlowsPerSecond: Int64 = 10_000

    static let lossAfterSilenceMilliseconds: Int64 = 2000
    static let lossBulkMilliseconds: Int64 = 10_000
    static let lossTableMilliseconds: Int64 = 30_000

    /// A stuck sync mends itself, no restart needed (each repair logged at warning level and
    /// counted in `stallRepairs`):
    /// - nothing heard from the peer for 3 s with several links: the next link is tried (the
    ///   current one may carry nothing although its carrier is up); the peer follows the link it
    ///   hears us on, and every 3 s the next one is tried while the silence lasts;
    /// - the peer heard, but none of our messages acknowledged for 5 s: they are sent again
    ///   under new numbers (at most every 10 s), on the next link if there are several;
    /// - the peer heard, but its table asked for 30 s ago not in: it is asked for again.
    mutating func repairStalls(now: Int64, environment env: some SyncNodeEnvironment) {
        guard mode != nil else { return }
        let heardRecently = peerHeardAt.map { now - $0 < Self.peerSilenceMilliseconds } ?? false
        if linkCount > 1, let last = peerHeardAt, now - last >= Self.peerSilenceMilliseconds, now >= nextSilenceSwitch {
            nextSilenceSwitch = now + Self.peerSilenceMilliseconds
            let next = (currentLink + 1) % linkCount
            stallRepairs &+= 1
            switchLink(to: next, reason: "nothing heard from the peer for \((now - last) / 1000) s", environment: env)
        }
        if heardRecently, let since = mode!.unacknowledgedSince, now - since >= Self.stallMilliseconds, now >= nextStallRepair {
            nextStallRepair = now + 2 * Self.stallMilliseconds
            stallRepairs &+= 1
            let resent = mode!.resendUnacknowledged()
            env.log(
                .warning,
                "the peer is heard but has acknowledged none of our messages for \((now - since) / 1000) s: sending \(resent) flows again\(linkCount > 1 ? " on the next link" : "")"
            )
            if linkCount > 1 {
                switchLink(to: (currentLink + 1) % linkCount, reason: "our messages are not acknowledged", environment: env)
            }
        }
        if heardRecently, let requested = tableRequestedAt, now - requested >= Self.tableStallMilliseconds {
            stallRepairs &+= 1
            env.log(.warning, "the peer's table, asked for \((now - requested) / 1000) s ago, has not come in whole: asking again")
            tableRequestedAt = now
            tableRequestExplicit = true
            mode!.requestResync()
        }
    }

    static let stallMilliseconds: Int64 = 5000
    static let tableStallMilliseconds: Int64 = 30_000
}
