import FlowModel
import SyncProtocol

/// conntrackd's NOTRACK mode (`sync-notrack.c`): best effort. Every change goes out once with
/// FTFW's numbering; nothing waits for acknowledgement, so a lost message stays lost (counted
/// from the gaps in the peer's numbers). Resync requests and bulk sends work as in FTFW; an
/// ALIVE goes out after a second without sending.
public struct NotrackMode: SyncMode {
    public var name: String { "NOTRACK" }
    private var queue: SendOnceQueue
    public let aliveIntervalMilliseconds: Int64

    public init(initialSequence: UInt32, aliveIntervalMilliseconds: Int64 = 1000, now: Int64) {
        queue = SendOnceQueue(initialSequence: initialSequence, now: now)
        self.aliveIntervalMilliseconds = aliveIntervalMilliseconds
    }

    public var counters: SyncCounters { queue.counters }
    public var resendQueueLength: Int { 0 }
    public var transmitQueueLength: Int { queue.count }
    public var isIdle: Bool { queue.isIdle }
    public var nextTick: Int64 { queue.lastTransmit + aliveIntervalMilliseconds }

    public mutating func flowChanged(_ key: FlowKey, created: Bool) { queue.flowChanged(key, created: created) }
    public mutating func flowDestroyed(_ flow: Flow) { queue.flowDestroyed(flow) }
    public mutating func enqueueAll(_ keys: [FlowKey]) { for key in keys { queue.enqueue(key) } }
    public mutating func requestResync() { queue.append(.resync) }
    public mutating func expectationChanged(_ key: ExpectationKey, created: Bool) { queue.expectationChanged(key, created: created) }
    public mutating func expectationDestroyed(_ expectation: Expectation) { queue.expectationDestroyed(expectation) }

    public mutating func transmit(
        now: Int64, current: (FlowKey) -> Flow?, expectation: (ExpectationKey) -> Expectation?, emit: (SyncMessage) -> Void
    ) {
        queue.transmit(now: now, current: current, expectation: expectation, emit: emit)
    }

    public mutating func receive(_ message: SyncMessage, now: Int64) -> [ModeAction] { queue.receive(message) }

    public mutating func tick(now: Int64, internalCache: FlowCache) -> Int64? {
        if now >= nextTick && queue.count == 0 { queue.append(.alive) }
        return nil
    }
}
