import FlowModel
import SyncProtocol
import TestSupport

@testable import SyncEngine

/// One simulated firewall around a real `SyncNode`: a kernel table in memory (whose changes the
/// harness reports as events, or not, as a real kernel may not), its links' states, and what the
/// node did to the world (datagrams, injections, log lines).
final class SimFirewall: SyncNodeEnvironment {
    let name: String
    var node: SyncNode
    /// The kernel's conntrack table.
    var kernel: [FlowKey: Flow] = [:]
    /// Per link: whether its interface runs (a down link refuses sends).
    var linkRunning: [Bool]
    var outbox: [(link: Int, bytes: [UInt8])] = []
    var logs: [(NodeLogLevel, String)] = []
    var injected = 0
    var ended: [Flow] = []
    var dumps = 0
    /// False: the link cannot take a datagram now (a TCP link reconnecting with its queue full).
    var sendable = true
    /// The kernel's expectation table.
    var expectations: [ExpectationKey: Expectation] = [:]

    init(name: String, settings: SyncNode.Settings, now: Int64) {
        self.name = name
        node = SyncNode(settings: settings, now: now)
        linkRunning = Array(repeating: true, count: max(1, settings.sync?.linkCount ?? 1))
    }

    // MARK: SyncNodeEnvironment

    func send(_ datagram: UnsafeRawBufferPointer, link: Int) -> Bool {
        guard linkRunning[link] else { return false }
        outbox.append((link, Array(datagram)))
        return true
    }
    func canSend(link: Int) -> Bool { sendable }
    func isRunning(link: Int) -> Bool { linkRunning[link] }
    func readKernelTable() throws -> [Flow] {
        dumps += 1
        return Array(kernel.values)
    }
    func inject(_ changes: [(FlowMessageKind, Flow)]) {
        for (kind, flow) in changes {
            if kind == .destroy { kernel.removeValue(forKey: flow.key) } else { kernel[flow.key] = flow }
            injected += 1
        }
    }
    func flowEnded(_ flow: Flow) { ended.append(flow) }
    func readKernelExpectations() throws -> [Expectation] { Array(expectations.values) }
    func injectExpectations(_ changes: [(FlowMessageKind, Expectation)]) {
        for (kind, e) in changes {
            if kind == .destroy { expectations.removeValue(forKey: e.key) } else { expectations[e.key] = e }
        }
    }

    /// An expectation appears in the kernel (reported unless `silently`).
    func expect(_ e: Expectation, now: Int64, silently: Bool = false) {
        expectations[e.key] = e
        if !silently { node.expectationEvents([.new(e)], now: now, environment: self) }
    }

    func unexpect(_ e: Expectation, now: Int64) {
        guard let gone = expectations.removeValue(forKey: e.key) else { return }
        node.expectationEvents([.destroy(gone)], now: now, environment: self)
    }
    func log(_ level: NodeLogLevel, _ message: String) { logs.append((level, message)) }

    // MARK: The kernel changes (reported as events unless `silently`)

    func create(_ flow: Flow, now: Int64, silently: Bool = false) {
        kernel[flow.key] = flow
        if !silently { node.kernelEvents([.new(flow)], now: now, environment: self) }
    }

    func update(_ flow: Flow, now: Int64) {
        kernel[flow.key] = flow
        node.kernelEvents([.update(flow, present: .all)], now: now, environment: self)
    }

    func destroy(_ key: FlowKey, now: Int64, silently: Bool = false) {
        guard let flow = kernel.removeValue(forKey: key) else { return }
        if !silently { node.kernelEvents([.destroy(flow)], now: now, environment: self) }
    }

    /// Events were lost: the kernel changed, and all the node hears is an overrun.
    func lostEvents(now: Int64, _ change: (inout [FlowKey: Flow]) -> Void) {
        change(&kernel)
        node.kernelEvents([.overrun], now: now, environment: self)
    }

    func start(now: Int64) {
        try! node.start(now: now, environment: self)
    }
}

/// The simulated network: every datagram a firewall sends on a link reaches every other
/// firewall on that link (one multicast group per link), each copy dropped, duplicated and
/// delayed (so reordered) by a seeded generator. `blocked` links drop everything.
struct SimNetwork {
    var rng: SeededGenerator
    var drop: UInt64  // percent
    var duplicate: UInt64  // percent
    var jitter: Int64  // ms
    var blocked: Set<Int> = []
    /// Directed pairs (from, to) that drop everything.
    var cut: Set<[Int]> = []
    var inFlight: [(at: Int64, to: Int, link: Int, bytes: [UInt8])] = []
    var datagrams = 0
    var dropped = 0

