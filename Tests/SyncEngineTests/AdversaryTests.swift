import FlowModel
import SyncProtocol
import TestSupport
import Testing

@testable import SyncEngine

/// A stranger on the sync link (no authentication): forged frames handed to the real node next
/// to the real peer's traffic. One packet must not change what the node holds (security review,
/// findings 4 to 6); each test fails against the FTFW the daemon ran before.
@Suite struct AdversaryTests {
    /// Delivers one forged message to `firewall`, as if it came on its link.
    func forge(_ message: SyncMessage, to firewall: SimFirewall, now: Int64) {
        SyncWire.encode(message).withUnsafeBytes { firewall.node.receive($0, link: 0, now: now, environment: firewall) }
    }

    /// A converged pair with b's flows in a's external cache.
    func converged(seed: UInt64, drop: UInt64 = 0) -> Cluster {
        let sim = Cluster(seed: seed, drop: drop, jitter: drop > 0 ? 10 : 0)
        _ = sim.run(busy: 100, on: [1])
        return sim
    }

    /// Finding 4: one forged HELLO emptied the external cache for good (the restart sweep ran on
    /// it and the real peer's messages were then taken for old ones). Now the real peer's next
    /// messages, in its own numbering, show the restart was not its own: nothing is swept.
    @Test(arguments: [UInt32(0), 1 << 31, 0xffff_fff0])
    func aForgedHelloEmptiesNothing(sequence: UInt32) {
        let sim = converged(seed: 31)
        let held = sim.a.node.externalCache.count
        #expect(held > 50 && sim.converged)
        forge(SyncMessage(sequence: sequence, hello: [.hello], body: .alive), to: sim.a, now: sim.now)
        for _ in 0..<500 { sim.step() }  // 5 s: past the sweep's quiet time
        #expect(sim.a.node.externalCache.count == held, "\(sim.report)")
        sim.churn(50, on: [1])
        #expect(sim.settle(seconds: 20), "\(sim.report)")
    }

    /// Finding 5: an ALIVE numbered far ahead made every later message of the real peer count
    /// as old. A message cannot move the receive sequence beyond a bounded window.
    @Test func aMessageFarAheadDoesNotStallTheReceiver() {
        let sim = converged(seed: 32)
        forge(SyncMessage(sequence: UInt32.random(in: 1 << 30...1 << 31, using: &sim.rng), body: .alive), to: sim.a, now: sim.now)
        sim.churn(80, on: [1])
        #expect(sim.settle(seconds: 20), "\(sim.report)")
        #expect(sim.a.node.mode!.counters.outOfWindow >= 1)
    }

    /// Finding 5: a forged ACK covering more than was ever sent released the resend queue, so
    /// losses were never repaired. An ACK acknowledges only what was sent.
    @Test func anAckBeyondWhatWasSentIsIgnored() {
        let sim = converged(seed: 33, drop: 30)
        sim.churn(100, on: [0])
        sim.step()
        let queued = sim.a.node.mode!.resendQueueLength
        #expect(queued > 0)
        // From a's first number to far past its last: everything sent, and more.
        let first = UInt32(truncatingIfNeeded: UInt64(33) &* 7919)
        let sent = UInt32(truncatingIfNeeded: sim.a.node.mode!.counters.sent)
        let next = (UInt32.max - 50) &+ UInt32(truncatingIfNeeded: sim.b.node.mode!.counters.sent)  // as b numbers
        forge(SyncMessage(sequence: next, body: .ack(from: first, to: first &+ sent &+ 100_000)), to: sim.a, now: sim.now)
        #expect(sim.a.node.mode!.resendQueueLength == queued)
        #expect(sim.settle(seconds: 60), "\(sim.report)")
    }

