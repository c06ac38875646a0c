import Configuration
import ControlProtocol
import Foundation
import SyncEngine
import SystemCalls

/// Every figure the daemon reports, as one value: encoded as JSON for `ctsync stats -o json`
/// (snake_case keys) and rendered in conntrackd's `-s` text layouts by `statsText`.
struct DaemonStatistics: Codable, Equatable {
    struct Cache: Codable, Equatable {
        var active: Int
        var created: Int
        var createFailed: Int
        var updated: Int
        var updateFailed: Int
        var destroyed: Int
        var destroyFailed: Int
        var noSpace: Int

        init(_ cache: FlowCache) { self.init(counters: cache.counters, active: cache.count) }
        init(_ cache: ExpectationCache) { self.init(counters: cache.counters, active: cache.count) }

        init(counters c: CacheCounters, active: Int) {
            self.active = active
            created = c.created
            createFailed = c.createFailed
            updated = c.updated
            updateFailed = c.updateFailed
            destroyed = c.destroyed
            destroyFailed = c.destroyFailed
            noSpace = c.noSpace
        }
    }

    struct Sync: Codable, Equatable {
        var mode: String
        var sent: Int
        var received: Int
        var retransmitted: Int
        var acksSent: Int
        var nacksSent: Int
        var nacksReceived: Int
        var lost: Int
        var before: Int
        var peerRestarts: Int
        var resendQueue: Int
        var resendQueueOverflows: Int
        var malformed: Int
        /// By conntrackd's `-s network` category.
        var malformedKinds: [String: Int]
        var currentLink: String
        var datagramsSent: UInt64
        var datagramsReceived: UInt64
        var bytesSent: UInt64
        var bytesReceived: UInt64
        var sendErrors: UInt64
        /// Datagrams or connections from an address that is not the configured peer, on all links.
        var unknownPeer: UInt64
        /// Messages far outside the receive window (dropped), and runs of them adopted.
        var outOfWindow: Int
        var numberingsAdopted: Int
        /// The peer's flows the Filter section refused, and those a full external cache refused.
        var receivedFiltered: Int
        var receivedRefused: Int
        /// Frame authentication (`Auth`), when on.
        var auth: Auth?
        /// The peer's table in whole since last asked for; silences of the peer (3 s and more)
        /// and stalls repaired (docs/failover.md, "Sync health").
        var inSync: Bool = false
        /// Changes of flows already queued, sent in the one message (`UpdateDelay`).
        var coalesced: Int = 0
        var peerSilences: Int = 0
        var stallRepairs: Int = 0
        /// Milliseconds since the peer was last heard (any message the mode took); nil: never.
        var peerHeardMsAgo: Int64?
        /// Every dedicated link, in configuration order.
        var links: [Link] = []
    }

    /// One dedicated link: whether it can send now (a TCP link: connected), whether it is the
    /// one sending, and its traffic.
    struct Link: Codable, Equatable {
        var interface: String
        var kind: String
        var up: Bool
        var current: Bool
        var datagramsSent: UInt64
        var datagramsReceived: UInt64
        var bytesSent: UInt64
        var bytesReceived: UInt64
        var sendErrors: UInt64
        var receiveErrors: UInt64
        var unknownPeer: UInt64
    }

    struct Auth: Codable, Equatable {
        var algorithm: String
        var nodeId: UInt32
        var keyId: UInt8
        var accepted: UInt64
        /// Frames dropped before decoding, all reasons; then by reason.
        var refused: UInt64
        var badTag: UInt64
        var unknownKey: UInt64
        var replayed: UInt64
        var staleEpoch: UInt64
        var ownNodeId: UInt64
        var malformed: UInt64
        /// New runs of peers heard (a peer's restart, as authentication sees it).
        var peerEpochs: UInt64
    }

    struct Traffic: Codable, Equatable {
        var bytes: UInt64
        var packets: UInt64
    }

    struct Netlink: Codable, Equatable {
        var eventsReceived: Int
        var eventsFiltered: Int
        var overruns: Int
        var resyncs: Int
        var resyncAdded: Int
        var resyncRemoved: Int
        var kernelFlushes: Int
        var bufferSize: Int
        var silentFlows: Int
    }

    struct Inject: Codable, Equatable {
        var created: Int
        var updated: Int
        var failed: Int
        var destroyed: Int
        var destroyFailed: Int
        var eventsIgnored: Int
    }

    struct Commit: Codable, Equatable {
        var commits: Int
        var running: Bool
        var created: Int
        var updated: Int
        var failed: Int
    }

