/// Reads a ctnetlink conntrack message straight into a `Flow`: one pass over its attributes, no
/// allocation, no library object.
///
/// It gives what `nfct_nlmsg_parse` followed by `NFConntrack.flow(from:)` gives (the library's
/// reading is kept for the tests that compare the two on the kernel's own messages), at a fifth
/// of the cost: the library allocates an object per message, fills it through callbacks and is
/// then asked for each attribute by a function call. The event socket and dumps read every flow
/// through here, at the kernel's rate.
///
/// The library's rules, kept: attribute types beyond those known are skipped; a known attribute
/// too short for its type makes the whole message unreadable (nil); an attribute whose length
/// runs past its container ends that container (the rest is ignored); when an attribute repeats,
/// the last one counts. Values are read from the original tuple; the ICMP identity counts as
/// present when either tuple carries it.
enum FlowMessageParser {
    /// Whether CTA_TIMESTAMP is read into `Flow.timestamps` (conntrack's command line, which
    /// prints it); set once at start, before any parsing. Off, a flow from a dump and the same
    /// flow from an event stay equal.
    nonisolated(unsafe) static var readsTimestamps = false
    /// ctnetlink's attribute numbers (linux/netfilter/nfnetlink_conntrack.h).
    private enum CTA {
        static let tupleOriginal: UInt16 = 1
        static let tupleReply: UInt16 = 2
        static let status: UInt16 = 3
        static let protoinfo: UInt16 = 4
        static let help: UInt16 = 5
        static let timeout: UInt16 = 7
        static let mark: UInt16 = 8
        static let countersOriginal: UInt16 = 9
        static let countersReply: UInt16 = 10
        static let use: UInt16 = 11
        static let id: UInt16 = 12
        static let tupleMaster: UInt16 = 14
        static let seqAdjOriginal: UInt16 = 15
        static let seqAdjReply: UInt16 = 16
        static let secmark: UInt16 = 17
        static let zone: UInt16 = 18
        static let secctx: UInt16 = 19
        static let timestamp: UInt16 = 20
        static let labels: UInt16 = 22
        static let max: UInt16 = 26
    }

    private static let typeMask: UInt16 = 0x3fff
    private static let headerSize = 16 + 4  // nlmsghdr + nfgenmsg

    /// One attribute: its type (flags masked off) and payload.
    private struct Attribute {
        var type: UInt16
        var payload: UnsafeRawBufferPointer

        func u8() -> UInt8 { payload[0] }
        func u16() -> UInt16 { UInt16(bigEndian: payload.loadUnaligned(as: UInt16.self)) }
        func u32() -> UInt32 { UInt32(bigEndian: payload.loadUnaligned(as: UInt32.self)) }
        func u64() -> UInt64 { UInt64(bigEndian: payload.loadUnaligned(as: UInt64.self)) }
    }

    /// Calls `body` for each well-formed attribute in `buffer`; stops at the first whose length
    /// does not fit (as libmnl's iteration does). `body` returns false to fail the whole parse.
    @inline(__always)
    private static func forEach(_ buffer: UnsafeRawBufferPointer, _ body: (Attribute) -> Bool) -> Bool {
        var offset = 0
        let count = buffer.count
        while count - offset >= 4 {
            let length = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            guard length >= 4, length <= count - offset else { break }
            let type = buffer.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & typeMask
            let payload = UnsafeRawBufferPointer(rebasing: buffer[(offset + 4)..<(offset + length)])
            if !body(Attribute(type: type, payload: payload)) { return false }
            offset += (length + 3) & ~3
        }
        return true
    }

    /// A tuple as read: what it carried.
    private struct TupleFields {
        var source = IPAddress(ipv4: 0)
        var destination = IPAddress(ipv4: 0)
        var sourcePort: UInt16?
        var destinationPort: UInt16?
        var proto: UInt8 = 0
        var icmpType: UInt8?
        var icmpCode: UInt8?
        var icmpID: UInt16?
        var sawIPv6Source = false
        var sawIPv6Destination = false
        var zone: UInt16?
    }

