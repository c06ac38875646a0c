import FlowModel
import SyncProtocol

/// Counters of a sync mode (conntrackd's `-s network` and `-s rsqueue` figures and more).
public struct SyncCounters: Sendable, Equatable, Codable {
    public var sent = 0
    public var retransmitted = 0
    public var received = 0
    public var acksSent = 0
    public var nacksSent = 0
    public var nacksReceived = 0
    /// NACKs answered only in part: the second's retransmission budget was spent.
    public var nacksLimited = 0
    /// Changes of a flow already queued: they went out in the one message (update coalescing).
    public var coalesced = 0
    public var resyncsRequested = 0
    /// Messages we know we missed (sum of gap sizes seen).
    public var lost = 0
    /// Old or duplicate messages dropped.
    public var before = 0
    /// Entries dropped from a full resend queue (their loss cannot be repaired).
    public var resendQueueOverflows = 0
    /// Peer restarts seen (a hello).
    public var peerRestarts = 0
    /// Messages far outside the receive window, dropped (forged, or another pair's).
    public var outOfWindow = 0
    /// Times a run of such messages made their numbering ours (the peer renumbered unseen).
    public var numberingsAdopted = 0
    /// Messages that make no sense in this mode (an ACK in NOTRACK, a range ending before it starts).
    public var malformed = 0
    public init() {}
}

/// What the node must do after a mode digested a message from the peer.
public enum ModeAction: Sendable, Equatable {
    /// Apply a peer's flow to the external cache (or the kernel, without one).
    case apply(FlowMessageKind, Flow)
    /// Apply a peer's expectation (its attributes as they came; the node decodes them).
    case applyExpectation(ExpectationMessage)
    /// The peer asked for our whole internal cache.
    case bulkRequested
    /// The peer restarted (it said hello with a new numbering).
    case peerRestarted
    /// The peer acknowledged our resync request: its table is on the way (or was empty).
    case resyncAcknowledged
    /// The peer's numbering was adopted after a run of messages outside the window; its table
    /// was asked for again.
    case numberingAdopted
}

/// A mode's settings, as the Sync section's `Mode` block gives them.
public enum SyncModeSettings: Sendable, Equatable {
    /// Reliable: acknowledgements, NACKs, retransmission from a resend queue.
    case ftfw(windowSize: Int, resendQueueSize: Int)
    /// Best effort: every change sent once, losses counted, nothing repaired.
    case notrack
    /// Soft state: every flow sent again each `refreshTime` seconds; the peer forgets what it
    /// has not heard of for `cacheTimeout` seconds.
    case alarm(refreshTime: Int, cacheTimeout: Int)

    /// conntrackd's name for the mode.
    public var name: String {
        switch self {
        case .ftfw: return "FTFW"
        case .notrack: return "NOTRACK"
        case .alarm: return "ALARM"
        }
    }

    /// A fresh mode of this kind; `initialSequence` numbers its first message.
    public func make(initialSequence: UInt32, now: Int64) -> any SyncMode {
        switch self {
        case .ftfw(let window, let queue):
            return FTFWMode(initialSequence: initialSequence, windowSize: window, resendQueueLimit: queue, now: now)
        case .notrack:
            return NotrackMode(initialSequence: initialSequence, now: now)
        case .alarm(let refresh, let timeout):
            return AlarmMode(initialSequence: initialSequence, refreshTime: refresh, cacheTimeout: timeout, now: now)
        }
    }
}

