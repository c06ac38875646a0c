import FlowModel
import SyncProtocol
import TestSupport
import Testing

@testable import SyncEngine

/// The node the daemon runs, over a simulated network: exactness through loss, duplication,
/// reordering and restarts in every mode, and the policies that decide it in production (the
/// sweep after a peer's restart, ALARM's expiry, the choice of link, injection, the silent-flow
/// re-read, the resync after an overrun). Deterministic per seed; no root, no sockets.
@Suite struct NodeSimulationTests {
    @Test(arguments: 0..<12)
    func convergesOverAPerfectLink(seed: Int) {
        let sim = Cluster(seed: UInt64(seed), drop: 0)
        let ok = sim.run()
        #expect(ok, "\(sim.report)")
        #expect(sim.a.node.mode!.counters.nacksSent == 0 && sim.b.node.mode!.counters.nacksSent == 0)
        #expect(sim.mirrorsExact)
    }

    @Test(arguments: [(20, 0), (40, 0), (20, 10), (40, 10)], 0..<LossySeeds.count)
    func convergesExactlyDespiteLossDuplicationAndReordering(_ rates: (Int, Int), seed: Int) {
        let sim = Cluster(seed: UInt64(seed) &+ 100, drop: UInt64(rates.0), duplicate: UInt64(rates.1), jitter: 40)
        let ok = sim.run()
        #expect(ok, "loss \(rates.0)% dup \(rates.1)% seed \(seed): \(sim.report)")
        #expect(sim.network.dropped > 0 || rates.0 == 0)
        #expect(sim.a.node.mode!.counters.resendQueueOverflows == 0)
        #expect(sim.a.node.mode!.counters.retransmitted > 0 || rates.0 == 0)
    }

    /// A restart under loss and reordering once lost the restarted peer's resync request (an
    /// acknowledgement range still open from the old numbering covered it), and with it the
    /// whole table (found by running 300 seeds).
    @Test(arguments: 0..<40)
    func peerRestartUnderLossConverges(seed: UInt64) {
        let sim = Cluster(seed: seed, drop: 20, jitter: 20)
        #expect(sim.run(busy: 200))
        sim.restart(1, sequence: UInt32(truncatingIfNeeded: 12345 &+ seed &* 977))
        #expect(sim.b.node.externalCache.count == 0)
        let converged = sim.run(busy: 100)
        #expect(converged, "seed \(seed): \(sim.report)")
        #expect(sim.a.node.mode!.counters.peerRestarts >= 1)
    }

