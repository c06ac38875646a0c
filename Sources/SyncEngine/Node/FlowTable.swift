import FlowModel

/// The cache's storage: entries in one dense buffer of `StoredFlow` (128 bytes each, the rare
/// attributes apart), found through an open-addressing index of 32-bit positions (linear
/// probing, tombstones, power-of-two size, load ≤ 1/2).
///
/// Why not `Dictionary<FlowKey, CacheEntry>`: a dictionary stores each key next to its value
/// and spreads them over a table twice the size of its contents, so every page of it is
/// touched; measured at about 1 KiB of RSS per cached flow. Here the key is read from the
/// entry itself, the index costs 16-32 bytes per flow (a live load of 1/4 to 1/2), and the
/// dense buffer touches only the pages it fills. A store finds its key or its free slot in one
/// probe sequence.
struct FlowTable {
    private var buffer: FlowStorage
    private var slots: [Int32]
    private var mask: Int
    private var tombstones = 0
    /// Open cursors (streamed dumps) and their positions in the storage: what lies before a
    /// cursor was handed out, what lies at or after it was not. A removal keeps that true
    /// (`remove`), so an entry present for a whole dump is handed out exactly once.
    private var cursors: [Int: Int] = [:]
    private var nextCursor = 0

    private static let empty: Int32 = -1
    private static let deleted: Int32 = -2

