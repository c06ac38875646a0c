import FlowModel

/// Writes a flow's attributes as conntrackd's `ct2msg` does.
enum FlowEncoder {
    /// A flow as the encoder sees it: addresses cut to the family's size, and NAT decided the way
    /// libnetfilter_conntrack's `NFCT_GOPT_IS_*NAT`/`*PAT` decide it (the status bit, then a
    /// difference between the reply tuple and the inverted original).
    struct WireFlow {
        var originalSource: IPAddress
        var originalDestination: IPAddress
        var hasPorts: Bool
        var sourceNAT: IPAddress?
        var destinationNAT: IPAddress?
        var sourcePortNAT: UInt16?
        var destinationPortNAT: UInt16?

        init(_ flow: Flow) {
            let family = flow.family
            func cut(_ address: IPAddress) -> IPAddress {
                family == .ipv4 ? IPAddress(ipv4: address.ipv4) : IPAddress(ipv6High: address.high, low: address.low)
            }
            originalSource = cut(flow.original.source)
            originalDestination = cut(flow.original.destination)
            // conntrackd 1.4.7 has no port builder for UDPLite and GRE, so its peers cannot commit
            // those flows; ctsync sends their ports (GRE keys), which conntrackd receivers accept.
            hasPorts = flow.proto.hasPorts
            let srcDone = flow.status.contains(.srcNATDone)
            let dstDone = flow.status.contains(.dstNATDone)
            let replyDestination = cut(flow.reply.destination)
            let replySource = cut(flow.reply.source)
            sourceNAT = srcDone && replyDestination != originalSource ? replyDestination : nil
            destinationNAT = dstDone && replySource != originalDestination ? replySource : nil
            // libnetfilter_conntrack compares the port slots of ICMP tuples too and conntrackd then
            // sends the reply's type/code as a "port"; ctsync does not (see docs/protocol.md).
            if hasPorts {
                let spat = flow.reply.destinationPort
                let dpat = flow.reply.sourcePort
                sourcePortNAT = srcDone && spat != flow.original.sourcePort ? spat : nil
                destinationPortNAT = dstDone && dpat != flow.original.destinationPort ? dpat : nil
            }
        }
    }

    /// The helper name's bytes as they travel (up to the first NUL), or nil when conntrackd's
    /// receivers would reject it (more than 11 bytes) or there is none.
    static func helperBytes(_ helper: String?) -> [UInt8]? {
        guard let helper else { return nil }
        let bytes = Array(helper.utf8.prefix { $0 != 0 })
        guard !bytes.isEmpty, bytes.count <= 11 else { return nil }
        return bytes
    }