    private static func tuple(_ buffer: UnsafeRawBufferPointer, family: AddressFamily) -> TupleFields? {
        var t = TupleFields()
        if family == .ipv6 {
            t.source = .zero(.ipv6)
            t.destination = .zero(.ipv6)
        }
        let ok = forEach(buffer) { attribute in
            switch attribute.type {
            case 1:  // CTA_TUPLE_IP
                return forEach(attribute.payload) { ip in
                    switch ip.type {
                    case 1, 2:  // CTA_IP_V4_SRC, _DST
                        guard ip.payload.count == 4 else { return false }
                        if family == .ipv4 {
                            let address = IPAddress(ipv4: ip.u32())
                            if ip.type == 1 { t.source = address } else { t.destination = address }
                        }
                    case 3, 4:  // CTA_IP_V6_SRC, _DST
                        guard ip.payload.count == 16 else { return false }
                        if family == .ipv6 {
                            let address = IPAddress(ipv6Bytes: UnsafeRawBufferPointer(rebasing: ip.payload[0..<16]))
                            if ip.type == 3 { t.source = address } else { t.destination = address }
                        }
                    default: break
                    }
                    return true
                }
            case 2:  // CTA_TUPLE_PROTO
                return forEach(attribute.payload) { p in
                    switch p.type {
                    case 1, 5, 6, 8, 9:  // NUM, ICMP_TYPE, ICMP_CODE, ICMPV6_TYPE, ICMPV6_CODE
                        guard p.payload.count == 1 else { return false }
                        switch p.type {
                        case 1: t.proto = p.u8()
                        case 5, 8: t.icmpType = p.u8()
                        default: t.icmpCode = p.u8()
                        }
                    case 2, 3, 4, 7:  // SRC_PORT, DST_PORT, ICMP_ID, ICMPV6_ID
                        guard p.payload.count == 2 else { return false }
                        switch p.type {
                        case 2: t.sourcePort = p.u16()
                        case 3: t.destinationPort = p.u16()
                        default: t.icmpID = p.u16()
                        }
                    default: break
                    }
                    return true
                }
            case 3:  // CTA_TUPLE_ZONE: this direction's zone
                guard attribute.payload.count == 2 else { return false }
                t.zone = attribute.u16()
                return true
            default:
                return true
            }
        }
        return ok ? t : nil
    }

