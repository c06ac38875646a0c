import FlowModel

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A cached flow as the caches keep it: 128 bytes of plain values (a `Flow` is 304), with the
/// attributes few flows carry (labels, a helper, sequence adjustment, SCTP and DCCP state) kept
/// out of line in `FlowExtras`. Plain values copy as bytes, so the storage can grow by
/// `realloc` (pages remapped, never copied) and a lookup compares the key in place.
///
/// What is not kept: the kernel-owned counters and reference count (conntrackd strips them too).
/// Everything else round-trips exactly (`flow(extras:)` of `init(flow:...)` is the flow).
struct StoredFlow {
    /// Addresses, high and low word: original source, original destination, reply source,
    /// reply destination.
    var addresses: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    var since: Int64
    var lastUpdate: Int64
    var status: UInt32
    var timeout: UInt32
    var mark: UInt32
    var id: UInt32
    /// 0: no extras; otherwise the index of this flow's `FlowExtras` plus one.
    var extra: UInt32
    /// Original source, original destination, reply source, reply destination.
    var ports: (UInt16, UInt16, UInt16, UInt16)
    var zone: UInt16
    var icmpID: UInt16
    var family: UInt8
    var proto: UInt8
    var presence: UInt8
    /// Two bits per address (same order as `addresses`): 1 = IPv6.
    var addressFamilies: UInt8
    var tcpState: UInt8
    var tcpFlags: (UInt8, UInt8)
    var windowScale: (UInt8, UInt8)
    var icmpType: UInt8
    var icmpCode: UInt8

    static let hasTimeout: UInt8 = 1
    static let hasID: UInt8 = 2
    static let hasICMP: UInt8 = 4
    static let hasTCP: UInt8 = 8

    /// The flow's rarely set attributes, if it has any.
    static func extras(of flow: Flow) -> FlowExtras? {
        guard !flow.labels.isEmpty || flow.helper != nil || flow.sequenceAdjustment != nil || flow.sctp != nil || flow.dccp != nil
        else { return nil }
        return FlowExtras(labels: flow.labels, helper: flow.helper, sequenceAdjustment: flow.sequenceAdjustment, sctp: flow.sctp, dccp: flow.dccp)
    }

    /// `extra` is the slot of the flow's extras (0: none), already stored by the caller.
    init(flow: Flow, since: Int64, lastUpdate: Int64, extra: UInt32) {
        let o = flow.original
        let r = flow.reply
        addresses = (
            o.source.high, o.source.low, o.destination.high, o.destination.low, r.source.high, r.source.low, r.destination.high,
            r.destination.low
        )
        @inline(__always) func bit(_ a: IPAddress, _ shift: UInt8) -> UInt8 { a.family == .ipv6 ? 1 << shift : 0 }
        addressFamilies = bit(o.source, 0) | bit(o.destination, 2) | bit(r.source, 4) | bit(r.destination, 6)
        self.since = since
        self.lastUpdate = lastUpdate
        status = flow.status.rawValue
        timeout = flow.timeout ?? 0
        mark = flow.mark
        id = flow.id ?? 0
        self.extra = extra
        ports = (o.sourcePort, o.destinationPort, r.sourcePort, r.destinationPort)
        zone = flow.zone
        family = flow.family.rawValue
        proto = flow.proto.rawValue
        var presence: UInt8 = 0
        if flow.timeout != nil { presence |= Self.hasTimeout }
        if flow.id != nil { presence |= Self.hasID }
        if let icmp = flow.icmp {
            presence |= Self.hasICMP
            icmpType = icmp.type
            icmpCode = icmp.code
            icmpID = icmp.id
        } else {
            icmpType = 0
            icmpCode = 0
            icmpID = 0
        }
        if let tcp = flow.tcp {
            presence |= Self.hasTCP
            tcpState = tcp.state.rawValue
            tcpFlags = (tcp.originalFlags, tcp.replyFlags)
            windowScale = (tcp.originalWindowScale, tcp.replyWindowScale)
        } else {
            tcpState = 0
            tcpFlags = (0, 0)
            windowScale = (0, 0)
        }
        self.presence = presence
    }

    @inline(__always)
    private func address(_ high: UInt64, _ low: UInt64, _ shift: UInt8) -> IPAddress {
        addressFamilies >> shift & 1 == 1 ? IPAddress(ipv6High: high, low: low) : IPAddress(ipv4: UInt32(truncatingIfNeeded: low))
    }

    var originalTuple: Tuple {
        Tuple(
            source: address(addresses.0, addresses.1, 0), destination: address(addresses.2, addresses.3, 2), sourcePort: ports.0,
            destinationPort: ports.1)
    }

    var icmp: ICMPInfo? { presence & Self.hasICMP != 0 ? ICMPInfo(type: icmpType, code: icmpCode, id: icmpID) : nil }

    var key: FlowKey { FlowKey(proto: L4Protocol(rawValue: proto), original: originalTuple, icmp: icmp, zone: zone) }

    /// Whether this is the flow `key` names, compared in place.
    @inline(__always)
    func matches(_ key: FlowKey) -> Bool {
        let o = key.original
        guard proto == key.proto.rawValue, zone == key.zone, ports.0 == o.sourcePort, ports.1 == o.destinationPort,
            addresses.1 == o.source.low, addresses.3 == o.destination.low, addresses.0 == o.source.high,
            addresses.2 == o.destination.high
        else { return false }
        let families = (o.source.family == .ipv6 ? 1 : 0) | (o.destination.family == .ipv6 ? 4 : 0)
        guard addressFamilies & 0b0101 == families else { return false }
        if let i = key.icmp {
            return presence & Self.hasICMP != 0 && icmpType == i.type && icmpCode == i.code && icmpID == i.id
        }
        return presence & Self.hasICMP == 0
    }

