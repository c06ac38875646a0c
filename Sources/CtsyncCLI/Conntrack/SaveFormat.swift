import Conntrack

/// conntrack's `-o save`: each flow as the command line that makes it again, e.g.
/// `-A -t 49 -u SEEN_REPLY -s 198.18.0.1 -d 198.18.0.2 -r 198.18.0.2 -q 198.18.0.1 -p tcp --sport 10 ...`,
/// which `-R` reads back. As conntrack writes it: no mark, labels, helper or counters; a
/// DNAT'ed reply source as `-g`, an SNAT'ed reply destination as `-n`.
enum SaveFormat {
    static func line(_ flow: Flow, prefix: String) -> String {
        var words = [prefix]
        if let timeout = flow.timeout { words += ["-t", "\(timeout)"] }
        let shown: [(FlowStatus, String)] = [
            (.expected, "EXPECTED"), (.seenReply, "SEEN_REPLY"), (.assured, "ASSURED"), (.fixedTimeout, "FIXED_TIMEOUT"),
        ]
        let status = shown.filter { flow.status.contains($0.0) }.map(\.1)
        words += ["-u", status.isEmpty ? "UNSET" : status.joined(separator: ",")]
        if flow.zone != 0 { words += ["-w", "\(flow.zone)"] }
        if let z = flow.originalZone { words += ["--orig-zone", "\(z)"] }
        if let z = flow.replyZone { words += ["--reply-zone", "\(z)"] }
        words += ["-s", "\(flow.original.source)", "-d", "\(flow.original.destination)"]
        let dnat = flow.status.contains(.dstNATDone) && flow.reply.source != flow.original.destination
        let snat = flow.status.contains(.srcNATDone) && flow.reply.destination != flow.original.source
        words += [dnat ? "-g" : "-r", "\(flow.reply.source)", snat ? "-n" : "-q", "\(flow.reply.destination)"]
        let known: [L4Protocol] = [.tcp, .udp, .udplite, .sctp, .dccp, .icmp, .icmpv6, .gre]
        words += ["-p", known.contains(flow.proto) ? flow.proto.name : "\(flow.proto.rawValue)"]
        switch flow.proto {
        case .tcp, .udp, .udplite, .sctp, .dccp:
            words += [
                "--sport", "\(flow.original.sourcePort)", "--dport", "\(flow.original.destinationPort)", "--reply-port-src",
                "\(flow.reply.sourcePort)", "--reply-port-dst", "\(flow.reply.destinationPort)",
            ]
            if let state = flow.stateName { words += ["--state", state] }
            if let sctp = flow.sctp { words += ["--orig-vtag", "\(sctp.originalVerificationTag)", "--reply-vtag", "\(sctp.replyVerificationTag)"] }
            if let dccp = flow.dccp { words += ["--role", dccp.role == 0 ? "client" : "server"] }
        case .gre:
            words += [
                "--srckey", "\(flow.original.sourcePort)", "--dstkey", "\(flow.original.destinationPort)", "--reply-key-src",
                "\(flow.reply.sourcePort)", "--reply-key-dst", "\(flow.reply.destinationPort)",
            ]
        case .icmp, .icmpv6:
            if let icmp = flow.icmp {
                let p = flow.proto == .icmp ? "icmp" : "icmpv6"
                words += ["--\(p)-type", "\(icmp.type)", "--\(p)-code", "\(icmp.code)", "--\(p)-id", "\(icmp.id)"]
            }
        default: break
        }
        return words.joined(separator: " ")
    }
}
