import FlowModel
import SyncProtocol

/// conntrackd's FTFW mode (`sync-ftfw.c`): reliable replication, as a pure state machine driven
/// by local flow changes, received messages and `tick`. No sockets, no clock, no randomness.
///
/// Sending: every message takes the next sequence number. Flow messages are built at send time
/// from the flow's *current* state (a retransmission never resends a stale copy), and wait in the
/// resend queue until acknowledged; NACKed ranges go out again with new numbers. Receiving: gaps
/// are answered with a NACK, in-order messages are acknowledged every `windowSize` messages or
/// after a second of silence. A hello (on a restart) resets both sides' reliability state.
public struct FTFWMode: SyncMode {
    public var name: String { "FTFW" }
    public let windowSize: Int
    public let resendQueueLimit: Int
    /// Silence after which an ACK (if owed) or an ALIVE goes out, milliseconds.
    public let aliveIntervalMilliseconds: Int64

    enum Control: Hashable, Sendable {
        case ack(UInt32, UInt32)
        case nack(UInt32, UInt32)
        case resync
        case alive
    }
    enum Item: Hashable, Sendable {
        case flow(FlowKey)
        /// An expectation (`ExpectationSync`): built, sent and resent as a flow is.
        case expectation(ExpectationKey)
        case control(Control)
        /// A control message sent again under a new number: nothing left to wait for.
        case hole
    }

    // Sending side.
    private var nextSequence: UInt32
    private var txQueue: [Item] = []
    /// The flows in `txQueue`, each with whether it was created since it was last sent (it then
    /// goes as NEW, else as UPDATE): one map, one hash operation per queued change.
    private var txFlows: [FlowKey: Bool] = [:]
    /// Sent and not yet acknowledged, in sequence order.
    private var resendQueue: [(sequence: UInt32, item: Item)] = []
    private var resendHead = 0
    private var resendFlows: [FlowKey: UInt32] = [:]
    /// Destroyed flows whose DESTROY is not acknowledged yet.
    private var tombstones: [FlowKey: Flow] = [:]
    /// The same three for expectations: few, kept apart from the flows' hot path.
    private var txExpectations: [ExpectationKey: Bool] = [:]
    private var resendExpectations: [ExpectationKey: UInt32] = [:]
    private var expectationTombstones: [ExpectationKey: Expectation] = [:]
    private enum Hello { case initial, saying, done }
    private var hello = Hello.initial
    private var sayHelloBack = false
    /// The peer's messages carry hello (it has not seen our hello-back yet).
    private var peerSaysHello = false
    private var lastTransmit: Int64

    /// Control messages waiting in `txQueue`, by position, so that a flood (while the link
    /// cannot send, messages opening gaps queued an ACK and a NACK each, without bound) cannot
    /// grow it: beyond `pendingControlLimit` ACKs the oldest gives way (a missing ACK only makes
    /// the peer resend), beyond as many NACKs the newest merges into the last one (a wider NACK
    /// only resends duplicates), and one RESYNC request waits at a time. A normal turn of the
    /// loop queues far fewer, so precise ACKs and NACKs are kept then.
    private var pendingAcks: [Int] = []
    private var pendingNacks: [Int] = []
    private var pendingResync = false
    private var holes = 0
    static let pendingControlLimit = 64

    // Receiving side.
    private var lastReceived: UInt32?
    /// Messages that do not follow (far outside the receive window, or older than expected):
    /// the last one's number, how many came in a row, each a little after the previous one, and
    /// since when. A run of `adoptionRun` lasting `adoptionMilliseconds` is a peer that really
    /// numbers there (it renumbered without a HELLO we saw, or forged messages moved our
    /// numbering away from it): its numbering is adopted and its table asked for again. Anything
    /// less is dropped: a forged message cannot move the numbering for good.
    private var strangerLast: UInt32?
    private var strangerRun = 0
    private var strangerSince: Int64 = 0
    static let receiveWindow: UInt32 = 1 << 20
    static let adoptionRun = 8
    /// The run must last this long: duplicated datagrams (a burst of old numbers) never do, a
    /// live peer (an ALIVE a second at least) always does.
    static let adoptionMilliseconds: Int64 = 1500
    private var ackFrom: UInt32 = 0
    private var ackPending = false
    private var window: Int