    /// The flow, with its extras (looked up by the caller from `extra`).
    func flow(extras: FlowExtras?) -> Flow {
        var flow = Flow(
            proto: L4Protocol(rawValue: proto), original: originalTuple,
            reply: Tuple(
                source: address(addresses.4, addresses.5, 4), destination: address(addresses.6, addresses.7, 6), sourcePort: ports.2,
                destinationPort: ports.3),
            icmp: icmp,
            tcp: presence & Self.hasTCP != 0
                ? TCPInfo(
                    state: TCPState(rawValue: tcpState), originalFlags: tcpFlags.0, replyFlags: tcpFlags.1,
                    originalWindowScale: windowScale.0, replyWindowScale: windowScale.1) : nil,
            status: FlowStatus(rawValue: status), timeout: presence & Self.hasTimeout != 0 ? timeout : nil, mark: mark, zone: zone)
        flow.family = AddressFamily(rawValue: family) ?? .ipv4
        if presence & Self.hasID != 0 { flow.id = id }
        if let extras {
            flow.labels = extras.labels
            flow.helper = extras.helper
            flow.sequenceAdjustment = extras.sequenceAdjustment
            flow.sctp = extras.sctp
            flow.dccp = extras.dccp
        }
        return flow
    }
}

/// The attributes few flows carry, held apart from `StoredFlow`.
struct FlowExtras: Equatable {
    var labels: FlowLabels
    var helper: String?
    var sequenceAdjustment: NATSequenceAdjustment?
    var sctp: SCTPInfo?
    var dccp: DCCPInfo?
}

/// The cache's entries and extras in one buffer object, shared between copies of a cache until
/// one of them changes (then that one copies it: the value semantics of an array). The entries'
/// memory is malloc'ed and grown with `realloc`: past glibc's mmap threshold (256 KiB, see
/// `HeapTrim`) that remaps pages instead of copying them, so growing a large cache costs no
/// copy and no stall (an array's growth copied it whole: 40 ms at 130k flows, long enough for
/// the kernel's event socket to overflow at its batched rate).
final class FlowStorage: @unchecked Sendable {
    private(set) var base: UnsafeMutablePointer<StoredFlow>
    private(set) var capacity: Int
    private(set) var count = 0
    private(set) var extras: ContiguousArray<FlowExtras?> = []
    private var freeExtras: [UInt32] = []

    init(capacity: Int) {
        self.capacity = max(16, capacity)
        base = Self.allocate(self.capacity)
    }

    private static func allocate(_ capacity: Int) -> UnsafeMutablePointer<StoredFlow> {
        guard let raw = malloc(capacity * MemoryLayout<StoredFlow>.stride) else { fatalError("out of memory for the flow cache") }
        return raw.bindMemory(to: StoredFlow.self, capacity: capacity)
    }

    deinit { free(base) }

    /// A copy for a cache about to change a shared storage.
    func copy() -> FlowStorage {
        let other = FlowStorage(capacity: capacity)
        other.base.update(from: base, count: count)
        other.count = count
        other.extras = extras
        other.freeExtras = freeExtras
        return other
    }

    /// Changes the capacity (never below the count), remapping rather than copying where it can.
    func resize(to newCapacity: Int) {
        let target = max(16, max(newCapacity, count))
        guard target != capacity, let raw = realloc(base, target * MemoryLayout<StoredFlow>.stride) else { return }
        base = raw.bindMemory(to: StoredFlow.self, capacity: target)
        capacity = target
    }

    func append(_ entry: StoredFlow) {
        if count == capacity { resize(to: capacity * 2) }
        (base + count).initialize(to: entry)
        count += 1
    }

    func removeLast() {
        count -= 1
        // A cache that shrank to a quarter gives the memory back (down to half its capacity).
        if capacity > 4096 && count * 4 < capacity { resize(to: capacity / 2) }
    }

    func removeAll() {
        count = 0
        extras = []
        freeExtras = []
        resize(to: 16)
    }

    subscript(index: Int) -> StoredFlow {
        get { base[index] }
        set { base[index] = newValue }
    }

    /// Stores extras and returns their slot for `StoredFlow.extra` (0 for none).
    func storeExtras(_ value: FlowExtras?) -> UInt32 {
        guard let value else { return 0 }
        if let slot = freeExtras.popLast() {
            extras[Int(slot)] = value
            return slot + 1
        }
        extras.append(value)
        return UInt32(extras.count)
    }

    func releaseExtras(_ extra: UInt32) {
        guard extra != 0 else { return }
        extras[Int(extra - 1)] = nil
        freeExtras.append(extra - 1)
    }

    func extras(of entry: StoredFlow) -> FlowExtras? { entry.extra == 0 ? nil : extras[Int(entry.extra - 1)] }

    func entry(at index: Int) -> CacheEntry {
        let stored = base[index]
        return CacheEntry(flow: stored.flow(extras: extras(of: stored)), since: stored.since, lastUpdate: stored.lastUpdate)
    }
}

/// A cache's entries at one moment, as `CacheEntry` values (decoded as they are read). Holding
/// it keeps that moment: the cache copies its storage before it next changes.
public struct CacheEntries: RandomAccessCollection, Sendable {
    let storage: FlowStorage
    public let count: Int
    init(_ storage: FlowStorage) {
        self.storage = storage
        count = storage.count
    }
    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public subscript(position: Int) -> CacheEntry {
        precondition(position >= 0 && position < count, "cache entry index out of range")
        return storage.entry(at: position)
    }
}