    /// Finding 6: 50 forged RESYNC requests made the daemon send its table 50 times. Bulk
    /// answers are coalesced: at most one per second.
    @Test func resyncRequestsAreRateLimited() {
        let sim = converged(seed: 34)
        sim.churn(200, on: [0])
        #expect(sim.settle(seconds: 20))
        let table = sim.a.node.internalCache.count
        let before = sim.a.node.mode!.counters.sent
        // Numbered as b numbers (b's first number and what it sent since), so a takes them.
        var sequence = (UInt32.max - 50) &+ UInt32(truncatingIfNeeded: sim.b.node.mode!.counters.sent)
        for _ in 0..<50 {
            sequence &+= 1
            forge(SyncMessage(sequence: sequence, body: .resync), to: sim.a, now: sim.now)
            sim.step(20)  // 50 requests within a second
        }
        let sent = sim.a.node.mode!.counters.sent - before
        #expect(sent < 3 * table, "sent \(sent) messages for a table of \(table)")
        #expect(sim.settle(seconds: 20), "\(sim.report)")
    }

    /// Finding 6: with the link unable to send, messages opening sequence gaps queued an ACK and
    /// a NACK each, without bound. Pending ACKs and NACKs are capped (the oldest ACKs give way,
    /// further NACKs merge).
    @Test func gapFloodKeepsTheControlQueueBounded() {
        let sim = converged(seed: 35)
        sim.a.sendable = false
        var sequence: UInt32 = 1_000
        for _ in 0..<10_000 {
            sequence &+= 3
            forge(SyncMessage(sequence: sequence, body: .alive), to: sim.a, now: sim.now)
        }
        sim.step()
        #expect(sim.a.node.mode!.transmitQueueLength <= 2 * FTFWMode.pendingControlLimit + 2, "\(sim.a.node.mode!.transmitQueueLength)")
        sim.a.sendable = true
        sim.churn(50, on: [1])
        #expect(sim.settle(seconds: 30), "\(sim.report) a: \(sim.a.node.mode!.counters) \(sim.a.logs.suffix(5)) b: \(sim.b.node.mode!.counters)")
    }

    /// Counters wrap, never trap, whatever the gaps.
    @Test func gapCountersNeverTrap() {
        var mode = FTFWMode(initialSequence: 1, now: 0)
        var sequence: UInt32 = 0
        for _ in 0..<1_000 {
            sequence &+= UInt32.max / 2
            _ = mode.receive(SyncMessage(sequence: sequence, body: .alive), now: 0)
        }
        var notrack = NotrackMode(initialSequence: 1, now: 0)
        for _ in 0..<1_000 {
            sequence &+= UInt32.max / 2
            _ = notrack.receive(SyncMessage(sequence: sequence, body: .alive), now: 0)
        }
        #expect(mode.counters.received == 1_000 && notrack.counters.received == 1_000)
    }

    /// Finding 7: with the external cache full, the peer's flows were refused with only a
    /// counter. Now the log says so (at most every 10 s, with how many).
    @Test func aFullExternalCacheSaysSo() {
        let sim = Cluster(seed: 40, drop: 0, hashLimits: [1: 50])
        _ = sim.run(busy: 60, perStep: 5, on: [0], settleSeconds: 5)
        #expect(sim.b.node.externalCache.count == 50)
        #expect(sim.b.node.receivedRefused > 0)
        let lines = sim.b.logs.filter { $0.1.contains("external cache full (HashLimit 50)") }
        #expect(lines.count >= 1 && lines.count <= 2, "\(lines)")
        #expect(lines.first?.0 == .warning)
    }

    /// Finding 1: received flows were not filtered (the Filter section applied to local events
    /// only). A flow the receiver's Filter refuses never reaches its external cache, or its
    /// kernel without one.
    @Test(arguments: [false, true])
    func theFilterAppliesToWhatThePeerSends(injects: Bool) {
        let sim = Cluster(seed: 41, drop: 10, jitter: 10, injects: injects, filters: [1: { $0.original.sourcePort % 2 == 0 }])
        _ = sim.run(busy: 100, on: [0], settleSeconds: 10)
        let sent = sim.a.node.internalCache.keys
        let held = injects ? Array(sim.b.kernel.keys) : sim.b.node.externalCache.keys
        #expect(Set(held) == Set(sent.filter { $0.original.sourcePort % 2 == 0 }))
        #expect(sim.b.node.receivedFiltered > 0)
    }

