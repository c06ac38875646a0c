import Conntrack
import Foundation
import Logging
import SyncEngine
import SyncProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Replication for the daemon: the FTFW engine, the dedicated links to the peer and the
/// external cache. Owned and driven by the daemon's loop (no thread of its own).
///
/// Up to four links (conntrackd's `MULTICHANNEL_MAX`): every one is listened on, the current
/// one sends. The current link changes when it goes down (flags checked each second and on a
/// send error: the next link that is up and running takes over) and when the peer's messages
/// arrive on another link (the peer's choice is followed, as conntrackd does). FTFW repairs
/// what was lost on the way: the engine is per peer, not per link.
final class Replication {
    var engine: FTFWEngine
    let channels: [any SyncLink]
    private(set) var current: Int
    /// The link that sends now.
    var channel: any SyncLink { channels[current] }
    private let log: Logger
    private var nextLinkCheck: Int64 = 0
    private var noLinkLogged = false
    var external: FlowCache
    let options: EncodeOptions
    let modeName: String
    /// Malformed messages by conntrackd's `-s network` category.
    var malformed: [String: Int] = [:]
    private var datagram: [UInt8] = []
    /// After the peer restarted: its flows we hold that it has not announced again yet.
    private var stale: Set<FlowKey>?
    private var lastPeerData: Int64 = 0
    /// Quiet time (no data from the peer) after which unannounced flows are ghosts.
    static let staleSweepMilliseconds: Int64 = 2000

    init(config: SyncConfig, hashLimit: Int, now: Int64, log: Logger) throws {
        let ftfw: FTFWOptions
        switch config.mode {
        case .ftfw(let options): ftfw = options
        case .notrack: ftfw = FTFWOptions()  // same numbering, no reliability
        case .alarm(let options):
            ftfw = FTFWOptions()  // same numbering, no reliability, no ALIVE
            alarm = options
        }
        guard !config.channels.isEmpty else { throw DaemonError.startup("Sync section without a UDP, Multicast or TCP link") }
        var opened: [any SyncLink] = []
        for link in config.channels {
            do {
                if link.kind == .tcp {
                    opened.append(try StreamChannel(link, errorQueueLength: config.errorQueueLength))
                } else {
                    opened.append(try DatagramChannel(link))
                }
            } catch {
                throw DaemonError.startup("sync link \(link.interface): \(error)")
            }
        }
        channels = opened
        payloadLimit = opened.map(\.payloadLimit).min() ?? 1472
        current = min(config.defaultChannelIndex ?? 0, opened.count - 1)
        self.log = log
        var reliable = true
        if case .notrack = config.mode { reliable = false }
        if alarm != nil { reliable = false }
        engine = FTFWEngine(
            initialSequence: UInt32(truncatingIfNeeded: time(nil)), windowSize: ftfw.ackWindowSize,
            resendQueueLimit: ftfw.resendQueueSize, reliable: reliable, sendsAlive: alarm == nil, now: now)
        nextRefresh = now + 1000
        external = FlowCache(limit: hashLimit)
        options = EncodeOptions(includeTimeout: config.commitTimeout == nil, includeWindowScale: config.tcpWindowTracking)
        modeName = config.mode.name
        injecting = !config.mode.usesExternalCache
    }

    /// The smallest payload of all links, so a datagram fits whichever link carries it.
    let payloadLimit: Int

    /// Sends everything the engine has queued, packed into datagrams of at most the link's payload size.
    func flush(now: Int64, cache: FlowCache) {
        // A TCP link that is down with its queue full: the messages wait in the engine (one
        // per flow, the latest state) rather than being encoded and dropped.
        guard channel.canSend else { return }
        let messages = engine.transmit(now: now) { cache[$0]?.flow }
        guard !messages.isEmpty else { return }
        datagram.removeAll(keepingCapacity: true)
        var encoded: [UInt8] = []
        for message in messages {
            encoded.removeAll(keepingCapacity: true)
            SyncWire.encode(message, into: &encoded, options: options)
            if !datagram.isEmpty && datagram.count + encoded.count > payloadLimit {
                datagram.withUnsafeBytes { send($0) }
                datagram.removeAll(keepingCapacity: true)
            }
            datagram += encoded
        }
        if !datagram.isEmpty { datagram.withUnsafeBytes { send($0) } }
    }

