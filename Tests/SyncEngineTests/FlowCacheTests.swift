import FlowModel
import TestSupport
import Testing

@testable import SyncEngine

func udp(_ port: UInt16, mark: UInt32 = 0) -> Flow {
    Flow(
        proto: .udp,
        original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: port, destinationPort: 53),
        timeout: 30, mark: mark)
}

func tcp(_ port: UInt16, state: TCPState = .established) -> Flow {
    var f = Flow(
        proto: .tcp,
        original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: port, destinationPort: 80),
        tcp: TCPInfo(state: state), status: [.seenReply, .assured], timeout: 300)
    f.labels = FlowLabels(bits: [3])
    return f
}

@Suite struct FlowCacheTests {
    @Test func eventsCreateUpdateDestroy() {
        var cache = FlowCache(limit: 100)
        #expect(cache.apply(.new(udp(1)), now: 10) == .created(udp(1).key))
        var changed = udp(1, mark: 5)
        changed.timeout = 20
        #expect(cache.apply(.update(changed, present: [.mark, .timeout, .status]), now: 11) == .updated(udp(1).key))
        #expect(cache[udp(1).key]?.flow.mark == 5)
        #expect(cache[udp(1).key]?.since == 10 && cache[udp(1).key]?.lastUpdate == 11)
        #expect(cache.apply(.destroy(udp(1)), now: 12) == .destroyed(changed))
        #expect(cache.count == 0)
        #expect(cache.apply(.destroy(udp(1)), now: 12) == CacheChange.none)
        #expect(cache.counters.created == 1 && cache.counters.updated == 1 && cache.counters.destroyed == 1)
    }

    @Test func updatesKeepWhatTheyDoNotCarry() {
        var cache = FlowCache(limit: 10)
        cache.store(tcp(1), now: 0)
        // An update that only refreshes the timeout and status: TCP state and labels stay.
        var refresh = tcp(1)
        refresh.tcp = nil
        refresh.labels = FlowLabels()
        refresh.timeout = 299
        cache.update(refresh, present: [.timeout, .status], now: 1)
        let kept = cache[tcp(1).key]!.flow
        #expect(kept.tcp?.state == .established && kept.labels.bits == [3] && kept.timeout == 299)
        // One that carries a new TCP state changes it.
        cache.update(tcp(1, state: .finWait), present: [.protocolInfo, .status, .timeout], now: 2)
        #expect(cache[tcp(1).key]!.flow.tcp?.state == .finWait)
    }

    @Test func unknownUpdateIsStored() {
        var cache = FlowCache(limit: 10)
        #expect(cache.apply(.update(udp(9), present: .all), now: 0) == .created(udp(9).key))
    }

    @Test func hardLimitCountsInsteadOfGrowing() {
        var cache = FlowCache(limit: 3)
        for p in 1...5 { cache.store(udp(UInt16(p)), now: 0) }
        #expect(cache.count == 3)
        #expect(cache.counters.noSpace == 2 && cache.counters.createFailed == 2)
        // Updates of flows already held still work at the limit.
        #expect(cache.store(udp(1, mark: 1), now: 1) == .updated(udp(1).key))
    }

    @Test func filterDecidesWhatEnters() {
        var cache = FlowCache(limit: 10)
        let onlyMarked: (Flow) -> Bool = { $0.mark != 0 }
        #expect(cache.apply(.new(udp(1)), now: 0, accepts: onlyMarked) == CacheChange.none)
        #expect(cache.apply(.new(udp(2, mark: 1)), now: 0, accepts: onlyMarked) == .created(udp(2).key))
        // Its mark is cleared: it no longer passes, so it leaves.
        #expect(cache.apply(.update(udp(2), present: [.status]), now: 1, accepts: onlyMarked) == .destroyed(udp(2, mark: 1)))
    }

    @Test func resyncMakesTheCacheEqualTheDump() {
        var cache = FlowCache(limit: 1000)
        for p in 1...100 { cache.store(udp(UInt16(p)), now: 0) }
        // The kernel lost 1...50 and gained 101...120 while we were not listening.
        let dump = (51...120).map { udp(UInt16($0)) }
        let result = cache.resync(with: dump, now: 5)
        #expect(result.added.count == 20 && result.updated == 50 && result.removed.count == 50)
        #expect(Set(cache.keys) == Set(dump.map(\.key)))
        #expect(cache[udp(60).key]?.since == 0)
    }