    /// Parses one message (its netlink header included); nil when it is not a conntrack message
    /// with an original tuple, or is malformed.
    static func parse(_ message: UnsafeRawBufferPointer) -> (Flow, FlowAttributes)? {
        guard message.count >= headerSize,
            let family = AddressFamily(rawValue: message[16])
        else { return nil }
        let attributes = UnsafeRawBufferPointer(rebasing: message[headerSize...])

        var original: TupleFields?
        var reply: TupleFields?
        var sawReply = false
        var present: FlowAttributes = []
        var status: UInt32?
        var timeout: UInt32?
        var mark: UInt32?
        var zone: UInt16 = 0
        var use: UInt32?
        var id: UInt32?
        var tcp: TCPInfo?
        var sctp: SCTPInfo?
        var dccp: DCCPInfo?
        var helper: String?
        let noAdjustment = SequenceAdjustment(correctionPosition: 0, offsetBefore: 0, offsetAfter: 0)
        var seqAdjust = (original: noAdjustment, reply: noAdjustment, originalHasPosition: false)
        var counters: (packets: UInt64?, bytes: UInt64?, replyPackets: UInt64?, replyBytes: UInt64?)
        var labels = FlowLabels()
        var timestamps = FlowTimestamps()

        func word(_ a: Attribute) -> UInt32? { a.payload.count == 4 ? a.u32() : nil }

        let ok = forEach(attributes) { a in
            guard a.type <= CTA.max else { return true }
            switch a.type {
            case CTA.tupleOriginal:
                guard let t = tuple(a.payload, family: family) else { return false }
                original = t
            case CTA.tupleReply:
                guard let t = tuple(a.payload, family: family) else { return false }
                reply = t
                sawReply = true
            case CTA.tupleMaster:
                return tuple(a.payload, family: family) != nil
            case CTA.status, CTA.timeout, CTA.mark, CTA.secmark, CTA.use, CTA.id:
                guard let v = word(a) else { return false }
                switch a.type {
                case CTA.status: status = v
                case CTA.timeout: timeout = v
                case CTA.mark: mark = v
                case CTA.use: use = v
                case CTA.id: id = v
                default: break
                }
            case CTA.zone:
                guard a.payload.count == 2 else { return false }
                zone = a.u16()
            case CTA.protoinfo:
                return protoinfo(a.payload, tcp: &tcp, sctp: &sctp, dccp: &dccp)
            case CTA.help:
                return forEach(a.payload) { h in
                    guard h.type == 1 else { return true }  // CTA_HELP_NAME
                    guard h.payload.count > 0 else { return false }
                    // A C string, at most 15 bytes kept (the library's NFCT_HELPER_NAME_MAX - 1).
                    let bytes = h.payload.prefix { $0 != 0 }.prefix(15)
                    helper = bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
                    return true
                }
            case CTA.seqAdjOriginal, CTA.seqAdjReply:
                var adjustment = SequenceAdjustment(correctionPosition: 0, offsetBefore: 0, offsetAfter: 0)
                var sawPosition = false
                let fine = forEach(a.payload) { s in
                    guard (1...3).contains(s.type) else { return true }
                    guard let v = word(s) else { return false }
                    switch s.type {
                    case 1:
                        adjustment.correctionPosition = v
                        sawPosition = true
                    case 2: adjustment.offsetBefore = v
                    default: adjustment.offsetAfter = v
                    }
                    return true
                }
                guard fine else { return false }
                if a.type == CTA.seqAdjOriginal {
                    seqAdjust.original = adjustment
                    seqAdjust.originalHasPosition = sawPosition
                } else {
                    seqAdjust.reply = adjustment
                }
            case CTA.countersOriginal, CTA.countersReply:
                var packets: UInt64?
                var bytes: UInt64?
                let fine = forEach(a.payload) { c in
                    switch c.type {
                    case 1, 2:  // CTA_COUNTERS_PACKETS, _BYTES (64-bit)
                        guard c.payload.count == 8 else { return false }
                        if c.type == 1 { packets = c.u64() } else { bytes = c.u64() }
                    case 3, 4:  // the 32-bit forms; a 64-bit one wins
                        guard let v = word(c) else { return false }
                        if c.type == 3 { packets = packets ?? UInt64(v) } else { bytes = bytes ?? UInt64(v) }
                    default: break
                    }
                    return true
                }
                guard fine else { return false }
                if a.type == CTA.countersOriginal {
                    counters.packets = packets
                    counters.bytes = bytes
                } else {
                    counters.replyPackets = packets
                    counters.replyBytes = bytes
                }
            case CTA.timestamp:
                guard readsTimestamps else { return true }
                let fine = forEach(a.payload) { t in
                    guard t.type == 1 || t.type == 2 else { return true }  // CTA_TIMESTAMP_START, _STOP
                    guard t.payload.count == 8 else { return false }
                    if t.type == 1 { timestamps.start = t.u64() } else { timestamps.stop = t.u64() }
                    return true
                }
                guard fine else { return false }
            case CTA.secctx:
                return true
            case CTA.labels:
                let length = a.payload.count
                guard length > 0 else { return true }
                present.insert(.labels)
                // 32-bit words in host order; bits past 127 are not kept.
                let words = min(length / 4, 4)
                for w in 0..<words {
                    let value = a.payload.loadUnaligned(fromByteOffset: w * 4, as: UInt32.self)
                    var bits = value
                    while bits != 0 {
                        let bit = bits.trailingZeroBitCount
                        labels.insert(w * 32 + bit)
                        bits &= bits - 1
                    }
                }
            default:
                return true
            }
            return true
        }
        guard ok, let original else { return nil }

        let proto = L4Protocol(rawValue: original.proto)
        func makeTuple(_ t: TupleFields) -> Tuple {
            Tuple(
                source: t.source, destination: t.destination,
                sourcePort: proto.hasPorts ? t.sourcePort ?? 0 : 0,
                destinationPort: proto.hasPorts ? t.destinationPort ?? 0 : 0)
        }
        let originalTuple = makeTuple(original)
        var flow = Flow(proto: proto, original: originalTuple, reply: sawReply ? makeTuple(reply!) : originalTuple.inverted)
        flow.family = family
        if proto.isICMP && (original.icmpType != nil || reply?.icmpType != nil) {
            flow.icmp = ICMPInfo(type: original.icmpType ?? 0, code: original.icmpCode ?? 0, id: original.icmpID ?? 0)
        }
        flow.tcp = tcp
        flow.sctp = sctp
        flow.dccp = dccp
        if tcp != nil || sctp != nil || dccp != nil { present.insert(.protocolInfo) }
        if let status {
            flow.status = FlowStatus(rawValue: status)
            present.insert(.status)
        }
        if let timeout {
            flow.timeout = timeout
            present.insert(.timeout)
        }
        if let mark {
            flow.mark = mark
            present.insert(.mark)
        }
        flow.zone = zone
        if let z = original.zone { flow.originalZone = z }
        if let z = reply?.zone { flow.replyZone = z }
        flow.use = use
        flow.id = id
        if let helper {
            flow.helper = helper
            present.insert(.helper)
        }
        if seqAdjust.originalHasPosition {
            flow.sequenceAdjustment = NATSequenceAdjustment(original: seqAdjust.original, reply: seqAdjust.reply)
            present.insert(.sequenceAdjustment)
        }
        if let packets = counters.packets {
            flow.counters = FlowCounters(
                originalPackets: packets, originalBytes: counters.bytes ?? 0, replyPackets: counters.replyPackets ?? 0,
                replyBytes: counters.replyBytes ?? 0)
            present.insert(.counters)
        }
        flow.labels = labels
        if timestamps.start != nil || timestamps.stop != nil { flow.timestamps = timestamps }
        return (flow, present)
    }

