import FlowModel
import SyncProtocol

/// The sending and receiving half NOTRACK and ALARM share: conntrackd's numbering and messages,
/// every change sent once and then forgotten (no resend queue, no ACK, NACK or hello); received
/// numbers only feed the loss statistics. A flow changed several times before the next
/// `transmit` goes out once, in its latest state.
struct SendOnceQueue: Sendable {
    private var nextSequence: UInt32
    private var queue: [Item] = []
    private var queued: Set<FlowKey> = []
    /// Flows created since they were last sent (sent as NEW, else UPDATE).
    private var fresh: Set<FlowKey> = []
    /// Destroyed flows whose DESTROY is not sent yet.
    private var tombstones: [FlowKey: Flow] = [:]
    /// The same for expectations (`ExpectationSync`): few, kept apart from the flows' hot path.
    private var queuedExpectations: Set<ExpectationKey> = []
    private var freshExpectations: Set<ExpectationKey> = []
    private var expectationTombstones: [ExpectationKey: Expectation] = [:]
    private var lastReceived: UInt32?
    private(set) var lastTransmit: Int64
    var counters = SyncCounters()

    enum Item: Hashable, Sendable {
        case flow(FlowKey)
        case expectation(ExpectationKey)
        case resync
        case alive
    }

    init(initialSequence: UInt32, now: Int64) {
        nextSequence = initialSequence
        lastTransmit = now
    }

    var count: Int { queue.count }
    var isIdle: Bool { queued.isEmpty && queuedExpectations.isEmpty }

    mutating func expectationChanged(_ key: ExpectationKey, created: Bool) {
        expectationTombstones.removeValue(forKey: key)
        if created { freshExpectations.insert(key) }
        enqueueExpectation(key)
    }

    mutating func expectationDestroyed(_ expectation: Expectation) {
        let key = expectation.key
        freshExpectations.remove(key)
        expectationTombstones[key] = expectation
        enqueueExpectation(key)
    }

    private mutating func enqueueExpectation(_ key: ExpectationKey) {
        if queuedExpectations.insert(key).inserted {
            queue.append(.expectation(key))
        } else {
            counters.coalesced &+= 1
        }
    }

    mutating func flowChanged(_ key: FlowKey, created: Bool) {
        tombstones.removeValue(forKey: key)
        if created { fresh.insert(key) }
        enqueue(key)
    }

    mutating func flowDestroyed(_ flow: Flow) {
        fresh.remove(flow.key)
        tombstones[flow.key] = flow
        enqueue(flow.key)
    }

    mutating func enqueue(_ key: FlowKey) {
        if queued.insert(key).inserted {
            queue.append(.flow(key))
        } else {
            counters.coalesced &+= 1
        }
    }

    mutating func append(_ item: Item) {
        if case .resync = item { counters.resyncsRequested += 1 }
        queue.append(item)
    }

    mutating func transmit(
        now: Int64, current: (FlowKey) -> Flow?, expectation: (ExpectationKey) -> Expectation?, emit: (SyncMessage) -> Void
    ) {
        guard !queue.isEmpty else { return }
        var sent = 0
        for item in queue {
            let body: SyncMessage.Body
            switch item {
            case .flow(let key):
                if let flow = current(key) {
                    body = .flow(fresh.remove(key) != nil ? .new : .update, flow)
                } else if let dead = tombstones.removeValue(forKey: key) {
                    body = .flow(.destroy, dead)
                } else {
                    continue  // gone and already announced
                }
            case .expectation(let key):
                if let live = expectation(key) {
                    body = .expectation(freshExpectations.remove(key) != nil ? .new : .update, live)
                } else if let dead = expectationTombstones.removeValue(forKey: key) {
                    body = .expectation(.destroy, dead)
                } else {
                    continue
                }
            case .resync: body = .resync
            case .alive: body = .alive
            }
            emit(SyncMessage(sequence: nextSequence, body: body))
            sent += 1
            nextSequence &+= 1
        }
        queue.removeAll(keepingCapacity: true)
        queued.removeAll(keepingCapacity: true)
        queuedExpectations.removeAll()
        counters.sent &+= sent
        lastTransmit = now
    }

    /// Data is applied whatever its number (numbers only count losses); a resync request is
    /// answered; ACK and NACK are not part of these modes (counted as malformed).
    mutating func receive(_ message: SyncMessage) -> [ModeAction] {
        counters.received &+= 1
        var actions: [ModeAction] = []
        switch message.body {
        case .ack, .nack:
            counters.malformed += 1
            return actions
        case .flow(let kind, let flow):
            actions.append(.apply(kind, flow))
        case .resync:
            actions.append(.bulkRequested)
        case .expectation(let m):
            actions.append(.applyExpectation(m))
        case .alive:
            break
        }
        if let last = lastReceived {
            let expected = last &+ 1
            if SequenceNumber.after(message.sequence, expected) {
                counters.lost &+= Int(message.sequence &- expected)
            } else if SequenceNumber.before(message.sequence, expected) {
                counters.before &+= 1
            }
        }
        lastReceived = message.sequence
        return actions
    }
}
