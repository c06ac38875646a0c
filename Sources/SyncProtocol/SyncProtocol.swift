import FlowModel

/// conntrackd 1.4.x's wire format: constants and the message model. Pure: no I/O, no clock.
/// The byte layout is documented in docs/protocol.md; `SyncWire` encodes and decodes.
public enum SyncProtocol {
    /// `CONNTRACKD_PROTOCOL_VERSION`: the high nibble of every message's first byte.
    public static let version: UInt8 = 1
    /// Size of the message header (version/type, flags, length, sequence number).
    public static let headerSize = 8
    /// Size of ACK, NACK and RESYNC messages (header + from + to).
    public static let controlSize = 16
    /// conntrackd builds each message in a 4096-byte buffer; nothing larger is valid.
    public static let maximumMessageSize = 4096
}

/// The message type: the low nibble of the first byte.
public enum MessageType: UInt8, Sendable, CaseIterable {
    case flowNew = 0
    case flowUpdate = 1
    case flowDestroy = 2
    case expectationNew = 3
    case expectationUpdate = 4
    case expectationDestroy = 5
    case control = 10
}

/// Header flags (`NET_F_*`).
public struct MessageFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// "Send me your whole internal cache" (control, 16 bytes, from = to = 0).
    public static let resync = MessageFlags(rawValue: 0x02)
    /// Retransmit request for [from, to] (control, 16 bytes).
    public static let nack = MessageFlags(rawValue: 0x04)
    /// [from, to] received (control, 16 bytes).
    public static let ack = MessageFlags(rawValue: 0x08)
    /// Keep-alive (control, 8 bytes).
    public static let alive = MessageFlags(rawValue: 0x10)
    /// FTFW: the sender (re)started; piggybacked on any message.
    public static let hello = MessageFlags(rawValue: 0x20)
    /// FTFW: answer to a hello; piggybacked on any message.
    public static let helloBack = MessageFlags(rawValue: 0x40)
}

/// What a flow message says happened.
public enum FlowMessageKind: Sendable, Equatable {
    case new, update, destroy

    public var type: MessageType {
        switch self {
        case .new: return .flowNew
        case .update: return .flowUpdate
        case .destroy: return .flowDestroy
        }
    }
}

/// An expectation message, kept as its raw attributes (ctsync relays and counts them; it does
/// not install expectations yet).
public struct ExpectationMessage: Sendable, Equatable {
    public var kind: FlowMessageKind
    /// (attribute id, payload) in wire order.
    public var attributes: [(UInt16, [UInt8])]

    public init(kind: FlowMessageKind, attributes: [(UInt16, [UInt8])]) {
        self.kind = kind
        self.attributes = attributes
    }

    public static func == (a: ExpectationMessage, b: ExpectationMessage) -> Bool {
        a.kind == b.kind && a.attributes.count == b.attributes.count
            && zip(a.attributes, b.attributes).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}

/// One message of the sync protocol, with its sequence number and the hello flags it carries.
public struct SyncMessage: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        case flow(FlowMessageKind, Flow)
        case expectation(ExpectationMessage)
        /// The peer received its messages [from, to] (inclusive, serial arithmetic).
        case ack(from: UInt32, to: UInt32)
        /// The peer asks for [from, to] again.
        case nack(from: UInt32, to: UInt32)
        /// The peer asks for our whole internal cache.
        case resync
        case alive
    }

    public var sequence: UInt32
    /// Only `.hello` and `.helloBack` are kept here; the other flags follow from the body.
    public var hello: MessageFlags
    public var body: Body

    public init(sequence: UInt32, hello: MessageFlags = [], body: Body) {
        self.sequence = sequence
        self.hello = hello.intersection([.hello, .helloBack])
        self.body = body
    }

    /// Data messages (flows, expectations) versus control messages.
    public var isData: Bool {
        switch body {
        case .flow, .expectation: return true
        default: return false
        }
    }
}

/// Serial-number comparisons of 32-bit sequence numbers (RFC 1982 style, as conntrackd's
/// `before`/`after`).
public enum SequenceNumber {
    public static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    public static func after(_ a: UInt32, _ b: UInt32) -> Bool { before(b, a) }
    /// a ≤ x ≤ b in serial arithmetic.
    public static func between(_ x: UInt32, _ a: UInt32, _ b: UInt32) -> Bool { !before(x, a) && !after(x, b) }
}
