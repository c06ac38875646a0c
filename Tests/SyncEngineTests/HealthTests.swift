import FlowModel
import SyncProtocol
import TestSupport
import Testing

@testable import SyncEngine

/// `SyncNode.health`: each verdict `ctsync health` can give, on the simulated pair.
@Suite struct HealthTests {
    func verdict(_ firewall: SimFirewall, _ sim: Cluster) -> SyncHealth { firewall.node.health(now: sim.now) }

    @Test(arguments: [SyncModeSettings.ftfw(windowSize: 30, resendQueueSize: 131_072), .notrack])
    func aConvergedPairIsHealthyAndWasNotBefore(mode: SyncModeSettings) {
        let sim = Cluster(seed: 51, mode: mode, drop: 0)
        // Before any contact: the peer unheard, its table not in.
        let early = verdict(sim.a, sim)
        #expect(!early.healthy && early.reasons.contains { $0.contains("not been heard since the daemon started") }, "\(early)")
        #expect(!early.initialSyncComplete)
        #expect(sim.run(busy: 100), "\(sim.report)")
        for _ in 0..<300 { sim.step() }  // 3 s: quiet after the tables
        for firewall in [sim.a, sim.b] {
            let v = verdict(firewall, sim)
            #expect(v.healthy && v.initialSyncComplete && v.reasons.isEmpty, "\(firewall.name): \(v)")
            #expect((v.peerHeardMsAgo ?? .max) <= 1100)
        }
        #expect(sim.a.logs.contains { $0.1.contains("in sync: the peer's table has come in") })
    }

    /// A link that carries nothing: the peer unheard and our messages unacknowledged, logged;
    /// healthy again once it carries again, with no restart.
    @Test func aSilentPeerAndUnacknowledgedMessagesAreReported() {
        let sim = Cluster(seed: 52, drop: 0)
        #expect(sim.run(busy: 50))
        for _ in 0..<200 { sim.step() }
        #expect(verdict(sim.a, sim).healthy)
        sim.network.blocked = [0]
        sim.churn(40, on: [0])
        for _ in 0..<700 { sim.step() }  // 7 s
        let v = verdict(sim.a, sim)
        #expect(!v.healthy, "\(v)")
        #expect(v.reasons.contains { $0.contains("not been heard for") }, "\(v)")
        #expect(v.reasons.contains { $0.contains("unacknowledged for") }, "\(v)")
        #expect(sim.a.logs.contains { $0.1.contains("the peer has been silent for 3 s") }, "\(sim.a.logs.suffix(5))")
        sim.network.blocked = []
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        for _ in 0..<200 { sim.step() }
        #expect(verdict(sim.a, sim).healthy, "\(verdict(sim.a, sim))")
        #expect(sim.a.logs.contains { $0.1.contains("the peer is heard again after") })
    }

    /// After the peer restarts its table is asked for again: not healthy until it is in.
    @Test func aRestartedPeerMakesTheTablePendingUntilItIsIn() {
        let sim = Cluster(seed: 53, drop: 0)
        #expect(sim.run(busy: 80))
        for _ in 0..<200 { sim.step() }
        #expect(verdict(sim.a, sim).healthy)
        sim.restart(1, sequence: 777)
        var sawPending = false
        for _ in 0..<300 {
            sim.step()
            if verdict(sim.a, sim).reasons.contains(where: { $0.contains("asked for again") }) { sawPending = true }
        }
        #expect(sawPending)
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        for _ in 0..<300 { sim.step() }
        #expect(verdict(sim.a, sim).healthy, "\(verdict(sim.a, sim))")
        #expect(verdict(sim.b, sim).healthy, "\(verdict(sim.b, sim))")
    }

    /// A peer whose table never stops changing (a busy firewall) is never quiet: its table,
    /// asked for after its restart, is still judged in (by how many flows came since the
    /// answer), the node turns healthy while the churn goes on, and the ghosts of flows that
    /// ended while the peer was down are swept. Before, health waited for a quiet second that
    /// never came, the table was asked for again every 30 s, and the ghosts stayed.
    @Test func aTableUnderSteadyChurnIsJudgedInAndGhostsGo() {
        let sim = Cluster(seed: 55, drop: 0)
        #expect(sim.run(busy: 80))
        for _ in 0..<200 { sim.step() }
        // Flows that end on b while its daemon is down: their ends are never announced.
        let gone = Array(sim.live[1].keys.sorted().prefix(10))
        for id in gone {
            sim.live[1].removeValue(forKey: id)
            sim.b.destroy(simFlow(id, version: 0, node: 1).key, now: sim.now, silently: true)
        }
        sim.restart(1, sequence: 4242)
        var pending = false
        var healthyAgain = false
        for _ in 0..<3500 {  // 35 s, b changing one flow every 10 ms all along
            sim.churn(1, on: [1])
            sim.step()
            let v = sim.a.node.health(now: sim.now)
            if !v.healthy && v.reasons.contains(where: { $0.contains("asked for again") }) { pending = true }
            if pending && v.healthy { healthyAgain = true }
        }
        #expect(pending && healthyAgain, "\(sim.a.node.health(now: sim.now))")
        let ghosts = gone.filter { sim.a.node.externalCache[simFlow($0, version: 0, node: 1).key] != nil }
        #expect(ghosts.isEmpty, "\(ghosts.count) ghosts of flows b ended while down")
        let asks = sim.a.logs.filter { $0.1.contains("has not come in whole: asking again") }.count
        #expect(asks == 0, "the table was asked for again \(asks) times")
    }

