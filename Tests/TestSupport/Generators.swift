import FlowModel
import SyncProtocol

/// Bytes from a hex string; spaces and newlines are ignored.
public func hex(_ text: String) -> [UInt8] {
    let digits = text.filter { !$0.isWhitespace }
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

public func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

public func ip(_ text: String) -> IPAddress { IPAddress(text)! }

/// SplitMix64: the tests' one seeded generator, so every run sees the same inputs and a
/// failing case is reproduced from its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A number in 0..<n (0 when n is not positive).
    public mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
}

/// Flows of every shape the model holds, including fields the protocol does not carry.
public enum FlowGenerator {
    public static let protocols: [L4Protocol] = [
        .tcp, .udp, .udplite, .sctp, .dccp, .gre, .icmp, .icmpv6, L4Protocol(rawValue: 50), L4Protocol(rawValue: 0),
        L4Protocol(rawValue: 255),
    ]

    public static func address(_ family: AddressFamily, _ rng: inout SeededGenerator) -> IPAddress {
        family == .ipv4
            ? IPAddress(ipv4: UInt32.random(in: 0...UInt32.max, using: &rng))
            : IPAddress(ipv6High: rng.next(), low: rng.next())
    }

    public static func flow(_ rng: inout SeededGenerator) -> Flow {
        let family: AddressFamily = Bool.random(using: &rng) ? .ipv4 : .ipv6
        let proto = protocols.randomElement(using: &rng)!
        var original = Tuple(source: address(family, &rng), destination: address(family, &rng))
        if proto.hasPorts {
            original.sourcePort = UInt16.random(in: 0...UInt16.max, using: &rng)
            original.destinationPort = UInt16.random(in: 0...UInt16.max, using: &rng)
        }
        var reply = original.inverted
        var status = FlowStatus(rawValue: UInt32.random(in: 0...UInt32.max, using: &rng) & 0xffff)
        if Int.random(in: 0..<3, using: &rng) == 0 {
            reply.destination = address(family, &rng)
            if proto.hasPorts && Bool.random(using: &rng) { reply.destinationPort = UInt16.random(in: 0...UInt16.max, using: &rng) }
            if Int.random(in: 0..<4, using: &rng) != 0 { status.formUnion([.srcNAT, .srcNATDone]) }
        }
        if Int.random(in: 0..<3, using: &rng) == 0 {
            reply.source = address(family, &rng)
            if proto.hasPorts && Bool.random(using: &rng) { reply.sourcePort = UInt16.random(in: 0...UInt16.max, using: &rng) }
            if Int.random(in: 0..<4, using: &rng) != 0 { status.formUnion([.dstNAT, .dstNATDone]) }
        }
        var flow = Flow(proto: proto, original: original, reply: reply, status: status)
        if proto.isICMP || Int.random(in: 0..<20, using: &rng) == 0 {
            flow.icmp = ICMPInfo(
                type: UInt8.random(in: 0...255, using: &rng), code: UInt8.random(in: 0...255, using: &rng),
                id: UInt16.random(in: 0...UInt16.max, using: &rng))
        }
        if proto == .tcp || Int.random(in: 0..<20, using: &rng) == 0 {
            flow.tcp = TCPInfo(
                state: TCPState(rawValue: UInt8.random(in: 0...10, using: &rng)), originalFlags: UInt8.random(in: 0...255, using: &rng),
                replyFlags: UInt8.random(in: 0...255, using: &rng), originalWindowScale: UInt8.random(in: 0...14, using: &rng),
                replyWindowScale: UInt8.random(in: 0...14, using: &rng))
        }
        if proto == .sctp || Int.random(in: 0..<20, using: &rng) == 0 {
            flow.sctp = SCTPInfo(
                state: SCTPState(rawValue: UInt8.random(in: 0...9, using: &rng)),
                originalVerificationTag: UInt32.random(in: 0...UInt32.max, using: &rng),
                replyVerificationTag: UInt32.random(in: 0...UInt32.max, using: &rng))
        }
        if proto == .dccp || Int.random(in: 0..<20, using: &rng) == 0 {
            flow.dccp = DCCPInfo(
                state: DCCPState(rawValue: UInt8.random(in: 0...9, using: &rng)), role: UInt8.random(in: 0...2, using: &rng),
                handshakeSequence: rng.next())
        }
        // Some flows the kernel never reports without a state.
        if Int.random(in: 0..<10, using: &rng) == 0 {
            flow.tcp = nil
            flow.sctp = nil
            flow.dccp = nil
            flow.icmp = nil
        }
        flow.timeout = Bool.random(using: &rng) ? UInt32.random(in: 0...UInt32.max, using: &rng) : nil
        flow.mark = Bool.random(using: &rng) ? UInt32.random(in: 0...UInt32.max, using: &rng) : 0
        flow.zone = Int.random(in: 0..<3, using: &rng) == 0 ? UInt16.random(in: 0...UInt16.max, using: &rng) : 0
        if Bool.random(using: &rng) {
            flow.labels = FlowLabels(bits: (0..<Int.random(in: 1...6, using: &rng)).map { _ in Int.random(in: 0...127, using: &rng) })
        }
        if Int.random(in: 0..<4, using: &rng) == 0 {
            let names = [
                "ftp", "sip", "tftp", "irc", "amanda", "netbios-ns", "snmp_trap", "pptp", "h323", "x", "elevenchars", "twelve-chars",
                "fifteen-chars15", "",
            ]
            flow.helper = names.randomElement(using: &rng)
        }
        if Int.random(in: 0..<4, using: &rng) == 0 {
            func side() -> SequenceAdjustment {
                SequenceAdjustment(
                    correctionPosition: UInt32.random(in: 0...UInt32.max, using: &rng),
                    offsetBefore: UInt32.random(in: 0...UInt32.max, using: &rng),
                    offsetAfter: UInt32.random(in: 0...UInt32.max, using: &rng))
            }
            flow.sequenceAdjustment = NATSequenceAdjustment(original: side(), reply: side())
        }
        if Bool.random(using: &rng) {
            flow.counters = FlowCounters(originalPackets: rng.next(), originalBytes: rng.next(), replyPackets: rng.next(), replyBytes: rng.next())
            flow.use = UInt32.random(in: 0...UInt32.max, using: &rng)
            flow.id = UInt32.random(in: 0...UInt32.max, using: &rng)
        }
        return flow
    }