    @Test func resyncAppliesTheFilter() {
        var cache = FlowCache(limit: 1000)
        cache.store(udp(1), now: 0)
        let result = cache.resync(with: [udp(1), udp(2, mark: 1)], now: 1, accepts: { $0.mark != 0 })
        #expect(result.removed.map(\.key) == [udp(1).key])
        #expect(cache.count == 1)
    }

    @Test func kernelOwnedFieldsAreNotKept() {
        var cache = FlowCache(limit: 10)
        var f = udp(1)
        f.use = 3
        f.counters = FlowCounters(originalPackets: 1, originalBytes: 2, replyPackets: 3, replyBytes: 4)
        cache.store(f, now: 0)
        #expect(cache[f.key]?.flow.use == nil && cache[f.key]?.flow.counters == nil)
        cache.remove(f)
        #expect(cache.trafficPackets == 4 && cache.trafficBytes == 6)
    }
}

@Suite struct FlowTableTests {
    /// Churn at a steady count (a generation in, an old one out, as on a busy firewall) must not
    /// grow the index: it used to double on every rehash that tombstones triggered.
    @Test func churnAtASteadyCountKeepsTheIndexSize() {
        var table = FlowTable()
        var live: [FlowKey] = []
        var port = 0
        func entry() -> CacheEntry {
            port += 1
            var f = udp(UInt16(truncatingIfNeeded: port))
            f.original.source = IPAddress(ipv4: 0xC612_0000 | UInt32(port >> 16))
            return CacheEntry(flow: f, since: 0, lastUpdate: 0)
        }
        for _ in 0..<5_000 {
            let e = entry()
            table.insert(e)
            live.append(e.flow.key)
        }
        let settled = table.indexCapacity
        for round in 0..<200 {
            for _ in 0..<1_000 {
                let e = entry()
                table.insert(e)
                live.append(e.flow.key)
            }
            for key in live.prefix(1_000) { _ = table.remove(key) }
            live.removeFirst(1_000)
            #expect(table.count == 5_000)
            if round % 50 == 49 { #expect(table.indexCapacity <= 2 * settled, "round \(round): \(table.indexCapacity) slots for 5000 flows") }
        }
        for key in live.prefix(100) { #expect(table[key] != nil) }
    }

    /// Random inserts and removals against a Dictionary as the model.
    @Test(arguments: [1, 2, 3])
    func behavesLikeADictionary(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        var table = FlowTable()
        var model: [FlowKey: CacheEntry] = [:]
        for step in 0..<20_000 {
            let port = UInt16(rng.next() % 3000)
            let flow = udp(port, mark: UInt32(step))
            switch rng.next() % 3 {
            case 0, 1:
                let entry = CacheEntry(flow: flow, since: Int64(step), lastUpdate: Int64(step))
                if model[flow.key] == nil {
                    table.insert(entry)
                } else {
                    let replaced = table.replace(entry)
                    #expect(replaced)
                }
                model[flow.key] = entry
            default:
                let removed = table.remove(flow.key)
                #expect(removed == model.removeValue(forKey: flow.key))
            }
        }
        #expect(table.count == model.count)
        for (key, entry) in model { #expect(table[key] == entry) }
        #expect(Set(table.storage.map(\.flow.key)) == Set(model.keys))
        table.removeAll()
        #expect(table.count == 0 && table[udp(1).key] == nil)
    }

    /// Streamed dumps: with up to three cursors walking while entries are inserted and removed
    /// at random, every entry present for a cursor's whole walk is handed to it exactly once,
    /// none twice, and the table stays a correct dictionary.
    @Test(arguments: [4, 5, 6, 7])
    func cursorsHandOutEveryLastingEntryOnce(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        var table = FlowTable()
        var model: [FlowKey: CacheEntry] = [:]
        var removedNow: Set<FlowKey> = []
        func churn(_ steps: Int) {
            removedNow = []
            for _ in 0..<steps {
                let flow = udp(UInt16(rng.next() % 4000))
                if model[flow.key] == nil, rng.next() % 2 == 0 {
                    let entry = CacheEntry(flow: flow, since: 0, lastUpdate: 0)
                    table.insert(entry)
                    model[flow.key] = entry
                } else if model[flow.key] != nil {
                    _ = table.remove(flow.key)
                    model[flow.key] = nil
                    removedNow.insert(flow.key)
                }
            }
        }
        churn(6000)
        struct Walk {
            var id: Int
            var start: Set<FlowKey>
            var removed: Set<FlowKey> = []
            var seen: [FlowKey: Int] = [:]
            var done = false
        }
        var walks: [Walk] = []
        for round in 0..<400 {
            if walks.count < 3, rng.next() % 20 == 0 {
                walks.append(Walk(id: table.openCursor(), start: Set(model.keys)))
            }
            churn(Int(rng.next() % 40))
            for index in walks.indices { walks[index].removed.formUnion(removedNow) }
            for index in walks.indices where !walks[index].done {
                let more = table.advance(walks[index].id, limit: Int(rng.next() % 50) + 1) { entry in
                    walks[index].seen[entry.flow.key, default: 0] += 1
                }
                if !more {
                    walks[index].done = true
                    table.closeCursor(walks[index].id)
                    let lasting = walks[index].start.subtracting(walks[index].removed)
                    let missing = lasting.subtracting(walks[index].seen.keys)
                    #expect(missing.isEmpty, "round \(round): \(missing.count) lasting entries never handed out")
                    // (A key removed and stored again meanwhile is a new entry: it may come twice.)
                    let twice = lasting.filter { walks[index].seen[$0, default: 0] > 1 }
                    #expect(twice.isEmpty, "round \(round): \(twice.count) lasting entries handed out twice")
                }
            }
            walks.removeAll { $0.done }
        }
        for key in model.keys { #expect(table[key] != nil) }
        #expect(table.count == model.count)
    }
}

/// The caches' stored form keeps every flow exactly (counters and use aside, which the caches
/// never keep), and a stored flow is found by its key and by nothing else.
@Suite struct StoredFlowTests {
    @Test(arguments: [11, 12, 13] as [UInt64])
    func roundTripsEveryFlow(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let storage = FlowStorage(capacity: 16)
        for step in 0..<5000 {
            var flow = FlowGenerator.flow(&rng)
            if step % 7 == 0 { flow.id = nil }
            if step % 5 == 0 { flow.timeout = nil }
            let stored = StoredFlow(
                flow: flow, since: Int64(step), lastUpdate: Int64(step) + 1, extra: storage.storeExtras(StoredFlow.extras(of: flow)))
            var expected = flow
            expected.use = nil
            expected.counters = nil
            #expect(stored.flow(extras: storage.extras(of: stored)) == expected)
            #expect(stored.since == Int64(step) && stored.lastUpdate == Int64(step) + 1)
            #expect(stored.key == flow.key && stored.matches(flow.key))
            var other = flow.key
            other.zone &+= 1
            #expect(!stored.matches(other))
            other = flow.key
            other.original.sourcePort &+= 1
            #expect(!stored.matches(other))
            other = flow.key
            other.original.destination = IPAddress(ipv6High: 1, low: other.original.destination.low)
            #expect(!stored.matches(other))
        }
        #expect(MemoryLayout<StoredFlow>.stride <= 128)
    }

    /// A copy of a cache (a commit's snapshot) keeps its entries while the cache changes.
    @Test func aSnapshotKeepsItsEntries() {
        var cache = FlowCache(limit: 1000)
        for port in 0..<100 { cache.store(udp(UInt16(port)), now: 1) }
        let snapshot = cache.entries
        for port in 0..<50 { cache.remove(udp(UInt16(port))) }
        for port in 100..<150 { cache.store(udp(UInt16(port)), now: 2) }
        #expect(snapshot.count == 100 && Set(snapshot.map(\.flow.original.sourcePort)) == Set((0..<100).map(UInt16.init)))
        #expect(cache.count == 100 && cache[udp(120).key] != nil && cache[udp(10).key] == nil)
    }
}