    struct Control: Codable, Equatable {
        var requests: Int
        var readFailed: Int
        var unknown: Int
        /// Answers abandoned because the client stopped reading for 5 s, or made room for a
        /// newcomer with `ControlServer.connectionLimit` connections open.
        var stalled: Int
    }

    var uptimeSeconds: Int64
    var internalCache: Cache
    var externalCache: Cache
    var sync: Sync?
    var hashLimit: Int
    var traffic: Traffic
    var netlink: Netlink
    var inject: Inject?
    var commit: Commit
    var control: Control
    /// `ExpectationSync`: the expectation caches.
    var expectations: Expectations?

    struct Expectations: Codable, Equatable {
        var `internal`: Cache
        var external: Cache
        var eventsReceived: Int
        var eventsFiltered: Int
        /// Expectation messages of the peer dropped because ExpectationSync is off.
        var ignored: Int
    }

    enum CodingKeys: String, CodingKey {
        case uptimeSeconds
        case internalCache = "internal"
        case externalCache = "external"
        case sync, hashLimit, traffic, netlink, inject, commit, control, expectations
    }

    /// One line of JSON.
    var json: String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}") + "\n"
    }
}

extension Daemon {
    /// The figures as they are now.
    func statistics() -> DaemonStatistics {
        let now = monotonicMilliseconds() / 1000
        var sync: DaemonStatistics.Sync?
        if let mode = node.mode, let links = environment.links {
            let e = mode.counters
            let c = links[node.currentLink].counters
            sync = DaemonStatistics.Sync(
                mode: mode.name, sent: e.sent, received: e.received, retransmitted: e.retransmitted, acksSent: e.acksSent, nacksSent: e.nacksSent,
                nacksReceived: e.nacksReceived, lost: e.lost, before: e.before, peerRestarts: e.peerRestarts, resendQueue: mode.resendQueueLength,
                resendQueueOverflows: e.resendQueueOverflows, malformed: node.malformed.values.reduce(0, +), malformedKinds: node.malformed,
                currentLink: links[node.currentLink].config.interface, datagramsSent: c.datagramsSent, datagramsReceived: c.datagramsReceived,
                bytesSent: c.bytesSent, bytesReceived: c.bytesReceived, sendErrors: c.sendErrors,
                unknownPeer: links.links.reduce(0) { $0 + $1.counters.unknownPeer }, outOfWindow: e.outOfWindow,
                numberingsAdopted: e.numberingsAdopted, receivedFiltered: node.receivedFiltered, receivedRefused: node.receivedRefused)
            sync?.inSync = node.initialSyncComplete
            sync?.coalesced = e.coalesced
            sync?.peerSilences = node.peerSilences
            sync?.stallRepairs = node.stallRepairs
            sync?.peerHeardMsAgo = node.peerHeardAt.map { max(0, monotonicMilliseconds() - $0) }
            sync?.links = links.links.enumerated().map { index, link in
                let c = link.counters
                return DaemonStatistics.Link(
                    interface: link.config.interface, kind: link.config.kind.rawValue.lowercased(), up: link.canSend,
                    current: index == node.currentLink, datagramsSent: c.datagramsSent, datagramsReceived: c.datagramsReceived,
                    bytesSent: c.bytesSent, bytesReceived: c.bytesReceived, sendErrors: c.sendErrors, receiveErrors: c.receiveErrors,
                    unknownPeer: c.unknownPeer)
            }
            if let a = links.auth?.authenticator {
                let c = a.counters
                sync?.auth = DaemonStatistics.Auth(
                    algorithm: a.algorithm.name, nodeId: a.nodeId, keyId: a.keys[0].id, accepted: c.accepted, refused: c.refused,
                    badTag: c.badTag, unknownKey: c.unknownKey, replayed: c.replayed, staleEpoch: c.staleEpoch, ownNodeId: c.ownNodeId,
                    malformed: c.malformed, peerEpochs: c.peerEpochs)
            }
        }
        let m = node.mirror
        let inject = environment.injector.map { injector in
            let c = injector.counters
            return DaemonStatistics.Inject(
                created: c.created, updated: c.updated, failed: c.createFailed, destroyed: c.destroyed, destroyFailed: c.destroyFailed,
                eventsIgnored: listener?.ignoredEvents ?? 0)
        }
        var statistics = DaemonStatistics(
            uptimeSeconds: max(0, now - stats.startedAt), internalCache: .init(node.internalCache), externalCache: .init(node.externalCache),
            sync: sync, hashLimit: node.internalCache.limit,
            traffic: .init(bytes: node.internalCache.trafficBytes, packets: node.internalCache.trafficPackets),
            netlink: .init(
                eventsReceived: m.eventsReceived, eventsFiltered: m.eventsFiltered, overruns: m.overruns, resyncs: m.resyncs,
                resyncAdded: m.resyncAdded, resyncRemoved: m.resyncRemoved, kernelFlushes: stats.kernelFlushes, bufferSize: stats.bufferSize,
                silentFlows: node.silentFlowCount),
            inject: inject,
            commit: .init(
                commits: stats.commits, running: committer?.running ?? false, created: stats.commitCreated, updated: stats.commitUpdated,
                failed: stats.commitFailed),
            control: .init(
                requests: stats.localRequests, readFailed: control?.readFailures ?? 0, unknown: control?.unknownRequests ?? 0,
                stalled: control?.stalledClients ?? 0))
        if syncsExpectations || node.expectationsIgnored > 0 {
            statistics.expectations = .init(
                internal: .init(node.internalExpectations), external: .init(node.externalExpectations),
                eventsReceived: node.expectationEventsReceived, eventsFiltered: node.expectationEventsFiltered, ignored: node.expectationsIgnored)
        }
        return statistics
    }