    public static func message(_ rng: inout SeededGenerator) -> SyncMessage {
        let hello = MessageFlags(rawValue: UInt8.random(in: 0...3, using: &rng) << 5)
        let sequence = UInt32.random(in: 0...UInt32.max, using: &rng)
        let body: SyncMessage.Body
        switch Int.random(in: 0..<20, using: &rng) {
        case 0: body = .ack(from: sequence &- 10, to: sequence &- 1)
        case 1: body = .nack(from: sequence &- 5, to: sequence &- 2)
        case 2: body = .resync
        case 3: body = .alive
        case 4: body = .expectation(expectation(&rng))
        default: body = .flow([.new, .update, .destroy].randomElement(using: &rng)!, flow(&rng))
        }
        return SyncMessage(sequence: sequence, hello: hello, body: body)
    }

    /// A valid expectation message: attributes with ids below 21 and the sizes conntrackd checks.
    public static func expectation(_ rng: inout SeededGenerator) -> ExpectationMessage {
        var attributes: [(UInt16, [UInt8])] = []
        for _ in 0..<Int.random(in: 0...8, using: &rng) {
            let attribute = ExpectationAttribute.allCases.randomElement(using: &rng)!
            // Strings carry at least their NUL: a 4-byte attribute in the last 4 bytes is ignored, as by
            // conntrackd, so it would not come back.
            let length = attribute.fixedLength ?? Int.random(in: 5...attribute.maximumLength!, using: &rng)
            attributes.append((attribute.rawValue, (0..<(length - 4)).map { _ in UInt8.random(in: 0...255, using: &rng) }))
        }
        return ExpectationMessage(kind: [.new, .update, .destroy].randomElement(using: &rng)!, attributes: attributes)
    }
}

extension SyncMessage {
    public var flow: Flow? {
        if case .flow(_, let flow) = body { return flow }
        return nil
    }
}
