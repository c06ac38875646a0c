import FlowModel

/// The cache's storage: entries in one dense array, found through an open-addressing index
/// of 32-bit positions (linear probing, tombstones, power-of-two size, load ≤ 1/2).
///
/// Why not `Dictionary<FlowKey, CacheEntry>`: a dictionary stores each key next to its value
/// and spreads them over a table twice the size of its contents, so every page of it is
/// touched; measured at about 1 KiB of RSS per cached flow. Here the key is read from the
/// entry itself, the index costs 16-32 bytes per flow (a live load of 1/4 to 1/2), and the dense array touches only the
/// pages it fills: about a third of the memory.
struct FlowTable {
    private(set) var storage: ContiguousArray<CacheEntry> = []
    private var slots: [Int32]
    private var mask: Int
    private var tombstones = 0
    /// Open cursors (streamed dumps) and their positions in `storage`: what lies before a
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
        storage.reserveCapacity(capacity)
    }

    var count: Int { storage.count }
    /// Slots of the index (for tests: it must follow the live count, not the history).
    var indexCapacity: Int { slots.count }

    /// The slot holding `key`, or nil.
    private func slot(of key: FlowKey) -> Int? {
        var i = Int(truncatingIfNeeded: key.fastHash) & mask
        while true {
            let s = slots[i]
            if s == Self.empty { return nil }
            if s >= 0 && storage[Int(s)].flow.key == key { return i }
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
        guard let s = slot(of: key) else { return nil }
        return storage[Int(slots[s])]
    }

    /// Replaces the entry with the same key; false if there is none.
    mutating func replace(_ entry: CacheEntry) -> Bool {
        guard let s = slot(of: entry.flow.key) else { return false }
        storage[Int(slots[s])] = entry
        return true
    }

    /// Adds an entry whose key is not present.
    mutating func insert(_ entry: CacheEntry) {
        if (storage.count + tombstones + 1) * 2 > slots.count { rehash(minimumCount: storage.count + 1) }
        var i = Int(truncatingIfNeeded: entry.flow.key.fastHash) & mask
        while slots[i] >= 0 { i = (i + 1) & mask }
        if slots[i] == Self.deleted { tombstones -= 1 }
        slots[i] = Int32(storage.count)
        storage.append(entry)
    }

    /// Removes and returns the entry with `key`. The last entry moves into the hole; with
    /// cursors open, the hole first walks up past each cursor ahead of it (the entry just
    /// before that cursor, already handed out by it, fills the hole, and the cursor steps
    /// back onto the new hole), so that no entry a cursor has not reached moves behind it.
    mutating func remove(_ key: FlowKey) -> CacheEntry? {
        guard let s = slot(of: key) else { return nil }
        var hole = Int(slots[s])
        let removed = storage[hole]
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
        let moved = storage[from]
        slots[slot(ofIndex: Int32(from), key: moved.flow.key)] = Int32(to)
        storage[to] = moved
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
        let end = min(storage.count, position + max(1, limit))
        for index in position..<end { body(storage[index]) }
        cursors[id] = end
        return end < storage.count
    }

    var openCursors: Int { cursors.count }

    mutating func removeAll() {
        for id in cursors.keys { cursors[id] = 0 }
        storage.removeAll(keepingCapacity: false)
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
        for (index, entry) in storage.enumerated() {
            var i = Int(truncatingIfNeeded: entry.flow.key.fastHash) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(index)
        }
    }
}