    static func put(_ flow: Flow, into buffer: inout [UInt8], options: EncodeOptions) {
        let wire = WireFlow(flow)
        if flow.family == .ipv4 {
            put(&buffer, .ipv4, 8) {
                Wire.putBE32(&$0, wire.originalSource.ipv4)
                Wire.putBE32(&$0, wire.originalDestination.ipv4)
            }
        } else {
            put(&buffer, .ipv6, 32) {
                $0.append(contentsOf: wire.originalSource.ipv6Bytes)
                $0.append(contentsOf: wire.originalDestination.ipv6Bytes)
            }
        }
        put(&buffer, .status, 4) { Wire.putBE32(&$0, flow.status.rawValue) }
        put(&buffer, .l4proto, 1) { $0.append(flow.proto.rawValue) }

        if wire.hasPorts {
            put(&buffer, .port, 4) {
                Wire.putBE16(&$0, flow.original.sourcePort)
                Wire.putBE16(&$0, flow.original.destinationPort)
            }
        }
        switch flow.proto {
        case .tcp:
            if let tcp = flow.tcp {
                put(&buffer, .tcpState, 1) { $0.append(tcp.state.rawValue) }
                if options.includeWindowScale {
                    put(&buffer, .tcpWindowScaleOriginal, 1) { $0.append(tcp.originalWindowScale) }
                    put(&buffer, .tcpWindowScaleReply, 1) { $0.append(tcp.replyWindowScale) }
                }
            }
        case .sctp:
            if let sctp = flow.sctp {
                put(&buffer, .sctpState, 1) { $0.append(sctp.state.rawValue) }
                put(&buffer, .sctpVerificationTagOriginal, 4) { Wire.putBE32(&$0, sctp.originalVerificationTag) }
                put(&buffer, .sctpVerificationTagReply, 4) { Wire.putBE32(&$0, sctp.replyVerificationTag) }
            }
        case .dccp:
            if let dccp = flow.dccp {
                put(&buffer, .dccpState, 1) { $0.append(dccp.state.rawValue) }
                put(&buffer, .dccpRole, 1) { $0.append(dccp.role) }
            }
        case .icmp, .icmpv6:
            if let icmp = flow.icmp {
                put(&buffer, .icmpType, 1) { $0.append(icmp.type) }
                put(&buffer, .icmpCode, 1) { $0.append(icmp.code) }
                put(&buffer, .icmpID, 2) { Wire.putLE16(&$0, icmp.id) }
            }
        default:
            break
        }

        if options.includeTimeout, let timeout = flow.timeout {
            put(&buffer, .timeout, 4) { Wire.putBE32(&$0, timeout) }
        }
        if flow.mark != 0 || options.includeZeroMark {
            put(&buffer, .mark, 4) { Wire.putBE32(&$0, flow.mark) }
        }

        if flow.family == .ipv4 {
            if let snat = wire.sourceNAT { put(&buffer, .snatIPv4, 4) { Wire.putBE32(&$0, snat.ipv4) } }
            if let dnat = wire.destinationNAT { put(&buffer, .dnatIPv4, 4) { Wire.putBE32(&$0, dnat.ipv4) } }
        } else {
            if let snat = wire.sourceNAT { put(&buffer, .snatIPv6, 16) { $0.append(contentsOf: snat.ipv6Bytes) } }
            if let dnat = wire.destinationNAT { put(&buffer, .dnatIPv6, 16) { $0.append(contentsOf: dnat.ipv6Bytes) } }
        }
        if let spat = wire.sourcePortNAT { put(&buffer, .spatPort, 2) { Wire.putLE16(&$0, spat) } }
        if let dpat = wire.destinationPortNAT { put(&buffer, .dpatPort, 2) { Wire.putLE16(&$0, dpat) } }

        if let adjustment = flow.sequenceAdjustment {
            put(&buffer, .natSequenceAdjustment, 24) {
                for side in [adjustment.original, adjustment.reply] {
                    Wire.putBE32(&$0, side.correctionPosition)
                    Wire.putBE32(&$0, side.offsetBefore)
                    Wire.putBE32(&$0, side.offsetAfter)
                }
            }
        }
        if let helper = helperBytes(flow.helper) {
            put(&buffer, .helperName, helper.count + 1) {
                $0.append(contentsOf: helper)
                $0.append(0)
            }
        }
        if !flow.labels.isEmpty {
            // The kernel reports labels as its whole 128-bit area, so conntrackd sends four words.
            put(&buffer, .labels, 16) {
                let (low, high) = flow.labels.words
                for word in [low, low >> 32, high, high >> 32] { Wire.putBE32(&$0, UInt32(truncatingIfNeeded: word)) }
            }
        }
        if options.includeEmptySynproxy {
            put(&buffer, .synproxy, 12) { $0.append(contentsOf: repeatElement(0, count: 12)) }
        }
        if flow.zone != 0 {
            put(&buffer, .zone, 2) { Wire.putBE16(&$0, flow.zone) }
        }
    }

    private static func put(_ buffer: inout [UInt8], _ attribute: FlowAttribute, _ payloadLength: Int, _ payload: (inout [UInt8]) -> Void) {
        Wire.putAttribute(&buffer, id: attribute.rawValue, payloadLength: payloadLength, payload)
    }
}

/// Reads a flow message's attributes with conntrackd's `msg2ct` rules, then checks that they
/// describe one flow ctsync can hold.
enum FlowDecoder {
    /// The attributes seen, before they are checked against each other.
    private struct Fields {
        var seen: UInt64 = 0
        var family: AddressFamily?
        var source = IPAddress(ipv4: 0)
        var destination = IPAddress(ipv4: 0)
        var proto: L4Protocol?
        var ports: (UInt16, UInt16)?
        var status: UInt32 = 0
        var timeout: UInt32?
        var mark: UInt32 = 0
        var tcpState: UInt8?
        var windowScale: (original: UInt8?, reply: UInt8?)
        var sctpState: UInt8?
        var verificationTags: (original: UInt32?, reply: UInt32?)
        var dccpState: UInt8?
        var dccpRole: UInt8?
        var icmpType: UInt8?
        var icmpCode: UInt8?
        var icmpID: UInt16?
        var snat: IPAddress?
        var dnat: IPAddress?
        var spat: UInt16?
        var dpat: UInt16?
        var adjustment: NATSequenceAdjustment?
        var helper: String?
        var labels = FlowLabels()
        var zone: UInt16 = 0

        func has(_ attribute: FlowAttribute) -> Bool { seen & (1 << UInt64(attribute.rawValue)) != 0 }
    }

