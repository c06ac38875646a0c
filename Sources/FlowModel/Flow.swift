/// One direction of a flow: addresses and, for port-carrying protocols, ports
/// (GRE keys travel in the port slots, as in the kernel's tuple).
public struct Tuple: Hashable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(source: IPAddress, destination: IPAddress, sourcePort: UInt16 = 0, destinationPort: UInt16 = 0) {
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// The tuple seen from the other end: addresses and ports swapped.
    public var inverted: Tuple {
        Tuple(source: destination, destination: source, sourcePort: destinationPort, destinationPort: sourcePort)
    }
}

/// ICMP / ICMPv6 identity of a flow (original direction, as the kernel keys it).
public struct ICMPInfo: Hashable, Sendable {
    public var type: UInt8
    public var code: UInt8
    public var id: UInt16
    public init(type: UInt8, code: UInt8, id: UInt16) {
        self.type = type
        self.code = code
        self.id = id
    }

    /// The type the reply direction carries (echo request 8 → reply 0, ...), as the kernel inverts it.
    public func replyType(family: AddressFamily) -> UInt8 {
        let pairs: [(UInt8, UInt8)] =
            family == .ipv4
            ? [(8, 0), (0, 8), (13, 14), (14, 13), (15, 16), (16, 15), (17, 18), (18, 17)]
            : [(128, 129), (129, 128), (130, 131), (131, 130)]
        return pairs.first { $0.0 == type }?.1 ?? type
    }
}

/// TCP protocol state and window-tracking data.
public struct TCPInfo: Hashable, Sendable {
    public var state: TCPState
    /// `IP_CT_TCP_FLAG_*` per direction (window scale seen, SACK permitted, close init, be liberal, ...).
    public var originalFlags: UInt8
    public var replyFlags: UInt8
    public var originalWindowScale: UInt8
    public var replyWindowScale: UInt8

    /// `IP_CT_TCP_FLAG_BE_LIBERAL`: accept any in-window data (no window tracking).
    public static let beLiberal: UInt8 = 0x08

    public init(
        state: TCPState, originalFlags: UInt8 = 0, replyFlags: UInt8 = 0, originalWindowScale: UInt8 = 0,
        replyWindowScale: UInt8 = 0
    ) {
        self.state = state
        self.originalFlags = originalFlags
        self.replyFlags = replyFlags
        self.originalWindowScale = originalWindowScale
        self.replyWindowScale = replyWindowScale
    }
}

public struct SCTPInfo: Hashable, Sendable {
    public var state: SCTPState
    public var originalVerificationTag: UInt32
    public var replyVerificationTag: UInt32
    public init(state: SCTPState, originalVerificationTag: UInt32 = 0, replyVerificationTag: UInt32 = 0) {
        self.state = state
        self.originalVerificationTag = originalVerificationTag
        self.replyVerificationTag = replyVerificationTag
    }
}

public struct DCCPInfo: Hashable, Sendable {
    public var state: DCCPState
    public var role: UInt8
    public var handshakeSequence: UInt64
    public init(state: DCCPState, role: UInt8 = 0, handshakeSequence: UInt64 = 0) {
        self.state = state
        self.role = role
        self.handshakeSequence = handshakeSequence
    }
}

/// TCP sequence adjustment of a NAT helper (e.g. FTP), per direction.
public struct SequenceAdjustment: Hashable, Sendable {
    public var correctionPosition: UInt32
    public var offsetBefore: UInt32
    public var offsetAfter: UInt32
    public init(correctionPosition: UInt32, offsetBefore: UInt32, offsetAfter: UInt32) {
        self.correctionPosition = correctionPosition
        self.offsetBefore = offsetBefore
        self.offsetAfter = offsetAfter
    }
}

public struct NATSequenceAdjustment: Hashable, Sendable {
    public var original: SequenceAdjustment
    public var reply: SequenceAdjustment
    public init(original: SequenceAdjustment, reply: SequenceAdjustment) {
        self.original = original
        self.reply = reply
    }
}

/// Packet and byte counters per direction (present when `nf_conntrack_acct` is on).
public struct FlowCounters: Hashable, Sendable {
    public var originalPackets: UInt64
    public var originalBytes: UInt64
    public var replyPackets: UInt64
    public var replyBytes: UInt64
    public init(originalPackets: UInt64, originalBytes: UInt64, replyPackets: UInt64, replyBytes: UInt64) {
        self.originalPackets = originalPackets
        self.originalBytes = originalBytes
        self.replyPackets = replyPackets
        self.replyBytes = replyBytes
    }
}

/// The kernel's timestamps of a flow, nanoseconds since 1970 (CTA_TIMESTAMP_START, _STOP).
public struct FlowTimestamps: Hashable, Sendable {
    public var start: UInt64?
    public var stop: UInt64?
    public init(start: UInt64? = nil, stop: UInt64? = nil) {
        self.start = start
        self.stop = stop
    }
}

