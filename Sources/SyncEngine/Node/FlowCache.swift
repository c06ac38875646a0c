import FlowModel

/// conntrackd's per-cache counters (`-s`: created/updated/destroyed, each with failures).
public struct CacheCounters: Sendable, Equatable {
    public var created = 0
    public var createFailed = 0
    public var updated = 0
    public var updateFailed = 0
    public var destroyed = 0
    public var destroyFailed = 0
    /// Creations refused because the cache held `HashLimit` flows already.
    public var noSpace = 0
    public init() {}
}

/// A cached flow and when it entered and last changed (seconds, the caller's clock).
public struct CacheEntry: Sendable, Equatable {
    public var flow: Flow
    public var since: Int64
    public var lastUpdate: Int64

    public init(flow: Flow, since: Int64, lastUpdate: Int64) {
        self.flow = flow
        self.since = since
        self.lastUpdate = lastUpdate
    }
}

/// What a change to the cache did, for the caller to act on (log, replicate).
public enum CacheChange: Sendable, Equatable {
    case created(FlowKey)
    case updated(FlowKey)
    case destroyed(Flow)
    /// Refused: the cache is at its limit.
    case rejected(FlowKey)
    /// Nothing to do (e.g. a destroy for an unknown flow).
    case none
}

/// A cache of flows keyed like the kernel (original tuple, protocol, ICMP identity, zone),
/// with a hard size limit and conntrackd's counters. Pure: no I/O, no clock (`now` is given).
///
/// Guarantee: after `resync(with:)` the set of keys equals the dump's, so replaying events
/// and resyncing after losses keeps it exactly equal to the kernel table.
public struct FlowCache: Sendable {
    private var table: FlowTable
    public let limit: Int
    public private(set) var counters = CacheCounters()
    /// Packets and bytes of flows that ended here (from their counters, when the kernel keeps them).
    public private(set) var trafficPackets: UInt64 = 0
    public private(set) var trafficBytes: UInt64 = 0

    public init(limit: Int, expectedCount: Int = 0) {
        self.limit = max(0, limit)
        table = FlowTable(capacity: min(max(expectedCount, 0), self.limit))
    }

    public var count: Int { table.count }
    /// Every entry, in storage order (holding it keeps this moment's entries: the cache copies
    /// its storage before it next changes).
    public var entries: CacheEntries { table.storage }
    public var flows: some Collection<Flow> { table.storage.lazy.map(\.flow) }
    public var keys: [FlowKey] { table.keys }

    /// A streamed walk over the entries (a dump written as the client reads it): an entry
    /// present from `openCursor` until the walk ends is handed out exactly once, whatever is
    /// stored or removed meanwhile; one stored or removed meanwhile may or may not be.
    public mutating func openCursor() -> Int { table.openCursor() }
    public mutating func closeCursor(_ id: Int) { table.closeCursor(id) }
    /// The next `limit` entries of the walk; false once it has reached the end.
    public mutating func advance(_ cursor: Int, limit: Int, _ body: (CacheEntry) -> Void) -> Bool {
        table.advance(cursor, limit: limit, body)
    }
    public var openCursors: Int { table.openCursors }
    public subscript(key: FlowKey) -> CacheEntry? { table[key] }

    /// Stores a complete flow (a NEW event or a dump entry): replaces any entry with the same key.
    @discardableResult
    public mutating func store(_ flow: Flow, now: Int64) -> CacheChange {
        // Counters and use are not stored (StoredFlow has no room for them): no need to strip.
        switch table.upsert(flow, now: now, limit: limit) {
        case .replaced:
            counters.updated += 1
            return .updated(flow.key)
        case .inserted:
            counters.created += 1
            return .created(flow.key)
        case .full:
            counters.createFailed += 1
            counters.noSpace += 1
            return .rejected(flow.key)
        }
    }

    /// Applies an UPDATE: merges what it carries into the cached flow, or stores it if unknown
    /// (an update for a flow we never saw, e.g. after a lost NEW, is still the kernel's truth).
    @discardableResult
    public mutating func update(_ flow: Flow, present: FlowAttributes, now: Int64) -> CacheChange {
        let key = flow.key
        guard var entry = table[key] else { return store(flow, now: now) }
        entry.flow = Self.stripped(entry.flow.merging(flow, present: present))
        entry.lastUpdate = now
        _ = table.replace(entry)
        counters.updated += 1
        return .updated(key)
    }

