import Conntrack
import Foundation

/// The kernel's own timeouts for a flow's protocol and state (`nf_conntrack_*_timeout*` in this
/// namespace). A flow the peer sent is written into the kernel (commit, injection) with no more
/// time left than these: the kernel sets the same on the flow's next packet anyway, and a peer's
/// timeout of 99 days (forged, or another kernel's settings) must not keep a hole open.
struct KernelTimeouts: Sendable, Equatable {
    /// TCP, by state number (1 SYN_SENT ... 8 CLOSE).
    var tcp: [UInt8: UInt32]
    var udpStream: UInt32
    var icmp: UInt32
    var icmpv6: UInt32
    var generic: UInt32

    /// The kernel's defaults (Linux 6.x).
    static let defaults = KernelTimeouts(
        tcp: [1: 120, 2: 60, 3: 432_000, 4: 120, 5: 60, 6: 30, 7: 120, 8: 10], udpStream: 120, icmp: 30, icmpv6: 30, generic: 600)

    static let tcpFiles: [UInt8: String] = [
        1: "syn_sent", 2: "syn_recv", 3: "established", 4: "fin_wait", 5: "close_wait", 6: "last_ack", 7: "time_wait", 8: "close",
    ]

    /// What the sysctls in `directory` say; a missing or unreadable one keeps the default.
    static func read(from directory: String = "/proc/sys/net/netfilter") -> KernelTimeouts {
        func value(_ name: String) -> UInt32? {
            (try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8)).flatMap {
                UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        var t = defaults
        for (state, file) in tcpFiles { if let v = value("nf_conntrack_tcp_timeout_\(file)") { t.tcp[state] = v } }
        t.udpStream = value("nf_conntrack_udp_timeout_stream") ?? t.udpStream
        t.icmp = value("nf_conntrack_icmp_timeout") ?? t.icmp
        t.icmpv6 = value("nf_conntrack_icmpv6_timeout") ?? t.icmpv6
        t.generic = value("nf_conntrack_generic_timeout") ?? t.generic
        return t
    }

    /// The most time `flow` may have left.
    func cap(for flow: Flow) -> UInt32 {
        switch flow.proto {
        case .tcp: return flow.tcp.flatMap { tcp[$0.state.rawValue] } ?? tcp[3] ?? Self.defaults.generic
        case .udp, .udplite: return udpStream
        case .icmp: return icmp
        case .icmpv6: return icmpv6
        default: return max(generic, udpStream)
        }
    }
}