    /// The peer restarted: every flow we hold for it is suspect until it announces it again
    /// (its startup announcement, or the answer to our resync request). conntrackd keeps such
    /// flows forever, the ghosts of connections that ended while the peer was down.
    func peerRestarted(now: Int64) {
        stale = Set(external.keys)
        lastPeerData = now
    }

    /// Removes the flows the restarted peer did not announce again, once it has been quiet for a
    /// while. Returns how many went.
    func sweepStale(now: Int64) -> Int? {
        guard let keys = stale, now - lastPeerData >= Self.staleSweepMilliseconds else { return nil }
        stale = nil
        var removed = 0
        for key in keys {
            if let entry = external[key] {
                external.remove(entry.flow)
                removed += 1
            }
        }
        return removed
    }

    var sweepDue: Int64? { stale == nil ? nil : lastPeerData + Self.staleSweepMilliseconds }

    // MARK: - DisableExternalCache

    /// `DisableExternalCache on`: the peer's flows go straight into the kernel table.
    let injecting: Bool
    /// Received and not yet written to the kernel (the daemon drains it after each read).
    var injectQueue: [(FlowMessageKind, Flow)] = []
    /// The injection's results, for the statistics.
    var injected = CacheCounters()

    // MARK: - ALARM mode

    /// ALARM mode's settings; nil in the other modes.
    private(set) var alarm: AlarmOptions?
    private var nextRefresh: Int64 = 0
    /// Where the refresh sweep is in the internal cache's entry array.
    private var refreshPosition = 0

    /// When `refresh` or `expire` next has work (ALARM mode only).
    var alarmDue: Int64? { alarm == nil ? nil : nextRefresh }

    /// ALARM, once a second: sends the next slice of the internal cache again, so that every
    /// flow goes out once per `RefreshTime` (soft state: the peer forgets what is not
    /// refreshed), and drops the external flows the peer has not refreshed for `CacheTimeout`.
    /// The slice walks the cache's dense array: no timer per flow. Returns how many expired.
    func alarmTick(now: Int64, cache: FlowCache) -> Int {
        guard let alarm, now >= nextRefresh else { return 0 }
        nextRefresh = now + 1000
        let entries = cache.entries
        if !entries.isEmpty {
            let period = max(1, alarm.refreshTime)
            let slice = (entries.count + period - 1) / period
            if refreshPosition >= entries.count { refreshPosition = 0 }
            let end = min(entries.count, refreshPosition + slice)
            for entry in entries[refreshPosition..<end] { engine.flowChanged(entry.flow.key, created: false) }
            refreshPosition = end
        }
        let limit = now / 1000 - Int64(max(1, alarm.cacheTimeout))
        var expired: [Flow] = []
        for entry in external.entries where entry.lastUpdate < limit { expired.append(entry.flow) }
        for flow in expired { external.remove(flow) }
        return expired.count
    }

    // MARK: - Links

