import FlowModel
import SyncProtocol

/// conntrackd's ALARM mode (`sync-alarm.c`): soft state. Changes go out once as in NOTRACK, and
/// besides, once a second, the next slice of the internal cache goes out again, so that every
/// flow is sent once per `refreshTime`; the peer forgets the flows it has not heard of for
/// `cacheTimeout`. No ALIVE: the refresh is the sign of life. The slice walks the cache's dense
/// array, so there is no timer per flow (conntrackd keeps one alarm per flow).
public struct AlarmMode: SyncMode {
    public var name: String { "ALARM" }
    private var queue: SendOnceQueue
    public let refreshTime: Int
    public let cacheTimeout: Int
    private var nextRefresh: Int64
    /// Where the refresh is in the internal cache's entry array.
    private var refreshPosition = 0

    public init(initialSequence: UInt32, refreshTime: Int, cacheTimeout: Int, now: Int64) {
        queue = SendOnceQueue(initialSequence: initialSequence, now: now)
        self.refreshTime = max(1, refreshTime)
        self.cacheTimeout = max(1, cacheTimeout)
        nextRefresh = now + 1000
    }

    public var counters: SyncCounters { queue.counters }
    public var resendQueueLength: Int { 0 }
    public var transmitQueueLength: Int { queue.count }
    public var isIdle: Bool { queue.isIdle }
    public var nextTick: Int64 { nextRefresh }

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

    /// Once a second: the next slice of the internal cache goes out again; external flows not
    /// refreshed for `cacheTimeout` seconds expire.
    public mutating func tick(now: Int64, internalCache: FlowCache) -> Int64? {
        guard now >= nextRefresh else { return nil }
        nextRefresh = now + 1000
        let entries = internalCache.entries
        if !entries.isEmpty {
            let slice = (entries.count + refreshTime - 1) / refreshTime
            if refreshPosition >= entries.count { refreshPosition = 0 }
            let end = min(entries.count, refreshPosition + slice)
            for entry in entries[refreshPosition..<end] { queue.flowChanged(entry.flow.key, created: false) }
            refreshPosition = end
        }
        return now / 1000 - Int64(cacheTimeout)
    }
}
