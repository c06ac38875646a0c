/// A layer-4 protocol number with the names the conntrack tool uses.
public struct L4Protocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let icmp = L4Protocol(rawValue: 1)
    public static let tcp = L4Protocol(rawValue: 6)
    public static let udp = L4Protocol(rawValue: 17)
    public static let dccp = L4Protocol(rawValue: 33)
    public static let gre = L4Protocol(rawValue: 47)
    public static let icmpv6 = L4Protocol(rawValue: 58)
    public static let sctp = L4Protocol(rawValue: 132)
    public static let udplite = L4Protocol(rawValue: 136)

    static let names: [(L4Protocol, String)] = [
        (.tcp, "tcp"), (.udp, "udp"), (.udplite, "udplite"), (.icmp, "icmp"),
        (.icmpv6, "icmpv6"), (.sctp, "sctp"), (.dccp, "dccp"), (.gre, "gre"),
    ]

    /// The conntrack tool's name, or "unknown" as it prints for other numbers.
    public var name: String { Self.names.first { $0.0 == self }?.1 ?? "unknown" }
    public var description: String { name }

    /// Parses a name (`tcp`, `ipv6-icmp` too) or a number 0...255.
    public init?(name: String) {
        let lower = name.lowercased()
        if let hit = Self.names.first(where: { $0.1 == lower }) {
            self = hit.0
        } else if lower == "ipv6-icmp" || lower == "icmp6" {
            self = .icmpv6
        } else if let n = UInt8(lower) {
            self.init(rawValue: n)
        } else {
            return nil
        }
    }

    /// Protocols whose tuples carry 16-bit ports (GRE keys ride in the same slots).
    public var hasPorts: Bool { self == .tcp || self == .udp || self == .udplite || self == .sctp || self == .dccp || self == .gre }
    public var isICMP: Bool { self == .icmp || self == .icmpv6 }
}

/// A protocol state (TCP, SCTP or DCCP) as the kernel numbers it, named as conntrack prints it.
public protocol NamedState: RawRepresentable<UInt8>, Hashable, Sendable, CustomStringConvertible {
    static var stateNames: [String] { get }
}

extension NamedState {
    public var name: String {
        Int(rawValue) < Self.stateNames.count ? Self.stateNames[Int(rawValue)] : Self.stateNames[0]
    }
    public var description: String { name }
    public init?(name: String) {
        let upper = name.uppercased()
        // TCP's state 9 is printed SYN_SENT2 (as conntrack and the kernel name it) and read
        // also as LISTEN (conntrack's -I --state LISTEN, conntrackd's filter names).
        let wanted = upper == "LISTEN" && Self.stateNames.contains("SYN_SENT2") ? "SYN_SENT2" : upper
        guard let index = Self.stateNames.firstIndex(of: wanted) else { return nil }
        self.init(rawValue: UInt8(index))
    }
}

public struct TCPState: NamedState {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let stateNames = [
        "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
        "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
    ]
    public static let none = TCPState(rawValue: 0)
    public static let synSent = TCPState(rawValue: 1)
    public static let synRecv = TCPState(rawValue: 2)
    public static let established = TCPState(rawValue: 3)
    public static let finWait = TCPState(rawValue: 4)
    public static let closeWait = TCPState(rawValue: 5)
    public static let lastAck = TCPState(rawValue: 6)
    public static let timeWait = TCPState(rawValue: 7)
    public static let close = TCPState(rawValue: 8)
}

public struct SCTPState: NamedState {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let stateNames = [
        "NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
        "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED",
    ]
}

public struct DCCPState: NamedState {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let stateNames = [
        "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
        "IGNORE", "INVALID",
    ]
}

/// The kernel's `IPS_*` status bits of a flow.
public struct FlowStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let expected = FlowStatus(rawValue: 1 << 0)
    public static let seenReply = FlowStatus(rawValue: 1 << 1)
    public static let assured = FlowStatus(rawValue: 1 << 2)
    public static let confirmed = FlowStatus(rawValue: 1 << 3)
    public static let srcNAT = FlowStatus(rawValue: 1 << 4)
    public static let dstNAT = FlowStatus(rawValue: 1 << 5)
    public static let seqAdjust = FlowStatus(rawValue: 1 << 6)
    public static let srcNATDone = FlowStatus(rawValue: 1 << 7)
    public static let dstNATDone = FlowStatus(rawValue: 1 << 8)
    public static let dying = FlowStatus(rawValue: 1 << 9)
    public static let fixedTimeout = FlowStatus(rawValue: 1 << 10)
    public static let template = FlowStatus(rawValue: 1 << 11)
    public static let natClash = FlowStatus(rawValue: 1 << 12)
    public static let helper = FlowStatus(rawValue: 1 << 13)
    public static let offload = FlowStatus(rawValue: 1 << 14)
    public static let hwOffload = FlowStatus(rawValue: 1 << 15)

    /// Bit names in bit order, as the kernel and conntrack spell them.
    public static let bitNames: [String] = [
        "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST",
        "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "NAT_CLASH",
        "HELPER", "OFFLOAD", "HW_OFFLOAD",
    ]

    /// Names of the bits set, in bit order; unnamed bits as `BIT<n>`.
    public var names: [String] {
        (0..<32).compactMap { bit -> String? in
            guard rawValue & (1 << UInt32(bit)) != 0 else { return nil }
            return bit < Self.bitNames.count ? Self.bitNames[bit] : "BIT\(bit)"
        }
    }

    public var description: String { names.joined(separator: ",") }

    /// Parses one bit name (case-insensitive); `UNSET` is the empty set, as in conntrack.
    public init?(name: String) {
        let upper = name.uppercased()
        if upper == "UNSET" {
            self = []
        } else if let bit = Self.bitNames.firstIndex(of: upper) {
            self.init(rawValue: 1 << UInt32(bit))
        } else {
            return nil
        }
    }

    /// Parses a comma-separated list of bit names.
    public init?(list: String) {
        var result: FlowStatus = []
        for part in list.split(separator: ",") {
            guard let one = FlowStatus(name: String(part).trimmingSpaces) else { return nil }
            result.formUnion(one)
        }
        self = result
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