    public private(set) var counters = SyncCounters()

    /// Messages the peer's NACKs may have sent again in the current second: a resend queue's
    /// worth, so that a flood of NACKs (forged, or a peer gone wrong) costs at most what one
    /// real loss of everything in flight would, not that much per NACK. What a NACK asks for
    /// past the budget is not lost: the peer's next ACK, past it, has it sent again.
    private var nackBudget: Int
    private var nackBudgetSince: Int64
    /// When the resend queue last made progress (an acknowledgement released something, or it
    /// was empty when something was put in), and the time of the message being received.
    private var ackProgressAt: Int64 = 0
    private var receivedAt: Int64 = 0

    public var unacknowledgedSince: Int64? { resendQueueLength > 0 ? ackProgressAt : nil }

    public mutating func resendUnacknowledged() -> Int {
        var count = 0
        for entry in resendQueue[resendHead...] {
            if case .flow(let key) = entry.item, resendFlows[key] == entry.sequence {
                enqueue(key)
                count += 1
            } else if case .expectation(let key) = entry.item, resendExpectations[key] == entry.sequence {
                enqueueExpectation(key)
                count += 1
            }
        }
        // The wait goes on counting until an acknowledgement makes progress: health keeps
        // saying so while the stall lasts.
        return count
    }

    public init(
        initialSequence: UInt32, windowSize: Int = 300, resendQueueLimit: Int = 131_072, aliveIntervalMilliseconds: Int64 = 1000, now: Int64
    ) {
        self.windowSize = max(1, windowSize)
        self.resendQueueLimit = max(1, resendQueueLimit)
        self.aliveIntervalMilliseconds = aliveIntervalMilliseconds
        nextSequence = initialSequence
        window = self.windowSize
        // The first keep-alive (with HELLO) goes at the first tick, not a second later: a
        // restarted node's peer learns of the restart, and sends its table, that much sooner.
        lastTransmit = now - aliveIntervalMilliseconds
        nackBudget = self.resendQueueLimit
        nackBudgetSince = now
    }

    /// Messages waiting for acknowledgement.
    public var resendQueueLength: Int { resendQueue.count - resendHead }
    /// Flows and control messages waiting to be sent.
    public var transmitQueueLength: Int { txQueue.count - holes }
    /// True when no flow message is queued or waiting for acknowledgement (control messages
    /// may be: idle peers acknowledge each other's acknowledgements forever).
    public var isIdle: Bool { txFlows.isEmpty && resendFlows.isEmpty && txExpectations.isEmpty && resendExpectations.isEmpty }

    // MARK: - Local changes

    /// A flow of the internal cache was created or changed: its current state goes out.
    public mutating func flowChanged(_ key: FlowKey, created: Bool) {
        if !tombstones.isEmpty { tombstones.removeValue(forKey: key) }
        enqueue(key, created: created)
    }

    /// A flow left the internal cache: a DESTROY goes out (and is retransmitted until acked).
    public mutating func flowDestroyed(_ flow: Flow) {
        let key = flow.key
        tombstones[key] = flow
        // Not created any more: if it comes back before the next send, it is new again then.
        if txFlows.updateValue(false, forKey: key) == nil {
            txQueue.append(.flow(key))
        } else {
            counters.coalesced &+= 1
        }
    }

    public mutating func expectationChanged(_ key: ExpectationKey, created: Bool) {
        expectationTombstones.removeValue(forKey: key)
        enqueueExpectation(key, created: created)
    }

    public mutating func expectationDestroyed(_ expectation: Expectation) {
        let key = expectation.key
        expectationTombstones[key] = expectation
        if txExpectations.updateValue(false, forKey: key) == nil { txQueue.append(.expectation(key)) }
    }