/// Connection labels: a 128-bit set (the kernel's `NF_CT_LABELS_MAX_SIZE`), held by value.
public struct FlowLabels: Hashable, Sendable {
    public var words: (UInt64, UInt64)
    public init() { words = (0, 0) }
    public init(bits: [Int]) {
        self.init()
        for bit in bits { insert(bit) }
    }
    public static let maxBit = 127
    public var isEmpty: Bool { words.0 == 0 && words.1 == 0 }
    public func contains(_ bit: Int) -> Bool {
        guard bit >= 0 && bit <= Self.maxBit else { return false }
        return bit < 64 ? words.0 & (1 << UInt64(bit)) != 0 : words.1 & (1 << UInt64(bit - 64)) != 0
    }
    public mutating func insert(_ bit: Int) {
        guard bit >= 0 && bit <= Self.maxBit else { return }
        if bit < 64 { words.0 |= 1 << UInt64(bit) } else { words.1 |= 1 << UInt64(bit - 64) }
    }
    public mutating func remove(_ bit: Int) {
        guard bit >= 0 && bit <= Self.maxBit else { return }
        if bit < 64 { words.0 &= ~(1 << UInt64(bit)) } else { words.1 &= ~(1 << UInt64(bit - 64)) }
    }
    public var bits: [Int] { (0...Self.maxBit).filter { contains($0) } }
    /// The names the label map gives the set bits, in bit order (bits without a name left out).
    public func names(in map: [Int: String]) -> [String] { bits.compactMap { map[$0].flatMap { $0.isEmpty ? nil : $0 } } }
    public static func == (a: FlowLabels, b: FlowLabels) -> Bool { a.words == b.words }
    public func hash(into h: inout Hasher) {
        h.combine(words.0)
        h.combine(words.1)
    }
}

/// What identifies a flow in the kernel table: the original tuple, protocol, ICMP identity and zone.
public struct FlowKey: Hashable, Sendable {
    public var proto: L4Protocol
    public var original: Tuple
    public var icmp: ICMPInfo?
    public var zone: UInt16

    public init(proto: L4Protocol, original: Tuple, icmp: ICMPInfo?, zone: UInt16) {
        self.proto = proto
        self.original = original
        self.icmp = icmp
        self.zone = zone
    }

    /// Random per process, so a peer or a traffic source cannot choose tuples that collide
    /// (hash flooding of the caches).
    private static let seeds: (UInt64, UInt64, UInt64, UInt64) = {
        var g = SystemRandomNumberGenerator()
        return (g.next(), g.next(), g.next(), g.next())
    }()

    /// The key's 64-bit hash: three multiply-folds over its packed words (the kind wyhash
    /// uses), seeded per process. It replaces the standard Hasher's per-field SipHash, which
    /// was a sixth of the daemon's CPU per event (caches and the FTFW engine hash each key
    /// several times).
    public var fastHash: UInt64 {
        @inline(__always) func fold(_ a: UInt64, _ b: UInt64) -> UInt64 {
            let product = a.multipliedFullWidth(by: b)
            return product.high ^ product.low
        }
        let s = Self.seeds
        let ports = UInt64(original.sourcePort) << 48 | UInt64(original.destinationPort) << 32
        let kind = UInt64(proto.rawValue) << 24 | UInt64(original.source.family.rawValue) << 16 | UInt64(zone)
        let icmpWord = icmp.map { 1 << 40 | UInt64($0.type) << 24 | UInt64($0.code) << 16 | UInt64($0.id) } ?? 0
        let h =
            fold(original.source.high ^ s.0, original.source.low ^ s.1)
            ^ fold(original.destination.high ^ s.2, original.destination.low ^ s.3)
            ^ fold(ports | kind ^ s.1, icmpWord ^ s.0 ^ UInt64(original.destination.family.rawValue))
        return fold(h ^ s.2, 0x9E37_79B9_7F4A_7C15)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(fastHash) }

    /// What Set and Dictionary ask for: `fastHash` mixed with their per-table seed, without a
    /// Hasher (its SipHash rounds cost more than the key's own hash; the FTFW engine's sets and
    /// maps hash every key of every message several times).
    public func _rawHashValue(seed: Int) -> Int {
        let product = (fastHash ^ UInt64(bitPattern: Int64(seed))).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15)
        return Int(truncatingIfNeeded: product.high ^ product.low)
    }
}