    mutating func send(_ bytes: [UInt8], from: Int, link: Int, members: Int, now: Int64) {
        for to in 0..<members where to != from {
            datagrams += 1
            if blocked.contains(link) || cut.contains([from, to]) || rng.next() % 100 < drop {
                dropped += 1
                continue
            }
            let copies = rng.next() % 100 < duplicate ? 2 : 1
            for _ in 0..<copies {
                let delay = 1 + (jitter > 0 ? Int64(rng.next() % UInt64(jitter)) : 0)
                inFlight.append((now + delay, to, link, bytes))
            }
        }
    }

    mutating func due(_ now: Int64) -> [(to: Int, link: Int, bytes: [UInt8])] {
        var out: [(to: Int, link: Int, bytes: [UInt8])] = []
        var kept: [(at: Int64, to: Int, link: Int, bytes: [UInt8])] = []
        for d in inFlight {
            if d.at <= now { out.append((d.to, d.link, d.bytes)) } else { kept.append(d) }
        }
        inFlight = kept
        return out
    }
}

func simFlow(_ id: Int, version: Int, node: UInt32, port: UInt16 = 443) -> Flow {
    var f = Flow(
        proto: .tcp,
        original: Tuple(
            source: IPAddress(ipv4: 0xC612_0000 | node << 12 | UInt32(id >> 16)), destination: IPAddress(ipv4: 0xC613_0001),
            sourcePort: UInt16(id & 0xffff), destinationPort: port),
        tcp: TCPInfo(state: .established), status: [.seenReply, .assured], timeout: 600)
    f.mark = UInt32(version)
    return f
}

/// Two to four firewalls running the real `SyncNode` over a `SimNetwork`, with random flow
/// churn in their kernels. Deterministic per seed.
final class Cluster {
    var firewalls: [SimFirewall]
    var network: SimNetwork
    var rng: SeededGenerator
    var now: Int64 = 0
    var nextID: [Int]
    /// id -> version, per firewall: what its kernel holds.
    var live: [[Int: Int]]

    static func settings(
        _ mode: SyncModeSettings, sequence: UInt32, links: Int = 1, injects: Bool = false, hashLimit: Int = 1_000_000,
        accepts: @escaping @Sendable (Flow) -> Bool = { _ in true }, updateDelay: Int64 = 0
    ) -> SyncNode.Settings {
        var sync = SyncNode.Sync(mode: mode, linkCount: links, injects: injects, initialSequence: sequence)
        sync.updateDelayMilliseconds = updateDelay
        return SyncNode.Settings(hashLimit: hashLimit, accepts: accepts, sync: sync)
    }

    init(
        seed: UInt64, nodes: Int = 2, mode: SyncModeSettings = .ftfw(windowSize: 30, resendQueueSize: 131_072), drop: UInt64,
        duplicate: UInt64 = 0, jitter: Int64 = 0, links: Int = 1, injects: Bool = false, preload: Int = 0,
        hashLimits: [Int: Int] = [:], filters: [Int: @Sendable (Flow) -> Bool] = [:], updateDelay: Int64 = 0
    ) {
        rng = SeededGenerator(seed: seed)
        // The second node's numbering wraps around during the run.
        let sequences: [UInt32] = [UInt32(truncatingIfNeeded: seed &* 7919), UInt32.max - 50, 1 << 31, 12345]
        let acceptAll: @Sendable (Flow) -> Bool = { _ in true }
        firewalls = (0..<nodes).map {
            SimFirewall(
                name: String(UnicodeScalar(UInt8(97 + $0))),
                settings: Self.settings(
                    mode, sequence: sequences[$0 % 4], links: links, injects: injects, hashLimit: hashLimits[$0] ?? 1_000_000,
                    accepts: filters[$0] ?? acceptAll, updateDelay: updateDelay),
                now: 0)
        }
        network = SimNetwork(rng: SeededGenerator(seed: seed &+ 1), drop: drop, duplicate: duplicate, jitter: jitter)
        nextID = Array(repeating: 0, count: nodes)
        live = Array(repeating: [:], count: nodes)
        // Flows the first kernel held before its daemon started: they report no events.
        for id in 0..<preload {
            firewalls[0].create(simFlow(id, version: 0, node: 0), now: 0, silently: true)
            live[0][id] = 0
        }
        nextID[0] = preload
        for firewall in firewalls { firewall.start(now: 0) }
    }

    var a: SimFirewall { firewalls[0] }
    var b: SimFirewall { firewalls[1] }

    /// Random creates, updates and destroys in the kernels of the given firewalls.
    /// Changes one live flow of `side` (a new version of it): an update, nothing else.
    func updateOne(on side: Int) {
        guard let id = live[side].keys.min() else { return }
        let version = live[side][id]! + 1
        live[side][id] = version
        firewalls[side].update(simFlow(id, version: version, node: UInt32(side)), now: now)
    }