    private mutating func enqueueExpectation(_ key: ExpectationKey, created: Bool = false) {
        if let wasCreated = txExpectations.updateValue(created, forKey: key) {
            if wasCreated && !created { txExpectations[key] = true }
            counters.coalesced &+= 1
        } else {
            txQueue.append(.expectation(key))
        }
    }

    /// Queues every given flow (a bulk send, or the answer to a peer's resync request).
    public mutating func enqueueAll(_ keys: [FlowKey]) {
        for key in keys { enqueue(key) }
    }

    /// Asks the peer for its whole internal cache.
    public mutating func requestResync() {
        counters.resyncsRequested &+= 1
        queueResync()
    }

    private mutating func queueResync() {
        guard !pendingResync else { return }
        pendingResync = true
        txQueue.append(.control(.resync))
    }

    private mutating func queueAck(_ from: UInt32, _ to: UInt32) {
        if pendingAcks.count >= Self.pendingControlLimit {
            txQueue[pendingAcks.removeFirst()] = .hole
            holes += 1
        }
        pendingAcks.append(txQueue.count)
        txQueue.append(.control(.ack(from, to)))
    }

    private mutating func queueNack(_ from: UInt32, _ to: UInt32) {
        if pendingNacks.count >= Self.pendingControlLimit, let index = pendingNacks.last,
            case .control(.nack(let oldFrom, let oldTo)) = txQueue[index]
        {
            let start = SequenceNumber.before(oldFrom, from) ? oldFrom : from
            let end = SequenceNumber.after(oldTo, to) ? oldTo : to
            txQueue[index] = .control(.nack(start, end))
            return
        }
        pendingNacks.append(txQueue.count)
        txQueue.append(.control(.nack(from, to)))
    }

    private mutating func enqueue(_ key: FlowKey, created: Bool = false) {
        if let wasCreated = txFlows.updateValue(created, forKey: key) {
            if wasCreated && !created { txFlows[key] = true }
            counters.coalesced &+= 1
        } else {
            txQueue.append(.flow(key))
        }
    }

    // MARK: - Sending

    /// Builds every queued message. `current` returns a live flow of the internal cache.
    public mutating func transmit(
        now: Int64, current: (FlowKey) -> Flow?, expectation: (ExpectationKey) -> Expectation?, emit: (SyncMessage) -> Void
    ) {
        housekeeping(now: now)
        guard !txQueue.isEmpty else { return }
        lastTransmit = now
        var sent = 0
        // Swapped out, not copied: `removeAll(keepingCapacity:)` on a shared buffer would
        // allocate a new one of the queue's largest size at every transmit.
        var items: [Item] = []
        swap(&items, &txQueue)
        defer {
            if txQueue.isEmpty {
                items.removeAll(keepingCapacity: true)
                txQueue = items
            }
        }
        // Swapped out as well: what is queued from now on is queued for the next transmit.
        var queuedFlows: [FlowKey: Bool] = [:]
        swap(&queuedFlows, &txFlows)
        defer {
            if txFlows.isEmpty {
                queuedFlows.removeAll(keepingCapacity: true)
                txFlows = queuedFlows
            }
        }
        let queuedExpectations = txExpectations
        if !txExpectations.isEmpty { txExpectations = [:] }
        pendingAcks.removeAll(keepingCapacity: true)
        pendingNacks.removeAll(keepingCapacity: true)
        pendingResync = false
        holes = 0
        for item in items {
            switch item {
            case .flow(let key):
                let body: SyncMessage.Body
                if let flow = current(key) {
                    body = .flow(queuedFlows[key] == true ? .new : .update, flow)
                } else if let dead = tombstones[key] {
                    body = .flow(.destroy, dead)
                } else {
                    resendFlows.removeValue(forKey: key)
                    continue  // gone and already announced
                }
                let sequence = take()
                emit(SyncMessage(sequence: sequence, hello: helloFlags(), body: body))
                sent += 1
                remember(sequence, .flow(key))
            case .expectation(let key):
                let body: SyncMessage.Body
                if let live = expectation(key) {
                    body = .expectation(queuedExpectations[key] == true ? .new : .update, live)
                } else if let dead = expectationTombstones[key] {
                    body = .expectation(.destroy, dead)
                } else {
                    resendExpectations.removeValue(forKey: key)
                    continue
                }
                let sequence = take()
                emit(SyncMessage(sequence: sequence, hello: helloFlags(), body: body))
                sent += 1
                remember(sequence, .expectation(key))
            case .control(let control):
                let sequence = take()
                let body: SyncMessage.Body
                switch control {
                case .ack(let from, let to):
                    body = .ack(from: from, to: to)
                    counters.acksSent += 1
                case .nack(let from, let to):
                    body = .nack(from: from, to: to)
                    counters.nacksSent += 1
                case .resync: body = .resync
                case .alive: body = .alive
                }
                emit(SyncMessage(sequence: sequence, hello: helloFlags(), body: body))
                sent += 1
                // Only a resync request waits for its acknowledgement. An ACK or NACK lost on
                // the way is made good by the next ACK (which acknowledges past what it missed,
                // and we resend that); kept in the resend queue, a flood of them (forged gaps)
                // evicted real flows waiting there.
                if control == .resync { remember(sequence, item) }
            case .hole:
                break
            }
        }
        counters.sent &+= sent
    }