/// One tracked connection, as a firewall pair must carry it: both tuples (NAT is what
/// differs between them), protocol state, status bits, timeout, mark, zone, labels,
/// helper and sequence adjustment. A value type; no C pointers.
///
/// The attributes few flows carry (SCTP and DCCP state, labels, a helper, sequence
/// adjustment, counters) live out of line in one shared, copy-on-write box that exists only
/// when one of them is set: a flow is 168 bytes instead of 304, which is what the listener's
/// queue, the node and the encoder copy per event. The stored properties are ordered for
/// packing (Swift keeps declaration order).
public struct Flow: Hashable, Sendable {
    public var family: AddressFamily
    public var proto: L4Protocol
    public var zone: UInt16
    public var mark: UInt32
    public var original: Tuple
    public var reply: Tuple
    public var status: FlowStatus
    public var icmp: ICMPInfo?
    public var tcp: TCPInfo?
    /// Seconds left before the kernel expires the flow; nil when not known/not to be set.
    public var timeout: UInt32?
    /// The kernel's reference count (informational, never written).
    public var use: UInt32?
    /// The kernel's flow id (informational; used to make deletes exact).
    public var id: UInt32?
    private var rare: FlowRareBox?

    public var sctp: SCTPInfo? {
        get { rare?.value.sctp }
        set { if newValue != nil || rare != nil { modifyRare { $0.sctp = newValue } } }
    }
    public var dccp: DCCPInfo? {
        get { rare?.value.dccp }
        set { if newValue != nil || rare != nil { modifyRare { $0.dccp = newValue } } }
    }
    public var labels: FlowLabels {
        get { rare?.value.labels ?? FlowLabels() }
        set { if !newValue.isEmpty || rare != nil { modifyRare { $0.labels = newValue } } }
    }
    public var helper: String? {
        get { rare?.value.helper }
        set { if newValue != nil || rare != nil { modifyRare { $0.helper = newValue } } }
    }
    public var sequenceAdjustment: NATSequenceAdjustment? {
        get { rare?.value.sequenceAdjustment }
        set { if newValue != nil || rare != nil { modifyRare { $0.sequenceAdjustment = newValue } } }
    }
    public var counters: FlowCounters? {
        get { rare?.value.counters }
        set { if newValue != nil || rare != nil { modifyRare { $0.counters = newValue } } }
    }
    /// The zone of one direction only (conntrack's `--orig-zone`, `--reply-zone`; the kernel's
    /// CTA_TUPLE_ZONE), when the flow's zone is not the same both ways.
    public var originalZone: UInt16? {
        get { rare?.value.originalZone }
        set { if newValue != nil || rare != nil { modifyRare { $0.originalZone = newValue } } }
    }
    public var replyZone: UInt16? {
        get { rare?.value.replyZone }
        set { if newValue != nil || rare != nil { modifyRare { $0.replyZone = newValue } } }
    }
    /// The kernel's start and stop times (CTA_TIMESTAMP, with `nf_conntrack_timestamp=1`), read
    /// only where asked for (conntrack's command line prints them); never synced or written.
    public var timestamps: FlowTimestamps? {
        get { rare?.value.timestamps }
        set { if newValue != nil || rare != nil { modifyRare { $0.timestamps = newValue } } }
    }

    /// Changes the out-of-line attributes: in place when this flow holds the only reference to
    /// its box, in a new box otherwise; no box at all once none of them is set.
    private mutating func modifyRare(_ body: (inout FlowRareAttributes) -> Void) {
        if rare != nil && isKnownUniquelyReferenced(&rare) {
            body(&rare!.value)
            if rare!.value.isEmpty { rare = nil }
        } else {
            var value = rare?.value ?? FlowRareAttributes()
            body(&value)
            rare = value.isEmpty ? nil : FlowRareBox(value)
        }
    }

    public static func == (a: Flow, b: Flow) -> Bool {
        a.family == b.family && a.proto == b.proto && a.zone == b.zone && a.mark == b.mark && a.original == b.original
            && a.reply == b.reply && a.status == b.status && a.icmp == b.icmp && a.tcp == b.tcp && a.timeout == b.timeout
            && a.use == b.use && a.id == b.id && (a.rare === b.rare || a.rare?.value == b.rare?.value)
    }

