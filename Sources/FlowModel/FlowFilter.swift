/// An address, optionally with a prefix length, as `-s 198.18.0.0/15` takes it.
public struct AddressMatch: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefix: Int

    public init(address: IPAddress, prefix: Int? = nil) {
        self.address = address
        self.prefix = prefix ?? (address.family == .ipv4 ? 32 : 128)
    }

    /// Parses `ADDR` or `ADDR/PREFIX`; nil on a bad address or an out-of-range prefix.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let limit = address.family == .ipv4 ? 32 : 128
        if parts.count == 2 {
            guard let prefix = Int(parts[1]), (0...limit).contains(prefix) else { return nil }
            self.init(address: address, prefix: prefix)
        } else {
            self.init(address: address)
        }
    }

    public func matches(_ other: IPAddress) -> Bool { other.matches(network: address, prefix: prefix) }

    public var description: String {
        prefix == (address.family == .ipv4 ? 32 : 128) ? "\(address)" : "\(address)/\(prefix)"
    }
}

/// A mark with an optional mask: `7` or `7/0xff`. A flow matches when `flow.mark & mask == value & mask`.
public struct MarkMatch: Hashable, Sendable, Codable {
    public var value: UInt32
    public var mask: UInt32

    public init(value: UInt32, mask: UInt32 = .max) {
        self.value = value
        self.mask = mask
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let value = parseUInt32(String(parts[0])) else { return nil }
        if parts.count == 2 {
            guard let mask = parseUInt32(String(parts[1])) else { return nil }
            self.init(value: value, mask: mask)
        } else {
            self.init(value: value)
        }
    }

    public func matches(_ mark: UInt32) -> Bool { mark & mask == value & mask }
}

/// Parses a decimal or `0x` hexadecimal 32-bit number.
public func parseUInt32(_ text: String) -> UInt32? {
    let lower = text.lowercased()
    if lower.hasPrefix("0x") { return UInt32(lower.dropFirst(2), radix: 16) }
    return UInt32(lower)
}

/// The conntrack tool's selection of flows. Every criterion that is set must hold;
/// an empty filter matches every flow.
public struct FlowFilter: Hashable, Sendable, Codable {
    public var family: AddressFamily?
    public var proto: L4Protocol?
    /// Original-direction source and destination.
    public var source: AddressMatch?
    public var destination: AddressMatch?
    /// Reply-direction source and destination.
    public var replySource: AddressMatch?
    public var replyDestination: AddressMatch?
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    public var replySourcePort: UInt16?
    public var replyDestinationPort: UInt16?
    /// Protocol state by name (TCP, SCTP or DCCP, whichever the flow has).
    public var state: String?
    public var mark: MarkMatch?
    public var zone: UInt16?
    /// Status bits that must all be set.
    public var status: FlowStatus?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?
    public var icmpID: UInt16?
    /// Labels that must all be set.
    public var labels: FlowLabels?

    public init() {}

    public var isEmpty: Bool { self == FlowFilter() }

    public func matches(_ flow: Flow) -> Bool {
        if let family, flow.family != family { return false }
        if let proto, flow.proto != proto { return false }
        if let source, !source.matches(flow.original.source) { return false }
        if let destination, !destination.matches(flow.original.destination) { return false }
        if let replySource, !replySource.matches(flow.reply.source) { return false }
        if let replyDestination, !replyDestination.matches(flow.reply.destination) { return false }
        if let sourcePort, !(flow.proto.hasPorts && flow.original.sourcePort == sourcePort) { return false }
        if let destinationPort, !(flow.proto.hasPorts && flow.original.destinationPort == destinationPort) {
            return false
        }
        if let replySourcePort, !(flow.proto.hasPorts && flow.reply.sourcePort == replySourcePort) { return false }
        if let replyDestinationPort, !(flow.proto.hasPorts && flow.reply.destinationPort == replyDestinationPort) {
            return false
        }
        if let state {
            // By the flow's protocol's own name for it (LISTEN is TCP's SYN_SENT2).
            let wanted: String? =
                switch flow.proto {
                case .tcp: TCPState(name: state)?.name
                case .sctp: SCTPState(name: state)?.name
                case .dccp: DCCPState(name: state)?.name
                default: nil
                }
            if flow.stateName == nil || flow.stateName != (wanted ?? state.uppercased()) { return false }
        }
        if let mark, !mark.matches(flow.mark) { return false }
        if let zone, flow.zone != zone { return false }
        if let status, !flow.status.isSuperset(of: status) { return false }
        if let icmpType, flow.icmp?.type != icmpType { return false }
        if let icmpCode, flow.icmp?.code != icmpCode { return false }
        if let icmpID, flow.icmp?.id != icmpID { return false }
        if let labels {
            let have = flow.labels
            if labels.bits.contains(where: { !have.contains($0) }) { return false }
        }
        return true
    }
}