    private mutating func take() -> UInt32 {
        let s = nextSequence
        nextSequence &+= 1
        return s
    }

    private mutating func helloFlags() -> MessageFlags {
        var flags: MessageFlags = []
        if hello == .initial { hello = .saying }
        if hello == .saying { flags.insert(.hello) }
        if sayHelloBack {
            flags.insert(.helloBack)
            sayHelloBack = false
        }
        return flags
    }

    private mutating func remember(_ sequence: UInt32, _ item: Item) {
        if resendQueueLength == 0 { ackProgressAt = lastTransmit }
        if resendQueueLength >= resendQueueLimit {
            // Full: the oldest unacknowledged message is given up (its loss can no longer be repaired).
            counters.resendQueueOverflows += 1
            dropOldest()
        }
        resendQueue.append((sequence, item))
        // A newer message for the flow supersedes the one waiting in the resend queue: that
        // entry becomes a hole (`release` skips it).
        if case .flow(let key) = item, resendFlows.updateValue(sequence, forKey: key) != nil { counters.retransmitted += 1 }
        if case .expectation(let key) = item, resendExpectations.updateValue(sequence, forKey: key) != nil { counters.retransmitted += 1 }
    }

    private mutating func dropOldest() {
        while resendHead < resendQueue.count {
            let entry = resendQueue[resendHead]
            resendHead += 1
            if release(entry) { break }
        }
        compact()
    }

    /// Forgets a resend-queue entry; false if it was already a hole.
    private mutating func release(_ entry: (sequence: UInt32, item: Item)) -> Bool {
        switch entry.item {
        case .flow(let key):
            guard let index = resendFlows.index(forKey: key), resendFlows.values[index] == entry.sequence else { return false }
            resendFlows.remove(at: index)
            if !tombstones.isEmpty && txFlows[key] == nil { tombstones.removeValue(forKey: key) }
            return true
        case .expectation(let key):
            guard let sequence = resendExpectations[key], sequence == entry.sequence else { return false }
            resendExpectations.removeValue(forKey: key)
            if txExpectations[key] == nil { expectationTombstones.removeValue(forKey: key) }
            return true
        case .control:
            return true
        case .hole:
            return false
        }
    }

    private mutating func compact() {
        if resendHead > 4096 && resendHead * 2 > resendQueue.count {
            resendQueue.removeFirst(resendHead)
            resendHead = 0
        }
    }

    // MARK: - Receiving