    /// Finding 6: forged messages opening gaps, turn after turn, filled the resend queue with
    /// our ACKs and NACKs until it evicted real flows still waiting for acknowledgement (their
    /// loss could no longer be repaired). Now only flows and resync requests wait there.
    @Test func aGapFloodEvictsNoRealFlowFromTheResendQueue() {
        let sim = Cluster(seed: 42, mode: .ftfw(windowSize: 30, resendQueueSize: 2000), drop: 30, jitter: 10)
        _ = sim.run(busy: 50, on: [1], settleSeconds: 10)
        // a's resend queue is small, so a flood could fill it quickly.
        var sequence = (UInt32.max - 50) &+ UInt32(truncatingIfNeeded: sim.b.node.mode!.counters.sent) &+ 100_000
        for step in 0..<300 {
            sim.churn(3, on: [0])
            for _ in 0..<20 {
                sequence &+= 2  // in the window, a gap each time
                forge(SyncMessage(sequence: sequence, body: .alive), to: sim.a, now: sim.now)
            }
            sim.step()
            if step % 50 == 0 { #expect(sim.a.node.mode!.counters.resendQueueOverflows == 0) }
        }
        #expect(sim.a.node.mode!.counters.resendQueueOverflows == 0)
        #expect(sim.settle(seconds: 60), "\(sim.report)")
    }

    /// NACK handling is rate-limited: forged NACKs covering everything in flight, a hundred a
    /// second, make a send at most a resend queue's worth again per second (each NACK resent
    /// the whole queue before), and the pair still converges.
    @Test func nackFloodIsRateLimited() {
        let sim = Cluster(seed: 43, mode: .ftfw(windowSize: 30, resendQueueSize: 500), drop: 100, jitter: 0)
        sim.churn(400, on: [0])
        for _ in 0..<5 { sim.step() }
        let queued = sim.a.node.mode!.resendQueueLength
        #expect(queued > 150, "\(queued)")
        let first = UInt32(truncatingIfNeeded: UInt64(43) &* 7919)
        let before = sim.a.node.mode!.counters.sent
        var sequence = (UInt32.max - 50) &+ UInt32(truncatingIfNeeded: sim.b.node.mode!.counters.sent)
        for _ in 0..<100 {
            sequence &+= 1
            let last = first &+ UInt32(truncatingIfNeeded: sim.a.node.mode!.counters.sent) &- 1
            forge(SyncMessage(sequence: sequence, body: .nack(from: first, to: last)), to: sim.a, now: sim.now)
            sim.step()  // 10 ms: 100 NACKs within a second
        }
        let resent = sim.a.node.mode!.counters.sent - before
        #expect(resent <= 2 * 500 + 200, "resent \(resent) messages for \(queued) in flight")
        #expect(sim.a.node.mode!.counters.nacksLimited > 0)
        sim.network.drop = 0
        #expect(sim.settle(seconds: 60), "\(sim.report)")
    }

    /// What a burst leaves behind is given back: 20,000 flows sent while the peer cannot
    /// answer fill the resend queue and its index; once acknowledged, their capacity goes
    /// (Swift's containers never shrink by themselves: the soak's daemon followed its largest
    /// burst).
    @Test func aBurstsQueuesAreGivenBackOnceAcknowledged() {
        let sim = Cluster(seed: 44, drop: 0)
        sim.network.blocked = [0]
        for id in 0..<20_000 {
            sim.a.create(simFlow(id, version: 0, node: 0), now: sim.now)
            sim.live[0][id] = 0
        }
        sim.nextID[0] = 20_000
        for _ in 0..<20 { sim.step() }
        let ftfw = { sim.a.node.mode as! FTFWMode }
        #expect(ftfw().resendQueueLength >= 20_000)
        let peak = ftfw().capacities
        #expect(peak["resendQueue"]! >= 20_000 && peak["resendFlows"]! >= 20_000, "\(peak)")
        sim.network.blocked = []
        #expect(sim.settle(seconds: 60), "\(sim.report)")
        for _ in 0..<300 { sim.step() }  // 3 s of ticks
        let after = ftfw().capacities
        for (name, capacity) in after {
            #expect(capacity <= 2 * FTFWMode.spareCapacityFloor, "\(name): \(capacity) entries kept (peak \(peak[name]!))")
        }
    }
}