    private static func protoinfo(
        _ buffer: UnsafeRawBufferPointer, tcp: inout TCPInfo?, sctp: inout SCTPInfo?, dccp: inout DCCPInfo?
    ) -> Bool {
        forEach(buffer) { p in
            switch p.type {
            case 1:  // CTA_PROTOINFO_TCP
                var state: UInt8?
                var info = TCPInfo(state: .none)
                let fine = forEach(p.payload) { t in
                    switch t.type {
                    case 1, 2, 3:  // STATE, WSCALE_ORIGINAL, WSCALE_REPLY
                        guard t.payload.count == 1 else { return false }
                        switch t.type {
                        case 1: state = t.u8()
                        case 2: info.originalWindowScale = t.u8()
                        default: info.replyWindowScale = t.u8()
                        }
                    case 4, 5:  // FLAGS_ORIGINAL, FLAGS_REPLY: struct nf_ct_tcp_flags { flags; mask }
                        guard t.payload.count == 2 else { return false }
                        if t.type == 4 { info.originalFlags = t.u8() } else { info.replyFlags = t.u8() }
                    default: break
                    }
                    return true
                }
                guard fine else { return true }  // the library drops a bad block, not the message
                if let state {
                    info.state = TCPState(rawValue: state)
                    tcp = info
                }
            case 2:  // CTA_PROTOINFO_DCCP
                var state: UInt8?
                var info = DCCPInfo(state: DCCPState(rawValue: 0))
                let fine = forEach(p.payload) { d in
                    switch d.type {
                    case 1, 2:
                        guard d.payload.count == 1 else { return false }
                        if d.type == 1 { state = d.u8() } else { info.role = d.u8() }
                    case 3:
                        guard d.payload.count == 8 else { return false }
                        info.handshakeSequence = d.u64()
                    default: break
                    }
                    return true
                }
                guard fine else { return true }  // the library drops a bad block, not the message
                if let state {
                    info.state = DCCPState(rawValue: state)
                    dccp = info
                }
            case 3:  // CTA_PROTOINFO_SCTP
                var state: UInt8?
                var info = SCTPInfo(state: SCTPState(rawValue: 0))
                let fine = forEach(p.payload) { s in
                    switch s.type {
                    case 1:
                        guard s.payload.count == 1 else { return false }
                        state = s.u8()
                    case 2, 3:
                        guard s.payload.count == 4 else { return false }
                        if s.type == 2 { info.originalVerificationTag = s.u32() } else { info.replyVerificationTag = s.u32() }
                    default: break
                    }
                    return true
                }
                guard fine else { return true }  // the library drops a bad block, not the message
                if let state {
                    info.state = SCTPState(rawValue: state)
                    sctp = info
                }
            default: break
            }
            return true
        }
    }
}