    /// Digests one message from the peer. Returns what the daemon must do; replies (ACK, NACK,
    /// data for a resync) are queued for the next `transmit`.
    public mutating func receive(_ message: SyncMessage, now: Int64) -> [ModeAction] {
        counters.received &+= 1
        receivedAt = now
        housekeeping(now: now)
        var actions: [ModeAction] = []
        let sequence = message.sequence
        if message.hello.contains(.hello) { sayHelloBack = true }
        if message.hello.contains(.helloBack) && hello == .saying { hello = .done }

        var inSync = true
        if message.hello.contains(.hello) && isRestart(sequence) {
            // The peer (re)started: adopt its numbering (its first message is accepted whatever its
            // number), and send again what it can no longer acknowledge. conntrackd drops those
            // messages and skips gap detection for as long as the peer says hello; ctsync resends
            // them and checks every later message, so nothing sent around a restart is lost.
            peerSaysHello = true
            if lastReceived != nil {
                counters.peerRestarts += 1
                actions.append(.peerRestarted)
            }
            // Acknowledgements owed to the old numbering mean nothing to the new one (a range
            // from an old number would cover new messages never received): start afresh.
            ackPending = false
            window = windowSize
            let unacknowledged = resendQueue[resendHead...]
            resendQueue = []
            resendHead = 0
            for entry in unacknowledged {
                if case .flow(let key) = entry.item, resendFlows[key] == entry.sequence {
                    resendFlows.removeValue(forKey: key)
                    enqueue(key)
                } else if case .expectation(let key) = entry.item, resendExpectations[key] == entry.sequence {
                    resendExpectations.removeValue(forKey: key)
                    enqueueExpectation(key)
                }
            }
        } else if let last = lastReceived {
            if !message.hello.contains(.hello) { peerSaysHello = false }
            let expected = last &+ 1
            let ahead = sequence &- expected
            let far = ahead > Self.receiveWindow && expected &- sequence > Self.receiveWindow
            if far || SequenceNumber.before(sequence, expected) {
                // Far outside the window, either way, or old: one message (forged, or a stray
                // from another pair on the link) must not move the numbering, and old numbers
                // are duplicates, unless they keep coming from a live sender.
                if !adoptStranger(sequence, now: now) {
                    if far { counters.outOfWindow &+= 1 } else { counters.before &+= 1 }
                    return actions
                }
                // A run of them: the peer numbers there now. Its earlier messages were dropped,
                // so its whole table is asked for again.
                counters.numberingsAdopted &+= 1
                ackPending = false
                window = windowSize
                requestResync()
                actions.append(.numberingAdopted)
                lastReceived = sequence &- 1
                counters.received &-= 1  // counted again below
                return actions + receive(message, now: now)
            }
            strangerRun = 0
            if sequence == expected {
                inSync = true
            } else {
                inSync = false
                if !digest(message, into: &actions) { return actions }
                if ackPending { queueAck(ackFrom, expected &- 1) }
                queueNack(expected, sequence &- 1)
                counters.lost &+= Int(sequence &- expected)
                window = windowSize - 1
                ackFrom = sequence
                ackPending = true
                lastReceived = sequence
                return actions
            }
        }
        if inSync {
            if !digest(message, into: &actions) { return actions }
            if !ackPending {
                ackFrom = sequence
                ackPending = true
            }
            window -= 1
            if window <= 0 {
                queueAck(ackFrom, sequence)
                window = windowSize
                ackPending = false
            }
            lastReceived = sequence
        }
        return actions
    }

    /// Counts a message that does not follow; true once `adoptionRun` have come in a row, each
    /// at most 64 after the previous one, over `adoptionMilliseconds` at least.
    private mutating func adoptStranger(_ sequence: UInt32, now: Int64) -> Bool {
        if let last = strangerLast, SequenceNumber.after(sequence, last), sequence &- last <= 64, strangerRun > 0 {
            strangerRun += 1
        } else {
            strangerRun = 1
            strangerSince = now
        }
        strangerLast = sequence
        guard strangerRun >= Self.adoptionRun, now - strangerSince >= Self.adoptionMilliseconds else { return false }
        strangerRun = 0
        strangerLast = nil
        return true
    }

