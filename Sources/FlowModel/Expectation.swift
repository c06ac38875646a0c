/// A conntrack expectation: a connection a helper (ftp, sip, ...) expects because of what it
/// saw on its master connection, e.g. the data connection an FTP `PORT` command announced.
/// The kernel keys it by the expected tuple under its mask, and ties it to the master flow.
public struct Expectation: Hashable, Sendable {
    public var family: AddressFamily
    /// The master connection's original tuple and protocol.
    public var master: Tuple
    public var masterProto: L4Protocol
    /// The tuple expected, and its mask (which bits of addresses and ports must match).
    public var expected: Tuple
    public var proto: L4Protocol
    public var mask: Tuple
    /// Seconds left; nil when not known or not to be set.
    public var timeout: UInt32?
    public var zone: UInt16 = 0
    /// NF_CT_EXPECT_PERMANENT (1), INACTIVE (2), USERSPACE (4).
    public var flags: UInt32 = 0
    public var expectationClass: UInt32 = 0
    public var helper: String?
    /// The kernel's expectfn (e.g. `nat-follow-master`).
    public var function: String?
    /// Where a NATed expected connection goes: its direction and tuple.
    public var nat: ExpectationNAT?
    /// The kernel's id (informational).
    public var id: UInt32?

    public init(family: AddressFamily, master: Tuple, masterProto: L4Protocol, expected: Tuple, proto: L4Protocol, mask: Tuple) {
        self.family = family
        self.master = master
        self.masterProto = masterProto
        self.expected = expected
        self.proto = proto
        self.mask = mask
    }

    /// What identifies the expectation in a cache: its expected tuple and mask, its master, its
    /// zone (conntrackd compares master, expected tuple and mask).
    public var key: ExpectationKey {
        ExpectationKey(family: family, proto: proto, expected: expected, mask: mask, master: master, masterProto: masterProto, zone: zone)
    }

    public static let permanent: UInt32 = 1
    public static let inactive: UInt32 = 2
    public static let userspace: UInt32 = 4
}

/// An expectation's identity in the daemon's caches.
public struct ExpectationKey: Hashable, Sendable {
    public var family: AddressFamily
    public var proto: L4Protocol
    public var expected: Tuple
    public var mask: Tuple
    public var master: Tuple
    public var masterProto: L4Protocol
    public var zone: UInt16

    public init(
        family: AddressFamily, proto: L4Protocol, expected: Tuple, mask: Tuple, master: Tuple, masterProto: L4Protocol, zone: UInt16
    ) {
        self.family = family
        self.proto = proto
        self.expected = expected
        self.mask = mask
        self.master = master
        self.masterProto = masterProto
        self.zone = zone
    }

    /// The master flow's key (to find it in a flow cache).
    public var masterKey: FlowKey { FlowKey(proto: masterProto, original: master, icmp: nil, zone: zone) }
}

extension Tuple {
    /// Whether `other` agrees with this tuple on every bit `mask` keeps (ports too when the
    /// protocol has them).
    public func matches(_ other: Tuple, mask: Tuple, ports: Bool) -> Bool {
        guard source.matches(network: other.source, mask: mask.source), destination.matches(network: other.destination, mask: mask.destination)
        else { return false }
        guard ports else { return true }
        return sourcePort & mask.sourcePort == other.sourcePort & mask.sourcePort
            && destinationPort & mask.destinationPort == other.destinationPort & mask.destinationPort
    }
}

/// NAT of an expected connection: the tuple it is mapped to, and the direction.
public struct ExpectationNAT: Hashable, Sendable {
    public var direction: UInt32
    public var tuple: Tuple
    public var proto: L4Protocol
    public init(direction: UInt32, tuple: Tuple, proto: L4Protocol) {
        self.direction = direction
        self.tuple = tuple
        self.proto = proto
    }
}

/// conntrack's `-L expect` line (libnetfilter_conntrack's default expectation layout):
/// `298 proto=6 src=A dst=B sport=0 dport=3000 mask-src=... master-src=... class=0 helper=ftp`.
public enum ExpectationText {
    public static func line(_ e: Expectation, event: String? = nil, showTimeout: Bool = true) -> String {
        var words: [String] = []
        if let event { words.append(String(repeating: " ", count: max(0, 9 - event.count - 2)) + "[\(event)]") }
        if showTimeout, let timeout = e.timeout { words.append("\(timeout)") }
        words.append("proto=\(e.proto.rawValue)")
        words.append("src=\(e.expected.source) dst=\(e.expected.destination)")
        words += ports(e.expected, e.proto)
        words.append("mask-src=\(e.mask.source) mask-dst=\(e.mask.destination)")
        words += ports(e.mask, e.proto)
        words.append("master-src=\(e.master.source) master-dst=\(e.master.destination)")
        words += ports(e.master, e.masterProto)
        if e.zone != 0 { words.append("zone=\(e.zone)") }
        var flags: [String] = []
        if e.flags & Expectation.permanent != 0 { flags.append("PERMANENT") }
        if e.flags & Expectation.inactive != 0 { flags.append("INACTIVE") }
        if e.flags & Expectation.userspace != 0 { flags.append("USERSPACE") }
        if !flags.isEmpty { words.append(flags.joined(separator: ",")) }
        words.append("class=\(e.expectationClass)")
        if let helper = e.helper { words.append("helper=\(helper)") }
        return words.joined(separator: " ")
    }

    private static func ports(_ t: Tuple, _ proto: L4Protocol) -> [String] {
        if proto == .gre { return ["srckey=0x\(String(t.sourcePort, radix: 16)) dstkey=0x\(String(t.destinationPort, radix: 16))"] }
        if proto.hasPorts { return ["sport=\(t.sourcePort) dport=\(t.destinationPort)"] }
        return []
    }
}