    /// `message` is the whole message (header included), exactly its length long.
    static func decode(_ message: UnsafeRawBufferPointer) throws(WireError) -> Flow {
        var fields = Fields()
        var offset = SyncProtocol.headerSize
        var remaining = message.count - offset
        // As msg2ct: up to 4 trailing bytes are ignored, and the last attribute's padding may be
        // missing (its unpadded length is what must fit).
        while remaining > Wire.attributeHeaderSize {
            let length = Int(Wire.be16(message, offset))
            let id = Wire.be16(message, offset + 2)
            guard length <= remaining else { throw .attributeTruncated(id: id, length: UInt16(length), remaining: remaining) }
            guard length >= Wire.attributeHeaderSize else { throw .badAttributeLength(id: id, length: UInt16(length)) }
            guard let attribute = FlowAttribute(rawValue: id) else { throw .unknownAttribute(id: id) }
            if let fixed = attribute.fixedLength, length != fixed { throw .badAttributeLength(id: id, length: UInt16(length)) }
            if let maximum = attribute.maximumLength, length > maximum { throw .badAttributeLength(id: id, length: UInt16(length)) }
            guard !fields.has(attribute) else { throw .duplicateAttribute(id: id) }
            fields.seen |= 1 << UInt64(id)
            try read(attribute, UnsafeRawBufferPointer(rebasing: message[(offset + Wire.attributeHeaderSize)..<(offset + length)]), into: &fields)
            let step = Wire.aligned(length)
            offset += step
            remaining -= step
        }
        return try assemble(fields)
    }

    private static func read(_ attribute: FlowAttribute, _ p: UnsafeRawBufferPointer, into f: inout Fields) throws(WireError) {
        switch attribute {
        case .ipv4:
            guard f.family == nil else { throw .contradictory("both NTA_IPV4 and NTA_IPV6") }
            f.family = .ipv4
            f.source = IPAddress(ipv4: Wire.be32(p, 0))
            f.destination = IPAddress(ipv4: Wire.be32(p, 4))
        case .ipv6:
            guard f.family == nil else { throw .contradictory("both NTA_IPV4 and NTA_IPV6") }
            f.family = .ipv6
            f.source = IPAddress(ipv6Bytes: UnsafeRawBufferPointer(rebasing: p[0..<16]))
            f.destination = IPAddress(ipv6Bytes: UnsafeRawBufferPointer(rebasing: p[16..<32]))
        case .l4proto: f.proto = L4Protocol(rawValue: p[0])
        case .port: f.ports = (Wire.be16(p, 0), Wire.be16(p, 2))
        case .tcpState: f.tcpState = p[0]
        case .status: f.status = Wire.be32(p, 0)
        case .timeout: f.timeout = Wire.be32(p, 0)
        case .mark: f.mark = Wire.be32(p, 0)
        case .masterIPv4, .masterIPv6, .masterL4proto, .masterPort, .synproxy:
            // Valid, but ctsync's flow has no master tuple and no synproxy state.
            break
        case .snatIPv4: f.snat = IPAddress(ipv4: Wire.be32(p, 0))
        case .dnatIPv4: f.dnat = IPAddress(ipv4: Wire.be32(p, 0))
        case .snatIPv6: f.snat = IPAddress(ipv6Bytes: p)
        case .dnatIPv6: f.dnat = IPAddress(ipv6Bytes: p)
        case .spatPort: f.spat = Wire.le16(p, 0)
        case .dpatPort: f.dpat = Wire.le16(p, 0)
        case .natSequenceAdjustment:
            func side(_ at: Int) -> SequenceAdjustment {
                SequenceAdjustment(
                    correctionPosition: Wire.be32(p, at), offsetBefore: Wire.be32(p, at + 4), offsetAfter: Wire.be32(p, at + 8))
            }
            f.adjustment = NATSequenceAdjustment(original: side(0), reply: side(12))
        case .sctpState: f.sctpState = p[0]
        case .sctpVerificationTagOriginal: f.verificationTags.original = Wire.be32(p, 0)
        case .sctpVerificationTagReply: f.verificationTags.reply = Wire.be32(p, 0)
        case .dccpState: f.dccpState = p[0]
        case .dccpRole: f.dccpRole = p[0]
        case .icmpType: f.icmpType = p[0]
        case .icmpCode: f.icmpCode = p[0]
        case .icmpID: f.icmpID = Wire.le16(p, 0)
        case .tcpWindowScaleOriginal: f.windowScale.original = p[0]
        case .tcpWindowScaleReply: f.windowScale.reply = p[0]
        case .helperName:
            // conntrackd sends the name and its NUL; anything after a NUL is not part of it.
            let name = p.prefix { $0 != 0 }
            guard let text = String(validating: name, as: UTF8.self) else { throw .badHelperName }
            f.helper = text.isEmpty ? nil : text
        case .labels:
            guard p.count % 4 == 0 else { throw .badAttributeLength(id: attribute.rawValue, length: UInt16(p.count + 4)) }
            var words: (UInt64, UInt64) = (0, 0)
            for index in 0..<(p.count / 4) {
                let word = Wire.be32(p, index * 4)
                guard word != 0 else { continue }
                switch index {
                case 0: words.0 |= UInt64(word)
                case 1: words.0 |= UInt64(word) << 32
                case 2: words.1 |= UInt64(word)
                case 3: words.1 |= UInt64(word) << 32
                default: throw .labelOutOfRange(bit: index * 32 + word.trailingZeroBitCount)
                }
            }
            f.labels.words = words
        case .zone: f.zone = Wire.be16(p, 0)
        }
    }