    /// The key, status and mark: equal flows hash alike, and flows that differ in little else
    /// are rare in one table.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(key.fastHash)
        hasher.combine(status.rawValue)
        hasher.combine(mark)
    }

    /// A flow whose reply tuple is the inverse of the original (no NAT).
    public init(
        proto: L4Protocol, original: Tuple, reply: Tuple? = nil, icmp: ICMPInfo? = nil, tcp: TCPInfo? = nil,
        status: FlowStatus = [], timeout: UInt32? = nil, mark: UInt32 = 0, zone: UInt16 = 0
    ) {
        self.family = original.source.family
        self.proto = proto
        self.original = original
        self.reply = reply ?? original.inverted
        self.icmp = icmp
        self.tcp = tcp
        self.status = status
        self.timeout = timeout
        self.mark = mark
        self.zone = zone
    }

    public var key: FlowKey { FlowKey(proto: proto, original: original, icmp: icmp, zone: zone) }

    /// The state name conntrack prints for this flow's protocol, if it has one.
    public var stateName: String? {
        if let tcp { return tcp.state.name }
        if let sctp { return sctp.state.name }
        if let dccp { return dccp.state.name }
        return nil
    }

    /// Source NAT address: where the reply is sent to, when that is not the original source.
    public var sourceNAT: IPAddress? { reply.destination != original.source ? reply.destination : nil }
    /// Destination NAT address: where the reply comes from, when that is not the original destination.
    public var destinationNAT: IPAddress? { reply.source != original.destination ? reply.source : nil }
    /// Source port NAT (the reply's destination port), when it differs.
    public var sourcePortNAT: UInt16? {
        proto.hasPorts && reply.destinationPort != original.sourcePort ? reply.destinationPort : nil
    }
    /// Destination port NAT (the reply's source port), when it differs.
    public var destinationPortNAT: UInt16? {
        proto.hasPorts && reply.sourcePort != original.destinationPort ? reply.sourcePort : nil
    }
    public var isNATed: Bool {
        sourceNAT != nil || destinationNAT != nil || sourcePortNAT != nil || destinationPortNAT != nil
    }

    /// Compares what a peer or the kernel must preserve, ignoring the kernel-owned
    /// fields (timeout countdown, counters, use, id) that change by themselves.
    public func sameState(as other: Flow) -> Bool {
        var a = self
        var b = other
        for f in [\Flow.timeout] as [WritableKeyPath<Flow, UInt32?>] {
            a[keyPath: f] = nil
            b[keyPath: f] = nil
        }
        a.counters = nil
        b.counters = nil
        a.use = nil
        b.use = nil
        a.id = nil
        b.id = nil
        return a == b
    }
}

/// Optional attributes a kernel message may or may not carry (an UPDATE event carries
/// protocol state, labels, helper and sequence adjustment only when they changed).
public struct FlowAttributes: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let protocolInfo = FlowAttributes(rawValue: 1 << 0)
    public static let labels = FlowAttributes(rawValue: 1 << 1)
    public static let helper = FlowAttributes(rawValue: 1 << 2)
    public static let sequenceAdjustment = FlowAttributes(rawValue: 1 << 3)
    public static let mark = FlowAttributes(rawValue: 1 << 4)
    public static let timeout = FlowAttributes(rawValue: 1 << 5)
    public static let status = FlowAttributes(rawValue: 1 << 6)
    public static let counters = FlowAttributes(rawValue: 1 << 7)
    public static let all = FlowAttributes(rawValue: 0xff)
}

extension Flow {
    /// This flow with what `update` carries applied: tuples always, every optional
    /// attribute only if `present` says the update had it.
    public func merging(_ update: Flow, present: FlowAttributes) -> Flow {
        var merged = self
        merged.original = update.original
        merged.reply = update.reply
        merged.icmp = update.icmp ?? icmp
        if present.contains(.protocolInfo) {
            merged.tcp = update.tcp
            merged.sctp = update.sctp
            merged.dccp = update.dccp
        }
        if present.contains(.labels) { merged.labels = update.labels }
        if present.contains(.helper) { merged.helper = update.helper }
        if present.contains(.sequenceAdjustment) { merged.sequenceAdjustment = update.sequenceAdjustment }
        // The kernel leaves the mark out exactly when it is zero.
        merged.mark = present.contains(.mark) ? update.mark : 0
        if present.contains(.timeout) { merged.timeout = update.timeout }
        if present.contains(.status) { merged.status = update.status }
        if present.contains(.counters) { merged.counters = update.counters }
        if let id = update.id { merged.id = id }
        return merged
    }
}

/// The attributes of a flow that most flows do not have (see `Flow`).
struct FlowRareAttributes: Hashable, Sendable {
    var sctp: SCTPInfo?
    var dccp: DCCPInfo?
    var labels = FlowLabels()
    var helper: String?
    var sequenceAdjustment: NATSequenceAdjustment?
    var counters: FlowCounters?
    var originalZone: UInt16?
    var replyZone: UInt16?
    var timestamps: FlowTimestamps?

    var isEmpty: Bool {
        sctp == nil && dccp == nil && labels.isEmpty && helper == nil && sequenceAdjustment == nil && counters == nil
            && originalZone == nil && replyZone == nil && timestamps == nil
    }
}

/// The box `Flow` keeps its rare attributes in. Mutated only while uniquely referenced (copy on
/// write), so sharing it between threads is as safe as sharing the value.
final class FlowRareBox: @unchecked Sendable {
    var value: FlowRareAttributes
    init(_ value: FlowRareAttributes) { self.value = value }
}