/// One of conntrackd's three ways of replicating (conntrack-tools keeps them in `sync-ftfw.c`,
/// `sync-notrack.c` and `sync-alarm.c`; here `FTFWMode`, `NotrackMode` and `AlarmMode`).
///
/// A mode numbers the messages, decides what goes out when, and what a received message means.
/// It is pure and deterministic: driven by local flow changes, received messages and `tick`,
/// with time given by the caller. It never holds a flow's state to send: `transmit` builds each
/// flow message from the internal cache's *current* state, so a late or repeated send never
/// carries a stale copy.
public protocol SyncMode: Sendable {
    /// conntrackd's name: FTFW, NOTRACK or ALARM.
    var name: String { get }
    var counters: SyncCounters { get }
    /// Messages waiting for acknowledgement (0 where nothing is acknowledged).
    var resendQueueLength: Int { get }
    /// Flows and control messages waiting to be sent.
    var transmitQueueLength: Int { get }
    /// True when no flow message is queued or waiting for acknowledgement.
    var isIdle: Bool { get }
    /// When `tick` next has something to do.
    var nextTick: Int64 { get }
    /// Since when messages of ours have waited for the peer's acknowledgement without any of
    /// them being acknowledged; nil when none waits (or the mode has no acknowledgements).
    var unacknowledgedSince: Int64? { get }
    /// Sends every unacknowledged flow again under new numbers (a stalled sync's repair);
    /// returns how many.
    mutating func resendUnacknowledged() -> Int

    /// A flow of the internal cache was created or changed: its current state goes out.
    mutating func flowChanged(_ key: FlowKey, created: Bool)
    /// A flow left the internal cache: a DESTROY goes out.
    mutating func flowDestroyed(_ flow: Flow)
    /// Queues every given flow (a bulk send, or the answer to a peer's resync request).
    mutating func enqueueAll(_ keys: [FlowKey])
    /// An expectation of the internal cache was created or changed (`ExpectationSync`).
    mutating func expectationChanged(_ key: ExpectationKey, created: Bool)
    /// An expectation left the internal cache: a DESTROY goes out.
    mutating func expectationDestroyed(_ expectation: Expectation)
    /// Asks the peer for its whole internal cache.
    mutating func requestResync()
    /// Builds every queued message and hands each to `emit` in order; `current` returns a
    /// live flow of the internal cache. (Handed out one by one, not in an array: a bulk of a
    /// whole table is not copied through one.)
    /// `expectation` returns a live expectation of the internal cache.
    mutating func transmit(
        now: Int64, current: (FlowKey) -> Flow?, expectation: (ExpectationKey) -> Expectation?, emit: (SyncMessage) -> Void)
    /// Digests one message from the peer; replies are queued for the next `transmit`.
    mutating func receive(_ message: SyncMessage, now: Int64) -> [ModeAction]
    /// Timers (keep-alives, owed acknowledgements, ALARM's refresh). `internalCache` is what a
    /// refresh sends again. Returns a time (seconds, the caches' clock) before which external
    /// flows not refreshed expire, for a mode whose peer state is soft.
    mutating func tick(now: Int64, internalCache: FlowCache) -> Int64?
}

extension SyncMode {
    /// `transmit` for a node without expectations.
    public mutating func transmit(now: Int64, current: (FlowKey) -> Flow?, emit: (SyncMessage) -> Void) {
        transmit(now: now, current: current, expectation: { _ in nil }, emit: emit)
    }

    /// Every queued message, in an array (what the tests look at).
    public mutating func transmit(now: Int64, current: (FlowKey) -> Flow?) -> [SyncMessage] {
        var out: [SyncMessage] = []
        transmit(now: now, current: current) { out.append($0) }
        return out
    }

    /// `receive`, and whether the message was dropped as out of window or old (FTFW's
    /// `outOfWindow` and `before` counters). One mutating access: the node's `mode!.receive`
    /// between two reads of `mode!.counters` copied the whole mode at every message (a read
    /// through the optional existential kept its box shared when the mutation came).
    public mutating func receiveNoting(_ message: SyncMessage, now: Int64) -> (actions: [ModeAction], dropped: Bool) {
        let before = counters.outOfWindow &+ counters.before
        let actions = receive(message, now: now)
        return (actions, counters.outOfWindow &+ counters.before != before)
    }

    public var unacknowledgedSince: Int64? { nil }
    public mutating func resendUnacknowledged() -> Int { 0 }
}

extension SyncMessage.Body {
    /// An expectation message, in conntrackd's attributes.
    static func expectation(_ kind: FlowMessageKind, _ e: Expectation) -> SyncMessage.Body {
        .expectation(ExpectationMessage(kind: kind, attributes: ExpectationCodec.attributes(e)))
    }
}