    /// A `-s` section in conntrackd's layout.
    func statsText(_ section: StatsSection) -> String {
        let s = statistics()
        let current = environment.links.map { $0[node.currentLink] }
        let channel =
            current.map {
                StatsReport.channel($0.counters, device: $0.config.interface, kind: $0.config.kind, connections: $0.connections)
            } ?? ""
        if config.sync == nil && config.stats != nil {
            // Stats mode (a Stats section, no Sync): conntrackd's one cache, named "stats",
            // and the traffic of the flows that ended; nothing about links or messages.
            switch section {
            case .general:
                return StatsReport.cacheSummary(name: "stats", active: s.internalCache.active, counters: node.internalCache.counters)
                    + StatsReport.traffic(bytes: s.traffic.bytes, packets: s.traffic.packets)
            case .cache:
                return StatsReport.cacheDetail(name: "stats", active: s.internalCache.active, counters: node.internalCache.counters)
            case .runtime:
                return StatsReport.runtime(s, eventsUnknown: stats.eventsUnknown)
            case .network, .link, .queue, .rsqueue, .process, .expect:
                return ""
            }
        }
        switch section {
        case .general:
            return
                (node.bypassesInternalCache
                ? StatsReport.bypassSummary(node.bypassCounters)
                : StatsReport.cacheSummary(name: "internal", active: s.internalCache.active, counters: node.internalCache.counters))
                + (environment.injector.map { StatsReport.injectSummary($0.counters) }
                    ?? StatsReport.cacheSummary(name: "external", active: s.externalCache.active, counters: node.externalCache.counters))
                + StatsReport.traffic(bytes: s.traffic.bytes, packets: s.traffic.packets)
                + channel
                + StatsReport.messageTracking(malformed: s.sync?.malformed ?? 0, lost: s.sync?.lost ?? 0)
        case .cache:
            return
                (node.bypassesInternalCache
                ? StatsReport.bypassSummary(node.bypassCounters)
                : StatsReport.cacheDetail(name: "internal", active: s.internalCache.active, counters: node.internalCache.counters))
                + StatsReport.cacheDetail(name: "external", active: s.externalCache.active, counters: node.externalCache.counters)
        case .runtime:
            return StatsReport.runtime(s, eventsUnknown: stats.eventsUnknown)
        case .network:
            return StatsReport.network(malformed: s.sync?.malformedKinds ?? [:], lost: s.sync?.lost ?? 0, before: s.sync?.before ?? 0) + channel
        case .rsqueue:
            return "resent queue (len=\(s.sync?.resendQueue ?? 0))\n"
        case .queue:
            return StatsReport.queues()
        case .link:
            guard let links = environment.links else { return "" }
            return links.links.enumerated().map { index, c in
                StatsReport.channel(
                    c.counters, device: c.config.interface, kind: c.config.kind, link: true, status: SyncLinks.status(c.config.interface),
                    active: index == node.currentLink)
            }.joined()
        case .expect:
            // conntrackd prints nothing unless expectations are replicated; else the `-s`
            // layout with the expectation caches.
            guard syncsExpectations else { return "" }
            return StatsReport.cacheSummary(name: "internal", active: node.internalExpectations.count, counters: node.internalExpectations.counters)
                + StatsReport.cacheSummary(name: "external", active: node.externalExpectations.count, counters: node.externalExpectations.counters)
                + StatsReport.traffic(bytes: s.traffic.bytes, packets: s.traffic.packets)
                + channel
                + StatsReport.messageTracking(malformed: s.sync?.malformed ?? 0, lost: s.sync?.lost ?? 0)
        case .process:
            return ""
        }
    }
}
