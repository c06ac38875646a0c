import FlowModel

/// A cached expectation and when it entered and last changed (seconds, the caller's clock).
public struct ExpectationEntry: Sendable, Equatable {
    public var expectation: Expectation
    public var since: Int64
    public var lastUpdate: Int64

    public init(expectation: Expectation, since: Int64, lastUpdate: Int64) {
        self.expectation = expectation
        self.since = since
        self.lastUpdate = lastUpdate
    }
}

/// What a change to an expectation cache did.
public enum ExpectationChange: Sendable, Equatable {
    case created(ExpectationKey)
    case updated(ExpectationKey)
    case destroyed(Expectation)
    /// Refused: the cache is at its limit.
    case rejected(ExpectationKey)
    case none
}

/// The expectations of one side (the kernel's, or the peer's), keyed by expected tuple, mask,
/// master and zone, with a size limit and conntrackd's counters (`-s expect`). Expectations are
/// few (one per FTP data connection announced, per SIP media stream), so a dictionary does:
/// the flow caches' compact storage is not needed here.
public struct ExpectationCache: Sendable {
    public private(set) var table: [ExpectationKey: ExpectationEntry] = [:]
    public let limit: Int
    public private(set) var counters = CacheCounters()

    public init(limit: Int) { self.limit = max(0, limit) }

    public var count: Int { table.count }
    public var keys: [ExpectationKey] { Array(table.keys) }
    /// Every entry, oldest first (a stable order for dumps and commits).
    public var entries: [ExpectationEntry] { table.values.sorted { ($0.since, $0.lastUpdate) < ($1.since, $1.lastUpdate) } }
    public subscript(key: ExpectationKey) -> ExpectationEntry? { table[key] }

    /// Stores an expectation (an event, a dump entry or the peer's message): replaces one with
    /// the same key.
    @discardableResult
    public mutating func store(_ expectation: Expectation, now: Int64) -> ExpectationChange {
        let key = expectation.key
        if var entry = table[key] {
            entry.expectation = expectation
            entry.lastUpdate = now
            table[key] = entry
            counters.updated += 1
            return .updated(key)
        }
        guard table.count < limit else {
            counters.noSpace += 1
            counters.createFailed += 1
            return .rejected(key)
        }
        table[key] = ExpectationEntry(expectation: expectation, since: now, lastUpdate: now)
        counters.created += 1
        return .created(key)
    }

    /// Removes the expectation with this one's key, if held.
    @discardableResult
    public mutating func remove(_ expectation: Expectation) -> ExpectationChange { remove(key: expectation.key) }

    @discardableResult
    public mutating func remove(key: ExpectationKey) -> ExpectationChange {
        guard let entry = table.removeValue(forKey: key) else {
            counters.destroyFailed += 1
            return .none
        }
        counters.destroyed += 1
        return .destroyed(entry.expectation)
    }

    /// Empties the cache; returns how many went.
    public mutating func flush() -> Int {
        let n = table.count
        table.removeAll()
        return n
    }

    /// What a resync with a dump changes: the expectations the dump adds, changes and removes.
    public struct ResyncResult: Sendable, Equatable {
        public var added: [ExpectationKey] = []
        public var changed: [ExpectationKey] = []
        public var removed: [Expectation] = []
    }

    /// Makes the cache equal to a dump (the expectations `accepts` takes): after it the keys are
    /// the dump's.
    public mutating func resync(with dump: [Expectation], now: Int64, accepts: (Expectation) -> Bool) -> ResyncResult {
        var result = ResyncResult()
        var present = Set<ExpectationKey>()
        for e in dump where accepts(e) {
            let key = e.key
            present.insert(key)
            if let old = table[key] {
                // The timeout ticks down: a changed timeout alone is no change.
                var a = old.expectation
                var b = e
                a.timeout = nil
                b.timeout = nil
                if a != b {
                    store(e, now: now)
                    result.changed.append(key)
                } else {
                    table[key]?.expectation = e
                }
            } else if case .created = store(e, now: now) {
                result.added.append(key)
            }
        }
        for key in Array(table.keys) where !present.contains(key) {
            if case .destroyed(let e) = remove(key: key) { result.removed.append(e) }
        }
        return result
    }
}
