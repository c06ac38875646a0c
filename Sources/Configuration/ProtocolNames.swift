import FlowModel

/// Protocol names `Filter { Protocol ... { } }` accepts. conntrackd looks each name up with
/// getprotobyname(3), i.e. in /etc/protocols, case-sensitively (the official name or an alias).
/// ctsync carries Debian netbase 6.4's table instead of reading the file, so a config means the
/// same everywhere; numbers above 255 (mptcp 262) are left out, since they are no IP protocol
/// numbers (conntrackd would write past its 256-bit protocol map).
enum ProtocolNames {
    private static let table: [(number: UInt8, names: [String])] = [
        (0, ["ip", "IP"]), (0, ["hopopt", "HOPOPT"]), (1, ["icmp", "ICMP"]), (2, ["igmp", "IGMP"]), (3, ["ggp", "GGP"]),
        (4, ["ipencap", "IP-ENCAP"]), (5, ["st", "ST"]), (6, ["tcp", "TCP"]), (8, ["egp", "EGP"]), (9, ["igp", "IGP"]),
        (12, ["pup", "PUP"]), (17, ["udp", "UDP"]), (20, ["hmp", "HMP"]), (22, ["xns-idp", "XNS-IDP"]), (27, ["rdp", "RDP"]),
        (29, ["iso-tp4", "ISO-TP4"]), (33, ["dccp", "DCCP"]), (36, ["xtp", "XTP"]), (37, ["ddp", "DDP"]),
        (38, ["idpr-cmtp", "IDPR-CMTP"]), (41, ["ipv6", "IPv6"]), (43, ["ipv6-route", "IPv6-Route"]),
        (44, ["ipv6-frag", "IPv6-Frag"]), (45, ["idrp", "IDRP"]), (46, ["rsvp", "RSVP"]), (47, ["gre", "GRE"]),
        (50, ["esp", "IPSEC-ESP"]), (51, ["ah", "IPSEC-AH"]), (57, ["skip", "SKIP"]), (58, ["ipv6-icmp", "IPv6-ICMP"]),
        (59, ["ipv6-nonxt", "IPv6-NoNxt"]), (60, ["ipv6-opts", "IPv6-Opts"]), (73, ["rspf", "RSPF", "CPHB"]),
        (81, ["vmtp", "VMTP"]), (88, ["eigrp", "EIGRP"]), (89, ["ospf", "OSPFIGP"]), (93, ["ax.25", "AX.25"]),
        (94, ["ipip", "IPIP"]), (97, ["etherip", "ETHERIP"]), (98, ["encap", "ENCAP"]), (103, ["pim", "PIM"]),
        (108, ["ipcomp", "IPCOMP"]), (112, ["vrrp", "VRRP"]), (115, ["l2tp", "L2TP"]), (124, ["isis", "ISIS"]),
        (132, ["sctp", "SCTP"]), (133, ["fc", "FC"]), (135, ["mobility-header", "Mobility-Header"]),
        (136, ["udplite", "UDPLite"]), (137, ["mpls-in-ip", "MPLS-in-IP"]), (138, ["manet"]), (139, ["hip", "HIP"]),
        (140, ["shim6", "Shim6"]), (141, ["wesp", "WESP"]), (142, ["rohc", "ROHC"]), (143, ["ethernet", "Ethernet"]),
    ]

    private static let byName: [String: UInt8] = {
        var map: [String: UInt8] = [:]
        for entry in table {
            for name in entry.names where map[name] == nil { map[name] = entry.number }
        }
        return map
    }()

    /// The protocol a name stands for, exactly as getprotobyname(3) would resolve it.
    static func lookup(_ name: String) -> L4Protocol? {
        byName[name].map { L4Protocol(rawValue: $0) }
    }

    /// A spelling that differs only in case, for error hints.
    static func caseInsensitiveMatch(_ name: String) -> String? {
        let lowered = name.lowercased()
        return byName.keys.filter { $0.lowercased() == lowered }.sorted().first
    }
}
