import FlowModel
import SyncProtocol
import TestSupport
import Testing

@testable import SyncEngine

/// `ExpectationSync` through the real node over the simulated network: a helper's expectations
/// (an FTP data connection announced on its master) reach the peer's external expectation cache
/// exactly, through loss and reordering, a restart of the peer and the end of expectations;
/// only the listed helpers' and only those whose master is held.
@Suite struct ExpectationSyncTests {
    /// The FTP expectation the master flow `master` announces for data port `port`.
    static func expectation(of master: Flow, port: UInt16, helper: String = "ftp") -> FlowModel.Expectation {
        var e = FlowModel.Expectation(
            family: .ipv4, master: master.original, masterProto: master.proto,
            expected: Tuple(source: master.original.source, destination: master.original.destination, sourcePort: 0, destinationPort: port),
            proto: .tcp,
            mask: Tuple(
                source: IPAddress(ipv4: 0xffff_ffff), destination: IPAddress(ipv4: 0xffff_ffff), sourcePort: 0, destinationPort: 0xffff))
        e.timeout = 300
        e.helper = helper
        return e
    }

    /// An FTP control connection (port 21, the ftp helper) of firewall `node`.
    static func ftpMaster(_ id: Int, node: UInt32) -> Flow {
        var f = simFlow(id, version: 0, node: node, port: 21)
        f.helper = "ftp"
        return f
    }

    static func cluster(
        seed: UInt64, mode: SyncModeSettings = .ftfw(windowSize: 30, resendQueueSize: 131_072), drop: UInt64, helpers: [String]? = nil
    )
        -> Cluster
    {
        let sim = Cluster(seed: seed, mode: mode, drop: drop, jitter: drop > 0 ? 20 : 0)
        for index in sim.firewalls.indices {
            var settings = sim.firewalls[index].node.settings
            settings.expectations = { e in helpers.map { names in names.contains { e.helper?.hasPrefix($0) == true } } ?? true }
            let fresh = SimFirewall(name: sim.firewalls[index].name, settings: settings, now: 0)
            fresh.start(now: 0)
            sim.firewalls[index] = fresh
        }
        return sim
    }

    /// b's external expectations against a's internal ones (and a's internal against a's kernel).
    static func exact(_ sim: Cluster) -> Bool {
        let sent = sim.a.node.internalExpectations
        let held = sim.b.node.externalExpectations
        return sent.count == held.count && sent.table.allSatisfy { key, entry in held[key]?.expectation == entry.expectation }
    }

    @Test(arguments: [(UInt64(0), UInt64(0)), (1, 20), (2, 20), (3, 35)])
    func expectationsReachThePeerExactly(seed: UInt64, drop: UInt64) {
        let sim = Self.cluster(seed: seed, drop: drop)
        var masters: [Flow] = []
        for id in 0..<40 {
            let master = Self.ftpMaster(id, node: 0)
            sim.a.create(master, now: sim.now)
            masters.append(master)
            sim.step()
        }
        var made: [FlowModel.Expectation] = []
        for (index, master) in masters.enumerated() {
            let e = Self.expectation(of: master, port: UInt16(40000 + index))
            sim.a.expect(e, now: sim.now)
            made.append(e)
            if index % 3 == 0 { sim.step() }
        }
        #expect(sim.a.node.internalExpectations.count == 40)
        #expect(sim.settle(seconds: 60), "\(sim.report)")
        #expect(Self.exact(sim), "a \(sim.a.node.internalExpectations.count) b \(sim.b.node.externalExpectations.count)")
        // Half end (the data connection came, or the timeout): they leave the peer too.
        for e in made.prefix(20) { sim.a.unexpect(e, now: sim.now) }
        #expect(sim.settle(seconds: 60), "\(sim.report)")
        #expect(Self.exact(sim) && sim.b.node.externalExpectations.count == 20)
        if drop > 0 { #expect(sim.a.node.mode!.counters.retransmitted > 0) }
    }

    /// The peer restarts after expectations ended while it was down: it announces what it
    /// holds, and those it no longer has are swept from our external cache.
    @Test func aRestartedPeersVanishedExpectationsAreSwept() {
        let sim = Self.cluster(seed: 9, drop: 10)
        let master = Self.ftpMaster(1, node: 1)
        sim.b.create(master, now: sim.now)
        let kept = Self.expectation(of: master, port: 50001)
        let vanished = Self.expectation(of: master, port: 50002)
        sim.b.expect(kept, now: sim.now)
        sim.b.expect(vanished, now: sim.now)
        #expect(sim.settle(seconds: 30))
        #expect(sim.a.node.externalExpectations.count == 2)
        sim.b.expectations.removeValue(forKey: vanished.key)  // ended while b's daemon was down
        sim.restart(1, sequence: 4242)
        #expect(sim.settle(seconds: 30), "\(sim.report)")
        for _ in 0..<300 { sim.step() }
        #expect(sim.a.node.externalExpectations.count == 1)
        #expect(sim.a.node.externalExpectations[kept.key] != nil)
    }

    /// Only the listed helpers' expectations, and only those whose master the internal cache
    /// holds, are replicated; NOTRACK and ALARM carry them too, and ALARM forgets what is no
    /// longer refreshed.
    @Test(arguments: [SyncModeSettings.notrack, .alarm(refreshTime: 2, cacheTimeout: 6)])
    func helperListMasterAndModes(mode: SyncModeSettings) {
        let sim = Self.cluster(seed: 5, mode: mode, drop: 0, helpers: ["ftp"])
        let master = Self.ftpMaster(7, node: 0)
        sim.a.create(master, now: sim.now)
        let ftp = Self.expectation(of: master, port: 40001)
        let sip = Self.expectation(of: master, port: 40002, helper: "sip")
        let orphanMaster = Self.ftpMaster(8, node: 0)
        let orphan = Self.expectation(of: orphanMaster, port: 40003)  // its master is not held
        for e in [ftp, sip, orphan] { sim.a.expect(e, now: sim.now) }
        for _ in 0..<100 { sim.step() }
        #expect(sim.a.node.internalExpectations.count == 1)
        #expect(sim.b.node.externalExpectations.count == 1 && sim.b.node.externalExpectations[ftp.key] != nil)
        #expect(sim.a.node.expectationEventsFiltered == 2)
        if case .alarm = mode {
            // a stops sending (its link is cut): b forgets after CacheTimeout.
            sim.network.cut.insert([0, 1])
            for _ in 0..<800 { sim.step() }
            #expect(sim.b.node.externalExpectations.count == 0)
        } else {
            sim.a.unexpect(ftp, now: sim.now)
            for _ in 0..<100 { sim.step() }
            #expect(sim.b.node.externalExpectations.count == 0)
        }
    }

    /// Without ExpectationSync the peer's expectation messages are dropped and counted.
    @Test func notEnabledIgnoresThem() {
        let sim = Self.cluster(seed: 3, drop: 0)
        let plain = Cluster(seed: 3, drop: 0)
        sim.firewalls[1] = plain.firewalls[1]
        let master = Self.ftpMaster(3, node: 0)
        sim.a.create(master, now: sim.now)
        sim.a.expect(Self.expectation(of: master, port: 40000), now: sim.now)
        for _ in 0..<100 { sim.step() }
        #expect(sim.b.node.externalExpectations.count == 0)
        #expect(sim.b.node.expectationsIgnored >= 1)
        #expect(sim.b.node.externalCache.count == 1)
    }
}