    init(capacity: Int = 0) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: Self.empty, count: size)
        mask = size - 1
        buffer = FlowStorage(capacity: capacity)
    }

    var count: Int { buffer.count }
    /// Slots of the index (for tests: it must follow the live count, not the history).
    var indexCapacity: Int { slots.count }
    /// The entries as they are now (decoded as read).
    var storage: CacheEntries { CacheEntries(buffer) }

    /// The storage, made this table's own before a change.
    private mutating func unique() -> FlowStorage {
        if !isKnownUniquelyReferenced(&buffer) { buffer = buffer.copy() }
        return buffer
    }

    /// Where `key` is: its slot and position, or (found: false) the slot a new entry would take.
    @inline(__always)
    private func find(_ key: FlowKey) -> (slot: Int, position: Int32, found: Bool) {
        var i = Int(truncatingIfNeeded: key.fastHash) & mask
        var firstFree = -1
        let base = buffer.base
        while true {
            let s = slots[i]
            if s == Self.empty { return (firstFree >= 0 ? firstFree : i, -1, false) }
            if s >= 0 {
                if base[Int(s)].matches(key) { return (i, s, true) }
            } else if firstFree < 0 {
                firstFree = i
            }
            i = (i + 1) & mask
        }
    }

    /// The slot pointing at position `index` (which holds `key`).
    private func slot(ofIndex index: Int32, key: FlowKey) -> Int {
        var i = Int(truncatingIfNeeded: key.fastHash) & mask
        while slots[i] != index { i = (i + 1) & mask }
        return i
    }

    subscript(key: FlowKey) -> CacheEntry? {
        let (_, position, found) = find(key)
        return found ? buffer.entry(at: Int(position)) : nil
    }

    func contains(_ key: FlowKey) -> Bool { find(key).found }

    /// When the entry with `key` was stored first, if it is there.
    func since(_ key: FlowKey) -> Int64? {
        let (_, position, found) = find(key)
        return found ? buffer[Int(position)].since : nil
    }

    /// Replaces the entry with the same key; false if there is none.
    mutating func replace(_ entry: CacheEntry) -> Bool {
        let (_, position, found) = find(entry.flow.key)
        guard found else { return false }
        write(entry.flow, since: entry.since, lastUpdate: entry.lastUpdate, at: Int(position))
        return true
    }

    private mutating func write(_ flow: Flow, since: Int64, lastUpdate: Int64, at position: Int) {
        let storage = unique()
        storage.releaseExtras(storage[position].extra)
        let extra = storage.storeExtras(StoredFlow.extras(of: flow))
        storage[position] = StoredFlow(flow: flow, since: since, lastUpdate: lastUpdate, extra: extra)
    }

    /// Adds an entry whose key is not present.
    mutating func insert(_ entry: CacheEntry) {
        _ = upsert(entry.flow, now: entry.lastUpdate, since: entry.since, limit: .max)
    }

    /// What `upsert` did.
    enum Upsert {
        /// Replaced; the entry had been stored first at `since`.
        case replaced(since: Int64)
        case inserted
        /// Not there, and the table holds `limit` entries already.
        case full
    }

    /// Stores `flow` in one probe sequence: replaces the entry with its key (keeping when it was
    /// first stored), or adds it (first stored at `since`) unless the table holds `limit`.
    mutating func upsert(_ flow: Flow, now: Int64, since: Int64? = nil, limit: Int) -> Upsert {
        let key = flow.key
        var (slot, position, found) = find(key)
        if found {
            let first = buffer[Int(position)].since
            write(flow, since: first, lastUpdate: now, at: Int(position))
            return .replaced(since: first)
        }
        guard buffer.count < limit else { return .full }
        if (buffer.count + tombstones + 1) * 2 > slots.count {
            rehash(minimumCount: buffer.count + 1)
            slot = find(key).slot
        }
        if slots[slot] == Self.deleted { tombstones -= 1 }
        let storage = unique()
        slots[slot] = Int32(storage.count)
        storage.append(StoredFlow(flow: flow, since: since ?? now, lastUpdate: now, extra: storage.storeExtras(StoredFlow.extras(of: flow))))
        return .inserted
    }

    /// Removes and returns the entry with `key`. The last entry moves into the hole; with
    /// cursors open, the hole first walks up past each cursor ahead of it (the entry just
    /// before that cursor, already handed out by it, fills the hole, and the cursor steps
    /// back onto the new hole), so that no entry a cursor has not reached moves behind it.
    mutating func remove(_ key: FlowKey) -> CacheEntry? {
        let (s, position, found) = find(key)
        guard found else { return nil }
        let storage = unique()
        var hole = Int(position)
        let removed = storage.entry(at: hole)
        storage.releaseExtras(storage[hole].extra)
        slots[s] = Self.deleted
        tombstones += 1
        if !cursors.isEmpty {
            for (id, position) in cursors.sorted(by: { $0.value < $1.value }) where position > hole {
                if position - 1 != hole { move(from: position - 1, to: hole) }
                hole = position - 1
                cursors[id] = hole
            }
        }
        let last = storage.count - 1
        if hole != last { move(from: last, to: hole) }
        storage.removeLast()
        return removed
    }

    /// Moves the entry at `from` to `to` (whose entry is gone), index included.
    private mutating func move(from: Int, to: Int) {
        let moved = buffer[from]
        slots[slot(ofIndex: Int32(from), key: moved.key)] = Int32(to)
        buffer[to] = moved
    }

    /// Opens a cursor at the first entry.
    mutating func openCursor() -> Int {
        nextCursor += 1
        cursors[nextCursor] = 0
        return nextCursor
    }

    mutating func closeCursor(_ id: Int) { cursors.removeValue(forKey: id) }

    /// Hands up to `limit` entries at cursor `id` to `body` and moves the cursor past them;
    /// false once the cursor has reached the end (or is not open).
    mutating func advance(_ id: Int, limit: Int, _ body: (CacheEntry) -> Void) -> Bool {
        guard let position = cursors[id] else { return false }
        let end = min(buffer.count, position + max(1, limit))
        for index in position..<end { body(buffer.entry(at: index)) }
        cursors[id] = end
        return end < buffer.count
    }

    var openCursors: Int { cursors.count }

    /// Every key, in storage order.
    var keys: [FlowKey] {
        var out: [FlowKey] = []
        out.reserveCapacity(buffer.count)
        for index in 0..<buffer.count { out.append(buffer[index].key) }
        return out
    }

    mutating func removeAll() {
        for id in cursors.keys { cursors[id] = 0 }
        if isKnownUniquelyReferenced(&buffer) { buffer.removeAll() } else { buffer = FlowStorage(capacity: 16) }
        slots = [Int32](repeating: Self.empty, count: 16)
        mask = 15
        tombstones = 0
    }

    /// Rebuilds the index at a live load of at most 1/4: the next rehash is then at least a
    /// quarter of the index away (inserts or removals), so both stay amortised O(1). The size
    /// follows the live count only: under churn at a steady count (removals leave tombstones,
    /// which trigger the rehash) the index keeps its size. It used to double on every rehash,
    /// tombstones or not, so a steadily churning cache grew its index without bound (about 8
    /// bytes per removal ever made: a 10-minute soak grew the daemon by a quarter).
    private mutating func rehash(minimumCount: Int) {
        var size = 16
        while size < minimumCount * 4 { size <<= 1 }
        slots = [Int32](repeating: Self.empty, count: size)
        mask = size - 1
        tombstones = 0
        let base = buffer.base
        for index in 0..<buffer.count {
            var i = Int(truncatingIfNeeded: base[index].key.fastHash) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(index)
        }
    }
}
