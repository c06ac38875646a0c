import Configuration
import Foundation
import Logging
import SyncAuth
import SyncProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// The dedicated links to the peer, opened from the Sync section: up to four (conntrackd's
/// `MULTICHANNEL_MAX`), all listened on; the node chooses which one sends (`SyncNode.currentLink`).
/// FTFW repairs what was lost on the way: the mode is per peer, not per link.
final class SyncLinks {
    let links: [any SyncLink]
    /// The smallest payload of all links, so a datagram fits whichever link carries it.
    let payloadLimit: Int

    /// Set when `Auth` is on: every link seals and verifies through it.
    let auth: SyncAuthSession?

    init(_ config: SyncConfig, auth authenticator: FrameAuthenticator? = nil) throws {
        auth = authenticator.map(SyncAuthSession.init)
        guard !config.channels.isEmpty else { throw DaemonError.startup("Sync section without a UDP, Multicast or TCP link") }
        var opened: [any SyncLink] = []
        for link in config.channels {
            do {
                let channel: any SyncLink
                if link.kind == .tcp {
                    channel = try StreamChannel(link, errorQueueLength: config.errorQueueLength, framing: authenticator?.streamFraming ?? .messages)
                } else {
                    channel = try DatagramChannel(link)
                }
                opened.append(auth.map { AuthenticatedLink(channel, session: $0) } ?? channel)
            } catch {
                throw DaemonError.startup("sync link \(link.interface): \(error)")
            }
        }
        links = opened
        reportedUnknown = Array(repeating: 0, count: opened.count)
        payloadLimit = opened.map(\.payloadLimit).min() ?? 1472
    }

    /// Unknown-peer drops already logged, per link, and when the next report may go out.
    private var reportedUnknown: [UInt64]
    private var nextUnknownReport: Int64 = 0
    private var reportedRefused: UInt64 = 0
    /// At most one line per link this often about datagrams from strangers.
    static let unknownReportMilliseconds: Int64 = 10_000

    var count: Int { links.count }

    /// Logs (at most every 10 s) what strangers sent: datagrams or connections from an address
    /// that is not the configured peer, dropped on arrival.
    func reportUnknownPeers(now: Int64, log: Logger) {
        guard now >= nextUnknownReport else { return }
        if let auth, auth.authenticator.counters.refused > reportedRefused {
            let counters = auth.authenticator.counters
            let new = counters.refused - reportedRefused
            reportedRefused = counters.refused
            nextUnknownReport = now + Self.unknownReportMilliseconds
            log.warning(
                "\(new) sync frames refused by authentication (in all: \(counters.badTag) bad tag, \(counters.unknownKey) unknown key, \(counters.replayed) replayed, \(counters.staleEpoch) from an earlier run, \(counters.ownNodeId) with our node id, \(counters.malformed) not a ctsync frame; last: \(counters.lastFailure.map { "\($0)" } ?? "?"))"
            )
        }
        for (index, link) in links.enumerated() where link.counters.unknownPeer > reportedUnknown[index] {
            let new = link.counters.unknownPeer - reportedUnknown[index]
            reportedUnknown[index] = link.counters.unknownPeer
            nextUnknownReport = now + Self.unknownReportMilliseconds
            log.warning(
                "\(link.config.interface): \(new) datagrams or connections from an unknown peer dropped (last from \(link.counters.lastUnknownSource.map { "\($0)" } ?? "?")); only the configured peer is accepted"
            )
        }
    }
    subscript(index: Int) -> any SyncLink { links[index] }
    var names: [String] { links.map(\.config.interface) }

    /// The earliest time a link wants its `tick` (a TCP reconnection).
    var nextDeadline: Int64? { links.compactMap(\.nextDeadline).min() }

    func tick(now: Int64) {
        for link in links where (link.nextDeadline ?? .max) <= now { link.tick(now: now) }
    }

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
}