    @Test func aFullExternalCacheIsReported() {
        let sim = Cluster(seed: 54, drop: 0, hashLimits: [0: 20])
        sim.churn(200, on: [1])
        for _ in 0..<300 { sim.step() }
        let v = verdict(sim.a, sim)
        #expect(v.reasons.contains { $0.contains("external cache is full") }, "\(v)")
        #expect(v.externalFlows == 20)
    }
}

/// A stuck sync mends itself (docs/failover.md, "Sync health").
@Suite struct StallRepairTests {
    /// Two links, the current one carrying nothing in either direction although it is up (no
    /// carrier loss to notice): after 3 s of silence each node tries the next link, and the
    /// pair converges there. Without the repair both would wait on the dead link for ever.
    @Test func aLinkThatCarriesNothingIsLeft() {
        let sim = Cluster(seed: 61, drop: 0, links: 2)
        #expect(sim.run(busy: 40))
        for _ in 0..<200 { sim.step() }
        #expect(sim.a.node.currentLink == 0 && sim.b.node.currentLink == 0)
        sim.network.blocked = [0]
        sim.churn(60)
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        #expect(sim.a.node.currentLink == 1 && sim.b.node.currentLink == 1)
        #expect(sim.a.node.stallRepairs >= 1)
        #expect(sim.a.logs.contains { $0.1.contains("nothing heard from the peer for 3 s") }, "\(sim.a.logs.suffix(5))")
        for _ in 0..<300 { sim.step() }
        #expect(sim.a.node.health(now: sim.now).healthy, "\(sim.a.node.health(now: sim.now))")
    }

    /// The peer heard but our messages never acknowledged (one direction cut): after 5 s they
    /// are sent again, logged and counted; once the direction carries again the pair converges.
    @Test func unacknowledgedMessagesAreSentAgain() {
        let sim = Cluster(seed: 62, drop: 0)
        #expect(sim.run(busy: 40))
        for _ in 0..<200 { sim.step() }
        sim.network.cut = [[0, 1]]
        sim.churn(50, on: [0])
        for _ in 0..<700 { sim.step() }
        #expect(sim.a.node.stallRepairs >= 1)
        #expect(sim.a.logs.contains { $0.1.contains("has acknowledged none of our messages") }, "\(sim.a.logs.suffix(5))")
        #expect(!sim.a.node.health(now: sim.now).healthy)
        sim.network.cut = []
        #expect(sim.settle(seconds: 30), "\(sim.report)")
    }
}

/// Loss the protocol cannot repair by itself is repaired with a table, and said.
@Suite struct UnrecoveredLossTests {
    /// The peer does not acknowledge for so long that our resend queue (64 here) overflows:
    /// the oldest messages are given up. Once the peer acknowledges again our whole table goes,
    /// so its copy is exact again. Without the repair the given-up flows never reach it.
    @Test func messagesGivenUpAreRepairedWithOurTable() {
        let sim = Cluster(seed: 63, mode: .ftfw(windowSize: 30, resendQueueSize: 64), drop: 0)
        #expect(sim.run(busy: 20), "\(sim.report)")
        for _ in 0..<200 { sim.step() }
        sim.network.cut = [[0, 1]]
        sim.churn(300, on: [0])
        for _ in 0..<400 { sim.step() }  // 4 s: b has heard nothing for 3 s
        #expect(sim.a.node.mode!.counters.resendQueueOverflows > 0)
        #expect(sim.a.logs.contains { $0.0 == .warning && $0.1.contains("given up unacknowledged (resend queue full)") }, "\(sim.a.logs.suffix(5))")
        sim.network.cut = []
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        #expect(
            sim.a.logs.contains { $0.1.contains("sending our table") && $0.1.contains("to repair the messages given up") }, "\(sim.a.logs.suffix(5))")
    }

    /// The peer's messages lost in a gap right after a silence (what it sent meanwhile may have
    /// left its resend queue): its table is asked for again, `health` says "unrecovered loss"
    /// until it is in, then healthy.
    @Test func aGapAfterASilenceAsksForTheTableAndIsReported() {
        let sim = Cluster(seed: 64, drop: 0)
        #expect(sim.run(busy: 20), "\(sim.report)")
        for _ in 0..<200 { sim.step() }
        sim.network.cut = [[0, 1]]
        sim.churn(100, on: [0])
        for _ in 0..<400 { sim.step() }  // 4 s: b has logged a's silence
        #expect(sim.b.logs.contains { $0.1.contains("the peer has been silent") })
        sim.network.cut = []
        var reported = false
        for _ in 0..<300 {
            sim.step()
            if sim.b.node.health(now: sim.now).unrecoveredLoss { reported = true }
        }
        #expect(reported, "\(sim.b.logs.suffix(6))")
        #expect(sim.b.logs.contains { $0.0 == .warning && $0.1.contains("lost beyond repair") }, "\(sim.b.logs.suffix(6))")
        #expect(sim.b.logs.contains { $0.0 == .warning && $0.1.contains("the peer is heard again") })
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        for _ in 0..<300 { sim.step() }
        let v = sim.b.node.health(now: sim.now)
        #expect(v.healthy && !v.unrecoveredLoss, "\(v)")
        #expect(sim.b.logs.contains { $0.1.contains("the loss is repaired") })
    }

    /// NOTRACK resends nothing: a lost message has the peer's table asked for again (at most
    /// every 30 s), and the pair ends exact.
    @Test func notrackLossAsksForTheTable() {
        let sim = Cluster(seed: 65, mode: .notrack, drop: 0)
        #expect(sim.run(busy: 20), "\(sim.report)")
        for _ in 0..<200 { sim.step() }
        sim.network.drop = 30
        sim.churn(100, on: [0])
        for _ in 0..<20 { sim.step() }
        sim.network.drop = 0
        #expect(sim.settle(seconds: 60), "\(sim.report) \(sim.b.logs.suffix(8)) \(sim.a.logs.suffix(4))")
        #expect(sim.b.logs.contains { $0.1.contains("lost beyond repair") }, "\(sim.b.logs.suffix(6))")
    }
}