    /// A link's state in conntrackd's `-s link` words: DOWN (administratively), NO-CARRIER
    /// (up, but no carrier or lower layer down: a veth whose peer is down), RUNNING. Read from
    /// sysfs, which `ip netns exec` mounts for the daemon's namespace (its `flags` file holds
    /// IFF_UP but never IFF_RUNNING, hence `operstate`).
    static func status(_ interface: String) -> String {
        func read(_ file: String) -> String? {
            (try? String(contentsOfFile: "/sys/class/net/\(interface)/\(file)", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let text = read("flags"), let flags = Int(text.dropFirst(2), radix: 16), flags & Int(IFF_UP) != 0 else { return "DOWN" }
        let state = read("operstate") ?? "unknown"
        return state == "up" || state == "unknown" ? "RUNNING" : "NO-CARRIER"
    }

    /// Whether a link can carry traffic now.
    static func isRunning(_ interface: String) -> Bool { status(interface) == "RUNNING" }

    /// When `checkLinks` next runs (only with several links).
    var linkCheckDue: Int64? { channels.count > 1 ? nextLinkCheck : nil }

    /// With several links: if the current one is down, the next one that runs takes over.
    func checkLinks(now: Int64) {
        guard channels.count > 1 else { return }
        nextLinkCheck = now + 1000
        if Self.isRunning(channel.config.interface) {
            noLinkLogged = false
            return
        }
        for step in 1..<channels.count {
            let candidate = (current + step) % channels.count
            if Self.isRunning(channels[candidate].config.interface) {
                switchLink(to: candidate, reason: "\(channel.config.interface) is down")
                return
            }
        }
        if !noLinkLogged {
            log.warning("no dedicated link available: every sync link is down")
            noLinkLogged = true
        }
    }

    private func switchLink(to index: Int, reason: String) {
        guard index != current else { return }
        current = index
        log.notice("device \(channel.config.interface) becomes the dedicated link (\(reason))")
    }

    /// Reads what arrived on link `index` and applies it; returns the actions the daemon must
    /// take itself. Valid messages on another link than the current one make it current.
    func receive(from index: Int, ready: pollfd, now: Int64, limit: Int) -> [FTFWAction] {
        let before = engine.counters.received
        let actions = receive(channels[index], ready: ready, now: now, limit: limit)
        if index != current && engine.counters.received > before {
            switchLink(to: index, reason: "the peer sends on it")
        }
        return actions
    }

    /// Sends a datagram on the current link; a failure that says the link is gone triggers
    /// the switch at once, and the datagram goes out on the new link.
    private func send(_ bytes: UnsafeRawBufferPointer) {
        if channel.send(bytes) || channels.count == 1 { return }
        let failed = current
        checkLinks(now: monotonicMilliseconds())
        if current != failed { _ = channel.send(bytes) }
    }

    /// The earliest time a link wants its `tick` (a TCP reconnection).
    var linkDeadline: Int64? { channels.compactMap(\.nextDeadline).min() }

    func tickLinks(now: Int64) {
        for link in channels { link.tick(now: now) }
    }

    private func receive(_ link: any SyncLink, ready: pollfd, now: Int64, limit: Int) -> [FTFWAction] {
        var own: [FTFWAction] = []
        link.handle(ready, now: now, limit: limit) { bytes in
            // conntrackd's receive loop: a framing error ends the datagram; a message whose
            // payload is rejected is skipped, but its sequence number still counts (so it is
            // acknowledged, not asked for again and again).
            let (frames, error) = SyncWire.decodeFrames(bytes)
            if let error { malformed[error.statsCategory.rawValue, default: 0] += 1 }
            for frame in frames {
                let message: SyncMessage
                switch frame.message {
                case .success(let decoded):
                    message = decoded
                case .failure(let error):
                    malformed[error.statsCategory.rawValue, default: 0] += 1
                    message = SyncMessage(sequence: frame.header.sequence, hello: frame.header.flags, body: .alive)
                }
                for action in engine.receive(message, now: now) {
                    switch action {
                    case .apply(let kind, let flow) where injecting:
                        injectQueue.append((kind, flow))
                    case .apply(.destroy, let flow):
                        external.remove(flow)
                        stale?.remove(flow.key)
                        lastPeerData = now
                    case .apply(_, let flow):
                        external.store(flow, now: now / 1000)
                        stale?.remove(flow.key)
                        lastPeerData = now
                    case .bulkRequested, .peerRestarted: own.append(action)
                    }
                }
            }
        }
        return own
    }
}
