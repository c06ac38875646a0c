import Conntrack
import Foundation
import Logging
import SyncEngine
import SyncProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Replication for the daemon: the FTFW engine, the channel to the peer and the external
/// cache. Owned and driven by the daemon's loop (no thread of its own).
final class Replication {
    var engine: FTFWEngine
    let channel: DatagramChannel
    var external: FlowCache
    let options: EncodeOptions
    let modeName: String
    /// Malformed messages by conntrackd's `-s network` category.
    var malformed: [String: Int] = [:]
    private var datagram: [UInt8] = []

    init(config: SyncConfig, hashLimit: Int, now: Int64, log: Logger) throws {
        guard case .ftfw(let ftfw) = config.mode else {
            throw DaemonError.startup("Sync mode \(config.mode.name) is not supported yet (only FTFW replicates in this version)")
        }
        guard !config.channels.isEmpty else { throw DaemonError.startup("Sync section without a UDP or Multicast link") }
        let chosen = config.channels[config.defaultChannelIndex ?? 0]
        if chosen.kind == .tcp { throw DaemonError.startup("the TCP channel is not supported yet: use UDP or Multicast") }
        if config.channels.count > 1 {
            log.notice(
                "\(config.channels.count) links configured: ctsync uses the default one (\(chosen.interface)); link failover is not acted on yet")
        }
        do {
            channel = try DatagramChannel(chosen)
        } catch {
            throw DaemonError.startup("sync link: \(error)")
        }
        engine = FTFWEngine(
            initialSequence: UInt32(truncatingIfNeeded: time(nil)), windowSize: ftfw.ackWindowSize,
            resendQueueLimit: ftfw.resendQueueSize, now: now)
        external = FlowCache(limit: hashLimit)
        options = EncodeOptions(includeTimeout: config.commitTimeout == nil, includeWindowScale: config.tcpWindowTracking)
        modeName = config.mode.name
    }

    /// Sends everything the engine has queued, packed into datagrams of at most the link's payload size.
    func flush(now: Int64, cache: FlowCache) {
        let messages = engine.transmit(now: now) { cache[$0]?.flow }
        guard !messages.isEmpty else { return }
        datagram.removeAll(keepingCapacity: true)
        var encoded: [UInt8] = []
        for message in messages {
            encoded.removeAll(keepingCapacity: true)
            SyncWire.encode(message, into: &encoded, options: options)
            if !datagram.isEmpty && datagram.count + encoded.count > channel.payloadLimit {
                datagram.withUnsafeBytes { channel.send($0) }
                datagram.removeAll(keepingCapacity: true)
            }
            datagram += encoded
        }
        if !datagram.isEmpty { datagram.withUnsafeBytes { channel.send($0) } }
    }

    /// Reads what arrived and applies it; returns the actions the daemon must take itself.
    func receive(now: Int64, limit: Int) -> [FTFWAction] {
        var own: [FTFWAction] = []
        channel.receive(limit: limit) { bytes in
            let (messages, error) = SyncWire.decodeDatagram(bytes)
            if let error { malformed[error.statsCategory.rawValue, default: 0] += 1 }
            for message in messages {
                for action in engine.receive(message, now: now) {
                    switch action {
                    case .apply(.destroy, let flow): external.remove(flow)
                    case .apply(_, let flow): external.store(flow, now: now / 1000)
                    case .bulkRequested, .peerRestarted: own.append(action)
                    }
                }
            }
        }
        return own
    }
}