extension UnrecoveredLossTests {
    /// Loss that never stops (a peer, or a stranger, opening gaps all along) asks for the table
    /// at most once every 30 s: it cannot make the peer send its table over and over.
    @Test func tableRequestsForLossAreRateLimited() {
        let sim = Cluster(seed: 66, mode: .notrack, drop: 0)
        #expect(sim.run(busy: 20), "\(sim.report)")
        sim.network.drop = 30
        for _ in 0..<6000 {  // 60 s of churn under 30 % loss
            sim.churn(2, on: [0])
            sim.step()
        }
        let requests = sim.b.logs.filter { $0.1.contains("lost beyond repair") }.count
        #expect(requests >= 2 && requests <= 3, "\(requests) table requests in 60 s")
    }
}

/// Update coalescing (`Options { UpdateDelay }`): updates of one flow within the delay go out as
/// one message, nothing waits longer than the delay, and a datagram's worth goes at once.
@Suite struct CoalescingTests {
    func pair(delay: Int64) -> Cluster { Cluster(seed: 71, drop: 0, updateDelay: delay) }

    @Test func updatesWithinTheDelayGoOutAsOneMessage() {
        var sent: [Int64: Int] = [:]
        for delay: Int64 in [0, 50] {
            let sim = pair(delay: delay)
            #expect(sim.run(busy: 20, on: [0]))
            for _ in 0..<200 { sim.step() }
            let before = sim.a.node.mode!.counters.sent
            // 10 flows (less than a datagram), each updated 5 times, one update every 10 ms.
            let ids = Array(sim.live[0].keys.sorted().prefix(10))
            for round in 1...5 {
                for id in ids {
                    sim.live[0][id]! += 1
                    sim.a.update(simFlow(id, version: sim.live[0][id]!, node: 0), now: sim.now)
                }
                _ = round
                sim.step()
            }
            #expect(sim.settle(seconds: 10), "\(sim.report)")
            let messages = sim.a.node.mode!.counters.sent - before
            sent[delay] = messages
            if delay > 0 { #expect(sim.a.node.mode!.counters.coalesced >= 30, "\(sim.a.node.mode!.counters)") }
        }
        // Without the delay each step's updates go out: five rounds; with it, one or two.
        #expect(sent[50]! * 2 < sent[0]!, "\(sent)")
    }

    @Test func nothingWaitsLongerThanTheDelay() {
        let sim = pair(delay: 50)
        #expect(sim.run(busy: 10, on: [0]))
        for _ in 0..<200 { sim.step() }
        let before = sim.a.node.mode!.counters.sent
        sim.updateOne(on: 0)
        sim.step()  // 10 ms: held
        #expect(sim.a.node.mode!.counters.sent == before)
        #expect(sim.a.node.nextDeadline ?? .max <= sim.now + 50)
        for _ in 0..<5 { sim.step() }  // 60 ms in all: out
        #expect(sim.a.node.mode!.counters.sent > before)
    }

    /// The delay merges updates; a new flow (or an ended one) is not kept back: it goes at the
    /// next transmit, with whatever updates are held beside it.
    @Test func newFlowsAreNotHeld() {
        let sim = pair(delay: 50)
        #expect(sim.run(busy: 10, on: [0]))
        for _ in 0..<200 { sim.step() }
        let before = sim.a.node.mode!.counters.sent
        sim.updateOne(on: 0)
        sim.createOne(on: 0)
        sim.step()
        #expect(sim.a.node.mode!.counters.sent >= before + 2)
    }
}