    /// Applies a DESTROY.
    @discardableResult
    public mutating func remove(_ flow: Flow) -> CacheChange {
        guard let old = table.remove(flow.key) else {
            counters.destroyFailed += 1
            return .none
        }
        return removed(old, flow)
    }

    private mutating func removed(_ old: CacheEntry, _ flow: Flow) -> CacheChange {
        counters.destroyed += 1
        if let c = flow.counters {
            trafficPackets &+= c.originalPackets &+ c.replyPackets
            trafficBytes &+= c.originalBytes &+ c.replyBytes
        }
        return .destroyed(old.flow)
    }

    /// Applies one kernel event; `accepts` is the configured filter (a flow that stops
    /// passing it, e.g. its mark changed, leaves the cache).
    @discardableResult
    public mutating func apply(_ event: FlowEvent, now: Int64, accepts: (Flow) -> Bool = { _ in true }) -> CacheChange {
        switch event {
        case .new(let flow):
            return accepts(flow) ? store(flow, now: now) : removeIfPresent(flow)
        case .update(let flow, let present):
            if let cached = table[flow.key] {
                let merged = cached.flow.merging(flow, present: present)
                return accepts(merged) ? update(flow, present: present, now: now) : removeIfPresent(flow)
            }
            return accepts(flow) ? store(flow, now: now) : .none
        case .destroy(let flow):
            guard let old = table.remove(flow.key) else { return .none }
            return removed(old, flow)
        case .overrun:
            return .none
        }
    }

    /// Removes the flow if the cache holds it (a flow the filter no longer accepts); an
    /// absent one is not a failure.
    public mutating func removeIfPresent(_ flow: Flow) -> CacheChange {
        guard let old = table.remove(flow.key) else { return .none }
        return removed(old, flow)
    }

    /// The difference a resync made.
    public struct ResyncResult: Sendable, Equatable {
        public var added: [FlowKey] = []
        public var updated = 0
        /// Flows whose state differs from what the cache held (a changed mark, TCP state, ...).
        public var changed: [FlowKey] = []
        /// Flows that were cached but are no longer in the kernel (ghosts removed).
        public var removed: [Flow] = []
        public var rejected = 0
    }

    /// Makes the cache equal to a full dump (of the accepted flows): adds what is missing,
    /// refreshes what is there, removes what the kernel no longer has.
    public mutating func resync<S: Sequence>(with dump: S, now: Int64, accepts: (Flow) -> Bool = { _ in true }) -> ResyncResult
    where S.Element == Flow {
        var result = ResyncResult()
        var seen = Set<FlowKey>(minimumCapacity: table.count)
        for flow in dump where accepts(flow) {
            seen.insert(flow.key)
            if let old = table[flow.key], !old.flow.sameState(as: flow) { result.changed.append(flow.key) }
            switch store(flow, now: now) {
            case .created(let key): result.added.append(key)
            case .updated: result.updated += 1
            case .rejected: result.rejected += 1
            default: break
            }
        }
        // The keys first, in a plain loop: a lazy view over the storage would keep it shared,
        // and the first removal would copy the whole cache.
        var gone: [FlowKey] = []
        for key in table.keys where !seen.contains(key) { gone.append(key) }
        for key in gone {
            if let entry = table.remove(key) {
                counters.destroyed += 1
                result.removed.append(entry.flow)
            }
        }
        return result
    }

    /// Empties the cache; returns how many flows it held.
    @discardableResult
    public mutating func flush() -> Int {
        let n = table.count
        table.removeAll()
        return n
    }

    /// Kernel-owned fields that change by themselves are not kept (as conntrackd strips them).
    static func stripped(_ flow: Flow) -> Flow {
        guard flow.use != nil || flow.counters != nil else { return flow }
        var f = flow
        f.use = nil
        f.counters = nil
        return f
    }
}