    /// A hello starts a new numbering when it is the first, or when its number does not follow
    /// ours (a peer that restarted again before finishing its hello, numbered from its clock).
    private func isRestart(_ sequence: UInt32) -> Bool {
        guard peerSaysHello, let last = lastReceived else { return true }
        let expected = last &+ 1
        return SequenceNumber.before(sequence, expected) || sequence &- expected > 1 << 24
    }

    /// Applies a message's meaning; false for a malformed one (no sequence bookkeeping then).
    private mutating func digest(_ message: SyncMessage, into actions: inout [ModeAction]) -> Bool {
        switch message.body {
        case .flow(let kind, let flow):
            actions.append(.apply(kind, flow))
        case .expectation(let m):
            actions.append(.applyExpectation(m))
        case .ack(let from, let to):
            // An acknowledgement covers only what was sent: a range ending after our last
            // message (forged, or another pair's) releases nothing.
            guard !SequenceNumber.before(to, from), !SequenceNumber.after(to, nextSequence &- 1) else {
                counters.malformed &+= 1
                return false
            }
            if acknowledge(from: from, to: to) { actions.append(.resyncAcknowledged) }
        case .nack(let from, let to):
            guard !SequenceNumber.before(to, from), !SequenceNumber.after(to, nextSequence &- 1) else {
                counters.malformed &+= 1
                return false
            }
            counters.nacksReceived &+= 1
            retransmit(from: from, to: to)
        case .resync:
            actions.append(.bulkRequested)
        case .alive:
            break
        }
        return true
    }

    // The resend queue is in sequence order, so an ACK or NACK only walks its head, up to `to`:
    // O(range), not O(queue), which matters with 100k messages in flight.

    /// Releases what the peer acknowledged; true when that included a resync request of ours.
    private mutating func acknowledge(from: UInt32, to: UInt32) -> Bool {
        var resyncAcknowledged = false
        var index = resendHead
        while index < resendQueue.count, !SequenceNumber.after(resendQueue[index].sequence, to) {
            let entry = resendQueue[index]
            if SequenceNumber.before(entry.sequence, from) {
                // The peer acknowledges past this message without having acknowledged or asked
                // for it: it never saw it (it was lost before the peer started counting, e.g.
                // around a restart). conntrackd leaves such messages waiting forever; ctsync sends
                // the flow again (its current state) and drops stale acknowledgements.
                // A resync request lost that way is asked again: without it the restarted
                // peer would never get our table.
                switch entry.item {
                case .flow(let key) where resendFlows[key] == entry.sequence: enqueue(key)
                case .expectation(let key) where resendExpectations[key] == entry.sequence: enqueueExpectation(key)
                case .control(.resync): queueResync()
                default: break
                }
            } else {
                if case .control(.resync) = entry.item { resyncAcknowledged = true }
                _ = release(entry)
            }
            index += 1
        }
        if index > resendHead { ackProgressAt = receivedAt }
        resendHead = index
        compact()
        return resyncAcknowledged
    }

    private mutating func retransmit(from: UInt32, to: UInt32) {
        var index = resendHead
        while index < resendQueue.count, !SequenceNumber.after(resendQueue[index].sequence, to) {
            let entry = resendQueue[index]
            if SequenceNumber.between(entry.sequence, from, to), entry.item != .hole {
                guard nackBudget > 0 else {
                    counters.nacksLimited &+= 1
                    return
                }
                nackBudget -= 1
                switch entry.item {
                case .flow(let key):
                    // Sent again with its current state; this entry becomes a hole at transmit.
                    if resendFlows[key] == entry.sequence { enqueue(key) }
                case .expectation(let key):
                    if resendExpectations[key] == entry.sequence { enqueueExpectation(key) }
                case .control(let control):
                    txQueue.append(.control(control))
                    resendQueue[index].item = .hole
                case .hole:
                    break
                }
            }
            index += 1
        }
    }