    private static func assemble(_ f: Fields) throws(WireError) -> Flow {
        guard let family = f.family else { throw .missingAttribute("NTA_IPV4 or NTA_IPV6") }
        guard let proto = f.proto else { throw .missingAttribute("NTA_L4PROTO") }

        var original = Tuple(source: f.source, destination: f.destination)
        if let (sourcePort, destinationPort) = f.ports {
            guard proto.hasPorts else { throw .contradictory("NTA_PORT on protocol \(proto.rawValue)") }
            original.sourcePort = sourcePort
            original.destinationPort = destinationPort
        } else if proto == .tcp || proto == .udp || proto == .sctp || proto == .dccp {
            throw .missingAttribute("NTA_PORT")
        }

        var reply = original.inverted
        if let snat = f.snat {
            guard snat.family == family else { throw .contradictory("\(family) flow with an \(snat.family) source NAT address") }
            reply.destination = snat
        }
        if let dnat = f.dnat {
            guard dnat.family == family else { throw .contradictory("\(family) flow with an \(dnat.family) destination NAT address") }
            reply.source = dnat
        }
        if f.spat != nil || f.dpat != nil {
            // conntrackd sends NAT "ports" for NAT'ed ICMP flows (the reply's type and code): not a
            // contradiction, but nothing ctsync can use either.
            if proto.hasPorts {
                if let spat = f.spat { reply.destinationPort = spat }
                if let dpat = f.dpat { reply.sourcePort = dpat }
            } else if !proto.isICMP {
                throw .contradictory("NAT port on protocol \(proto.rawValue)")
            }
        }

        var icmp: ICMPInfo?
        if f.icmpType != nil || f.icmpCode != nil || f.icmpID != nil {
            guard proto.isICMP else { throw .contradictory("ICMP attributes on protocol \(proto.rawValue)") }
            guard let type = f.icmpType else { throw .contradictory("ICMP code or id without a type") }
            icmp = ICMPInfo(type: type, code: f.icmpCode ?? 0, id: f.icmpID ?? 0)
        }

        var tcp: TCPInfo?
        if f.tcpState != nil || f.windowScale.original != nil || f.windowScale.reply != nil {
            guard proto == .tcp else { throw .contradictory("TCP attributes on protocol \(proto.rawValue)") }
            guard let state = f.tcpState else { throw .contradictory("TCP window scale without a TCP state") }
            tcp = TCPInfo(
                state: TCPState(rawValue: state), originalWindowScale: f.windowScale.original ?? 0,
                replyWindowScale: f.windowScale.reply ?? 0)
        }

        var flow = Flow(
            proto: proto, original: original, reply: reply, icmp: icmp, tcp: tcp, status: FlowStatus(rawValue: f.status),
            timeout: f.timeout, mark: f.mark, zone: f.zone)
        flow.family = family

        if f.sctpState != nil || f.verificationTags.original != nil || f.verificationTags.reply != nil {
            guard proto == .sctp else { throw .contradictory("SCTP attributes on protocol \(proto.rawValue)") }
            guard let state = f.sctpState else { throw .contradictory("SCTP verification tag without an SCTP state") }
            flow.sctp = SCTPInfo(
                state: SCTPState(rawValue: state), originalVerificationTag: f.verificationTags.original ?? 0,
                replyVerificationTag: f.verificationTags.reply ?? 0)
        }
        if f.dccpState != nil || f.dccpRole != nil {
            guard proto == .dccp else { throw .contradictory("DCCP attributes on protocol \(proto.rawValue)") }
            guard let state = f.dccpState else { throw .contradictory("DCCP role without a DCCP state") }
            flow.dccp = DCCPInfo(state: DCCPState(rawValue: state), role: f.dccpRole ?? 0)
        }
        flow.labels = f.labels
        flow.helper = f.helper
        flow.sequenceAdjustment = f.adjustment
        return flow
    }
}
