import FlowModel

/// Why bytes received from a peer are not a valid message. Every decoding failure is one of
/// these; the decoder never traps, whatever the input.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer bytes than a header (8) or than an ACK/NACK/RESYNC (16) needs.
    case truncated(need: Int, have: Int)
    /// The header's length is zero, shorter than its kind needs, or longer than the bytes left.
    case badLength(length: UInt16, available: Int)
    /// The high nibble of the first byte is not `SyncProtocol.version`.
    case badVersion(UInt8)
    /// A message type conntrackd does not define (6...9, 11...15).
    case badType(UInt8)
    /// Flags that do not fit the type: a data message with anything but HELLO/HELLO_BACK, a
    /// control message without exactly one of ACK, NACK, RESYNC, ALIVE, or an unused bit.
    case badFlags(type: UInt8, flags: UInt8)
    /// An attribute's length runs past the end of its message.
    case attributeTruncated(id: UInt16, length: UInt16, remaining: Int)
    /// An attribute's length is below its 4-byte header, differs from its fixed size, exceeds its
    /// maximum (helper names: 16 with the header, so 11 characters; labels: 1028), or is not a
    /// whole number of 32-bit words (labels).
    case badAttributeLength(id: UInt16, length: UInt16)
    /// An attribute id conntrackd 1.4.7 does not define (flows: ≥ 33, expectations: ≥ 21).
    case unknownAttribute(id: UInt16)
    /// The same attribute twice in one flow message.
    case duplicateAttribute(id: UInt16)
    /// A flow message without an attribute every flow needs (addresses, L4 protocol, ports of
    /// TCP/UDP/SCTP/DCCP).
    case missingAttribute(String)
    /// Attributes that cannot all be true of one flow (IPv4 and IPv6 addresses, ports on ICMP,
    /// TCP state on UDP, an IPv6 NAT address on an IPv4 flow, ...).
    case contradictory(String)
    /// A helper name that is not UTF-8.
    case badHelperName
    /// A label bit above `FlowLabels.maxBit` (127), which no kernel can hold.
    case labelOutOfRange(bit: Int)

    /// The conntrackd `-s network` counter this error counts in (besides "Malformed messages",
    /// which counts them all).
    public var statsCategory: NetworkErrorCounter {
        switch self {
        case .truncated: return .truncated
        case .badLength: return .badSize
        case .badVersion: return .wrongVersion
        case .badType: return .badType
        case .badFlags: return .malformedHeader
        case .attributeTruncated, .badAttributeLength, .unknownAttribute, .duplicateAttribute, .missingAttribute,
            .contradictory, .badHelperName, .labelOutOfRange:
            return .malformedPayload
        }
    }

    /// True for errors in a message's framing (its length or the bytes left), after which the rest
    /// of a datagram cannot be split into messages; false for errors that concern one message only.
    public var isFraming: Bool {
        switch self {
        case .truncated, .badLength: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .truncated(let need, let have):
            return "truncated message: \(have) bytes, need \(need)"
        case .badLength(let length, let available):
            return "bad message length \(length) (\(available) bytes available)"
        case .badVersion(let version):
            return "wrong protocol version \(version) (expected \(SyncProtocol.version))"
        case .badType(let type):
            return "bad message type \(type)"
        case .badFlags(let type, let flags):
            return "bad flags 0x\(String(flags, radix: 16)) for message type \(type)"
        case .attributeTruncated(let id, let length, let remaining):
            return "attribute \(id) of length \(length) runs past the message (\(remaining) bytes left)"
        case .badAttributeLength(let id, let length):
            return "attribute \(id) has a bad length \(length)"
        case .unknownAttribute(let id):
            return "unknown attribute \(id)"
        case .duplicateAttribute(let id):
            return "attribute \(id) appears twice"
        case .missingAttribute(let name):
            return "missing attribute \(name)"
        case .contradictory(let what):
            return "contradictory attributes: \(what)"
        case .badHelperName:
            return "helper name is not UTF-8"
        case .labelOutOfRange(let bit):
            return "label bit \(bit) is above \(FlowLabels.maxBit)"
        }
    }
}

/// conntrackd's receive error counters (`conntrackd -s network`, "recv:" block), in the order it
/// prints them. The raw value is conntrackd's label.
public enum NetworkErrorCounter: String, CaseIterable, Sendable {
    case wrongVersion = "Wrong protocol version"
    case malformedHeader = "Malformed header"
    case malformedPayload = "Malformed payload"
    case badType = "Bad message type"
    case truncated = "Truncated message"
    case badSize = "Bad message size"
}