    // MARK: - Time

    /// After a second without sending: acknowledge what is owed, or say we are alive.
    public mutating func tick(now: Int64, internalCache: FlowCache) -> Int64? {
        tick(now: now)
        return nil
    }

    /// After a second without sending: acknowledge what is owed, or say we are alive.
    public mutating func tick(now: Int64) {
        housekeeping(now: now)
        guard now - lastTransmit >= aliveIntervalMilliseconds, txQueue.isEmpty else { return }
        if ackPending, let last = lastReceived {
            queueAck(ackFrom, last)
            ackPending = false
            window = windowSize
        } else {
            txQueue.append(.control(.alive))
        }
    }

    /// Once a second, whatever drives the mode (a busy link never lets `tick` run): the NACK
    /// budget is refilled and spare capacity given back.
    private mutating func housekeeping(now: Int64) {
        guard now - nackBudgetSince >= 1000 else { return }
        nackBudget = resendQueueLimit
        nackBudgetSince = now
        releaseSpareCapacity()
    }

    /// Gives back what a burst left behind (a peer's restart makes us send and keep the whole
    /// table): a queue or set holding under a quarter of its capacity, and more than
    /// `spareCapacityFloor` of it, is rebuilt at twice its count. Swift's containers never
    /// shrink by themselves, so the daemon's resident set followed the largest burst it ever
    /// had (scripts/soak.sh). Runs at most once a second (`tick`); O(count) when it acts,
    /// which needs the count to have fallen to a quarter since the last time.
    mutating func releaseSpareCapacity() {
        func spare(_ count: Int, _ capacity: Int) -> Bool { capacity > Self.spareCapacityFloor && count * 4 < capacity }
        if spare(resendQueue.count - resendHead, resendQueue.capacity) {
            var kept: [(sequence: UInt32, item: Item)] = []
            kept.reserveCapacity(2 * (resendQueue.count - resendHead))
            kept.append(contentsOf: resendQueue[resendHead...])
            resendQueue = kept
            resendHead = 0
        }
        if spare(txQueue.count, txQueue.capacity) {
            var kept: [Item] = []
            kept.reserveCapacity(2 * txQueue.count)
            kept.append(contentsOf: txQueue)
            // Pending ACK/NACK positions stay valid: the order and the start do not change.
            txQueue = kept
        }
        if spare(resendFlows.count, resendFlows.capacity) { resendFlows = Self.rebuilt(resendFlows) }
        if spare(tombstones.count, tombstones.capacity) { tombstones = Self.rebuilt(tombstones) }
        if spare(txFlows.count, txFlows.capacity) { txFlows = Self.rebuilt(txFlows) }
    }

    static let spareCapacityFloor = 4096

    private static func rebuilt<V>(_ dictionary: [FlowKey: V]) -> [FlowKey: V] {
        var copy = [FlowKey: V](minimumCapacity: 2 * dictionary.count)
        for (key, value) in dictionary { copy[key] = value }
        return copy
    }

    /// For tests: capacities of the queues and sets, in entries.
    var capacities: [String: Int] {
        [
            "resendQueue": resendQueue.capacity, "txQueue": txQueue.capacity, "resendFlows": resendFlows.capacity,
            "tombstones": tombstones.capacity, "txFlows": txFlows.capacity,
        ]
    }

    /// For tests: what is waiting, in words.
    var debugState: String {
        "next=\(nextSequence) tx=\(txQueue.count) rs=\(resendQueue[resendHead...].map { "\($0.sequence):\($0.item)" }.prefix(8)) "
            + "flowsAwaitingAck=\(resendFlows.values.sorted().prefix(8)) lastReceived=\(lastReceived.map(String.init) ?? "-") "
            + "ackFrom=\(ackFrom) ackPending=\(ackPending) hello=\(hello) peerSaysHello=\(peerSaysHello)"
    }

    /// When `tick` next has something to do.
    public var nextTick: Int64 { lastTransmit + aliveIntervalMilliseconds }
}