    /// Flows that ended while the peer's daemon was down (its kernel lost them and nobody
    /// heard) are ghosts in our external cache: after the peer restarts and has announced what
    /// it holds, they are swept. conntrackd keeps them forever.
    @Test(arguments: 0..<8)
    func peerRestartSweepsTheGhostsOfFlowsThatEndedMeanwhile(seed: UInt64) {
        let sim = Cluster(seed: seed, drop: 10, jitter: 10)
        #expect(sim.run(busy: 100, on: [1]))
        let held = sim.a.node.externalCache.count
        let gone = Array(sim.b.kernel.keys.sorted { $0.fastHash < $1.fastHash }.prefix(held / 3))
        #expect(gone.count > 5)
        for key in gone { sim.b.destroy(key, now: sim.now, silently: true) }
        sim.restart(1, sequence: 777)
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        for key in gone { #expect(sim.a.node.externalCache[key] == nil) }
        #expect(sim.a.node.externalCache.count == sim.b.kernel.count)
        #expect(sim.a.logs.contains { $0.1.contains("after the peer's restart: \(gone.count) flows it no longer has removed") }, "\(sim.a.logs)")
    }

    /// NOTRACK: same numbering, nothing kept, no ACK/NACK/hello; a lossless link converges,
    /// a lossy one counts its losses and resends nothing.
    @Test func notrackSendsOnceAndCountsLosses() {
        for drop: UInt64 in [0, 20] {
            let sim = Cluster(seed: 3, mode: .notrack, drop: drop)
            let converged = sim.run(busy: 100, settleSeconds: 3)
            #expect(converged == (drop == 0), "drop \(drop): \(sim.report)")
            for firewall in sim.firewalls {
                let c = firewall.node.mode!.counters
                #expect(c.acksSent == 0 && c.nacksSent == 0 && c.retransmitted == 0)
                #expect(firewall.node.mode!.resendQueueLength == 0)
                #expect((c.lost > 0) == (drop > 0))
            }
        }
    }

    /// ALARM under loss: the refresh repairs what was lost; a flow whose end never reached the
    /// peer (the direction cut) expires there after CacheTimeout, while live flows, refreshed,
    /// stay.
    @Test func alarmRefreshRepairsLossAndExpiresWhatIsNotRefreshed() {
        let sim = Cluster(seed: 5, mode: .alarm(refreshTime: 2, cacheTimeout: 6), drop: 20, jitter: 10)
        #expect(sim.run(busy: 100, settleSeconds: 20), "\(sim.report)")
        sim.network.cut = [[0, 1]]
        let ended = Array(sim.a.kernel.keys.sorted { $0.fastHash < $1.fastHash }.prefix(10))
        for key in ended { sim.a.destroy(key, now: sim.now) }
        for _ in 0..<300 { sim.step() }  // 3 s: less than CacheTimeout
        for key in ended { #expect(sim.b.node.externalCache[key] != nil) }
        sim.network.cut = []
        #expect(sim.settle(seconds: 20), "\(sim.report)")
        for key in ended { #expect(sim.b.node.externalCache[key] == nil) }
        #expect(sim.b.logs.contains { $0.1.contains("not refreshed for CacheTimeout") })
    }

    /// ALARM sends no ALIVE when idle (the refresh is the sign of life).
    @Test func alarmModeSendsNoAlive() {
        var mode = AlarmMode(initialSequence: 1, refreshTime: 10, cacheTimeout: 30, now: 0)
        _ = mode.tick(now: 5000, internalCache: FlowCache(limit: 10))
        #expect(mode.transmit(now: 5000) { _ in nil }.isEmpty)
        let flow = simFlow(1, version: 0, node: 0)
        mode.flowChanged(flow.key, created: true)
        let sent = mode.transmit(now: 5001) { $0 == flow.key ? flow : nil }
        #expect(sent.count == 1 && sent[0].hello.isEmpty)
        #expect(mode.resendQueueLength == 0)
    }

    /// Two links: when the current one goes down, the next that runs takes over (on a failed
    /// send at once), the peer follows, and nothing is lost on the way.
    @Test func aDownLinkHandsOverToTheNextAndThePeerFollows() {
        let sim = Cluster(seed: 9, drop: 0, links: 2)
        #expect(sim.run(busy: 50))
        #expect(sim.a.node.currentLink == 0 && sim.b.node.currentLink == 0)
        sim.network.blocked = [0]
        sim.a.linkRunning[0] = false
        let converged = sim.run(busy: 100, on: [0])
        #expect(converged, "\(sim.report)")
        #expect(sim.a.node.currentLink == 1)
        #expect(sim.b.node.currentLink == 1, "the peer follows the link the messages arrive on")
        #expect(sim.a.logs.contains { $0.1.contains("becomes the dedicated link") })
    }

    /// `DisableExternalCache`: the peer's flows go straight into the kernel, none into a cache.
    @Test func withoutExternalCacheThePeersFlowsGoIntoTheKernel() {
        let sim = Cluster(seed: 11, drop: 20, jitter: 20, injects: true)
        #expect(sim.run(busy: 150), "\(sim.report)")
        #expect(sim.a.node.externalCache.count == 0 && sim.b.node.externalCache.count == 0)
        #expect(sim.b.injected > 0)
    }

    /// Flows the kernel held before the daemon started report nothing (nf_conntrack_events=2):
    /// the node re-reads the table for them until each has reported or ended, so their end
    /// reaches the internal cache and the peer.
    @Test func flowsFromBeforeTheStartThatEndSilentlyLeave() {
        let sim = Cluster(seed: 13, drop: 0, preload: 200)
        #expect(sim.a.node.silentFlowCount == 200)
        #expect(sim.settle(seconds: 10), "\(sim.report)")
        let ended = (0..<40).map { simFlow($0, version: 0, node: 0).key }
        for key in ended { sim.a.destroy(key, now: sim.now, silently: true) }
        var changed = simFlow(150, version: 9, node: 0)
        changed.timeout = 77
        sim.a.kernel[changed.key] = changed  // changed without an event too
        #expect(sim.settle(seconds: 10), "\(sim.report)")
        #expect(sim.mirrorsExact)
        for key in ended { #expect(sim.b.node.externalCache[key] == nil) }
        #expect(sim.b.node.externalCache[changed.key]?.flow.mark == 9)
        #expect(sim.a.node.silentFlowCount == 160)
        // A flow that reports an event is no longer a suspect.
        sim.a.update(simFlow(151, version: 1, node: 0), now: sim.now)
        #expect(sim.a.node.silentFlowCount == 159)
    }

    /// Events lost (an overrun): the kernel changed unheard; the node re-reads the table once
    /// the stream is quiet, and tells the peer the difference.
    @Test func anOverrunIsRepairedFromADumpOnceEventsAreQuiet() {
        let sim = Cluster(seed: 17, drop: 0)
        #expect(sim.run(busy: 50, on: [0]))
        let dumps = sim.a.dumps
        sim.a.lostEvents(now: sim.now) { kernel in
            for key in Array(kernel.keys.sorted { $0.fastHash < $1.fastHash }.prefix(7)) { kernel.removeValue(forKey: key) }
            for id in 10_000..<10_020 { kernel[simFlow(id, version: 0, node: 0).key] = simFlow(id, version: 0, node: 0) }
        }
        #expect(!sim.mirrorsExact)
        sim.step(100)
        #expect(sim.a.dumps == dumps, "no resync while events may still be coming")
        sim.step(150)
        #expect(sim.a.dumps == dumps + 1)
        #expect(sim.mirrorsExact)
        #expect(sim.settle(seconds: 10), "\(sim.report)")
        #expect(sim.a.node.mirror.overruns == 1 && sim.a.node.mirror.resyncAdded == 20 && sim.a.node.mirror.resyncRemoved == 7)
    }

    /// Three and four nodes on one multicast group: each learns the union of the others'
    /// tables (NOTRACK without loss; ALARM under loss, whose refresh repairs it).
    @Test(arguments: [3, 4])
    func severalNodesOnOneGroupLearnEveryOthersTable(nodes: Int) {
        let notrack = Cluster(seed: 21, nodes: nodes, mode: .notrack, drop: 0)
        #expect(notrack.run(busy: 100, settleSeconds: 5), "\(notrack.report)")
        let alarm = Cluster(seed: 22, nodes: nodes, mode: .alarm(refreshTime: 2, cacheTimeout: 10), drop: 15, jitter: 10)
        #expect(alarm.run(busy: 100, settleSeconds: 30), "\(alarm.report)")
    }

    @Test func idlePeersExchangeOnlyKeepalives() {
        let sim = Cluster(seed: 7, drop: 0)
        #expect(sim.run(busy: 10))
        let before = sim.network.datagrams
        for _ in 0..<500 { sim.step() }  // 5 s idle
        // One ACK or ALIVE a second each way, nothing else.
        #expect(sim.network.datagrams - before <= 12)
        #expect(sim.converged)
    }

    @Test func sequenceArithmeticWraps() {
        #expect(SequenceNumber.before(UInt32.max, 0))
        #expect(SequenceNumber.after(2, UInt32.max - 1))
        #expect(SequenceNumber.between(0, UInt32.max, 1))
        #expect(!SequenceNumber.between(5, 6, 10))
    }
}

/// Seeds per loss setting (60 pass in about 8 s on 2 cores; CI runs 25).
enum LossySeeds { static let count = 25 }