    /// Creates one flow on `side`.
    func createOne(on side: Int) {
        let id = nextID[side]
        nextID[side] += 1
        live[side][id] = 0
        firewalls[side].create(simFlow(id, version: 0, node: UInt32(side)), now: now)
    }

    func churn(_ n: Int, on sides: [Int]? = nil) {
        let sides = sides ?? Array(firewalls.indices)
        for _ in 0..<n {
            let side = sides[rng.below(sides.count)]
            let roll = rng.next() % 10
            let firewall = firewalls[side]
            if roll < 5 || live[side].isEmpty {
                let id = nextID[side]
                nextID[side] += 1
                live[side][id] = 0
                firewall.create(simFlow(id, version: 0, node: UInt32(side)), now: now)
            } else {
                let ids = Array(live[side].keys).sorted()
                let id = ids[rng.below(ids.count)]
                if roll < 8 {
                    let version = live[side][id]! + 1
                    live[side][id] = version
                    firewall.update(simFlow(id, version: version, node: UInt32(side)), now: now)
                } else {
                    live[side].removeValue(forKey: id)
                    firewall.destroy(simFlow(id, version: 0, node: UInt32(side)).key, now: now)
                }
            }
        }
    }

    /// One step of `ms` milliseconds: every node's timers, its sends, then what arrives.
    func step(_ ms: Int64 = 10) {
        now += ms
        for (index, firewall) in firewalls.enumerated() {
            firewall.node.tick(now: now, environment: firewall)
            firewall.node.transmit(now: now, environment: firewall)
            for datagram in firewall.outbox {
                network.send(datagram.bytes, from: index, link: datagram.link, members: firewalls.count, now: now)
            }
            firewall.outbox.removeAll()
        }
        for delivery in network.due(now) {
            let firewall = firewalls[delivery.to]
            delivery.bytes.withUnsafeBytes { firewall.node.receive($0, link: delivery.link, now: now, environment: firewall) }
        }
    }

    /// What a firewall learnt from the others (its external cache, or its kernel when it
    /// injects) against what they hold: (missing, ghosts, stale).
    func differences(_ mirror: Int) -> (Int, Int, Int) {
        var want: [FlowKey: Flow] = [:]
        for (index, firewall) in firewalls.enumerated() where index != mirror {
            for entry in firewall.node.internalCache.entries { want[entry.flow.key] = entry.flow }
        }
        let m = firewalls[mirror]
        var have: [FlowKey: Flow] = [:]
        if m.node.injects {
            have = m.kernel.filter { $0.value.original.source.ipv4 >> 12 & 0xf != UInt32(mirror) }
        } else {
            for entry in m.node.externalCache.entries { have[entry.flow.key] = entry.flow }
        }
        var stale = 0
        for (key, flow) in want where have[key] != nil && !flow.sameState(as: have[key]!) { stale += 1 }
        return (want.keys.filter { have[$0] == nil }.count, have.keys.filter { want[$0] == nil }.count, stale)
    }

    /// Every kernel equals its node's internal cache.
    var mirrorsExact: Bool {
        firewalls.allSatisfy { f in
            f.node.internalCache.count == f.kernel.count
                && f.kernel.allSatisfy { key, flow in f.node.internalCache[key].map { $0.flow.sameState(as: flow) } ?? false }
        }
    }

    var converged: Bool {
        firewalls.indices.allSatisfy { differences($0) == (0, 0, 0) } && firewalls.allSatisfy { $0.node.mode?.isIdle ?? true }
    }

    var report: String {
        firewalls.indices.map { "\(firewalls[$0].name): \(differences($0))" }.joined(separator: ", ")
    }

    /// Churns for `busy` steps, then runs (bounded) until every mirror is exact.
    func run(busy: Int = 300, perStep: Int = 5, on sides: [Int]? = nil, settleSeconds: Int64 = 120) -> Bool {
        for _ in 0..<busy {
            churn(perStep, on: sides)
            step()
        }
        return settle(seconds: settleSeconds)
    }

    /// Steps (bounded) until converged.
    func settle(seconds: Int64) -> Bool {
        let deadline = now + seconds * 1000
        while now < deadline {
            step()
            if now % 1000 == 0 && converged { return true }
        }
        return converged
    }

    /// Firewall `index` restarts: a new node (a new numbering), its kernel as it is now.
    func restart(_ index: Int, sequence: UInt32) {
        let old = firewalls[index]
        var settings = old.node.settings
        settings.sync!.initialSequence = sequence
        let fresh = SimFirewall(name: old.name, settings: settings, now: now)
        fresh.kernel = old.kernel
        fresh.expectations = old.expectations
        fresh.start(now: now)
        firewalls[index] = fresh
    }
}
