import CNetfilter

/// Conversion between `Flow` values and libnetfilter_conntrack objects. Internal:
/// every `nf_conntrack` made here is destroyed by the caller on every path.
enum NFConntrack {
    /// What a message built from a flow is for; it decides which attributes travel.
    enum Purpose {
        /// Everything the kernel accepts on creation.
        case create
        /// Only what the kernel lets change on an existing flow.
        case update
        /// Just the identity (tuple, zone, and id when known).
        case delete
        /// Just the identity, for a lookup.
        case get
    }

    /// Runs `body` with a fresh object holding `flow`, destroyed afterwards.
    static func with<T>(_ flow: Flow, purpose: Purpose, _ body: (OpaquePointer) throws -> T) throws -> T {
        guard let ct = nfct_new() else { throw KernelError.build(detail: "out of memory") }
        defer { nfct_destroy(ct) }
        fill(ct, from: flow, purpose: purpose)
        return try body(ct)
    }

    /// Writes one complete ctnetlink request for `flow` at `buffer` (which must have room for
    /// a conntrack message, 2 KiB is plenty) and returns its header.
    static func buildMessage(
        at buffer: UnsafeMutableRawPointer, flow: Flow, type: cntl_msg_types, flags: UInt16, sequence: UInt32,
        purpose: Purpose
    ) throws -> UnsafeMutablePointer<nlmsghdr> {
        let header = ctsync_put_ct_header(buffer, UInt8(type.rawValue), flags, sequence, flow.family.rawValue)!
        try with(flow, purpose: purpose) { ct in
            if nfct_nlmsg_build(header, ct) < 0 {
                throw KernelError.build(detail: "libnetfilter_conntrack refused \(FlowTextFormat().line(flow))")
            }
        }
        // libnetfilter_conntrack never emits CTA_ID; with it the kernel deletes only the very
        // flow that was dumped, not one re-created with the same tuple since.
        if purpose == .delete, let id = flow.id {
            mnl_attr_put_u32(header, UInt16(CTA_ID.rawValue), id.bigEndian)
        }
        return header
    }

    static func fill(_ ct: OpaquePointer, from flow: Flow, purpose: Purpose) {
        let l3 = UInt8(flow.family.rawValue)
        nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, l3)
        nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, flow.proto.rawValue)
        setAddresses(ct, flow.original, src: (ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC), dst: (ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST))
        if flow.proto.hasPorts {
            nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, flow.original.sourcePort.bigEndian)
            nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, flow.original.destinationPort.bigEndian)
        }
        if let icmp = flow.icmp, flow.proto.isICMP {
            // The setters also fill in the reply direction's ICMP fields.
            nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, icmp.type)
            nfct_set_attr_u8(ct, ATTR_ICMP_CODE, icmp.code)
            nfct_set_attr_u16(ct, ATTR_ICMP_ID, icmp.id.bigEndian)
        }
        if let zone = flow.originalZone {
            // A zone of one direction: the tuple carries it (CTA_TUPLE_ZONE); CTA_ZONE would
            // say "both directions" and the kernel refuses the two together.
            nfct_set_attr_u16(ct, ATTR_ORIG_ZONE, zone)
        }
        // The reply's zone travels in the reply tuple, which only creation and update carry.
        if let zone = flow.replyZone, purpose == .create || purpose == .update { nfct_set_attr_u16(ct, ATTR_REPL_ZONE, zone) }
        if flow.zone != 0 || (purpose == .create && flow.originalZone == nil && flow.replyZone == nil) {
            nfct_set_attr_u16(ct, ATTR_ZONE, flow.zone)
        }
        if purpose == .delete || purpose == .get {
            return
        }

        // The kernel applies NAT to a packet only when the flow's NAT was set up by the kernel
        // itself (the *_NAT status bits are not accepted from user space). A NATed flow is
        // therefore created un-NATed (reply = inverse of original) with the NAT mappings as
        // CTA_NAT_SRC/CTA_NAT_DST; the kernel then derives the same reply tuple and marks the
        // flow for NAT. An update cannot carry NAT (the kernel refuses): only the identity.
        let reply = purpose == .create && flow.isNATed ? flow.original.inverted : flow.reply
        nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, l3)
        nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, flow.proto.rawValue)
        setAddresses(ct, reply, src: (ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC), dst: (ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST))
        if flow.proto.hasPorts {
            nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, reply.sourcePort.bigEndian)
            nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, reply.destinationPort.bigEndian)
        }
        if purpose == .create && flow.isNATed { setNAT(ct, flow) }

        if purpose == .create {
            // The kernel marks flows made over netlink confirmed before it applies
            // the status; leaving the bit out would read as an attempt to clear it.
            nfct_set_attr_u32(ct, ATTR_STATUS, (flow.status.union(.confirmed)).rawValue & ~FlowStatus.unsettable.rawValue)
        } else {
            nfct_set_attr_u32(ct, ATTR_STATUS, flow.status.rawValue & ~FlowStatus.unsettable.rawValue | FlowStatus.confirmed.rawValue)
        }
        if let timeout = flow.timeout { nfct_set_attr_u32(ct, ATTR_TIMEOUT, timeout) }
        nfct_set_attr_u32(ct, ATTR_MARK, flow.mark)

        if let tcp = flow.tcp {
            nfct_set_attr_u8(ct, ATTR_TCP_STATE, tcp.state.rawValue)
            nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_ORIG, tcp.originalFlags)
            nfct_set_attr_u8(ct, ATTR_TCP_MASK_ORIG, 0xff)
            nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_REPL, tcp.replyFlags)
            nfct_set_attr_u8(ct, ATTR_TCP_MASK_REPL, 0xff)
            nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_ORIG, tcp.originalWindowScale)
            nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_REPL, tcp.replyWindowScale)
        }
        if let sctp = flow.sctp {
            nfct_set_attr_u8(ct, ATTR_SCTP_STATE, sctp.state.rawValue)
            nfct_set_attr_u32(ct, ATTR_SCTP_VTAG_ORIG, sctp.originalVerificationTag)
            nfct_set_attr_u32(ct, ATTR_SCTP_VTAG_REPL, sctp.replyVerificationTag)
        }
        if let dccp = flow.dccp {
            nfct_set_attr_u8(ct, ATTR_DCCP_STATE, dccp.state.rawValue)
            nfct_set_attr_u8(ct, ATTR_DCCP_ROLE, dccp.role)
            nfct_set_attr_u64(ct, ATTR_DCCP_HANDSHAKE_SEQ, dccp.handshakeSequence)
        }
        if let adj = flow.sequenceAdjustment {
            nfct_set_attr_u32(ct, ATTR_ORIG_NAT_SEQ_CORRECTION_POS, adj.original.correctionPosition)
            nfct_set_attr_u32(ct, ATTR_ORIG_NAT_SEQ_OFFSET_BEFORE, adj.original.offsetBefore)
            nfct_set_attr_u32(ct, ATTR_ORIG_NAT_SEQ_OFFSET_AFTER, adj.original.offsetAfter)
            nfct_set_attr_u32(ct, ATTR_REPL_NAT_SEQ_CORRECTION_POS, adj.reply.correctionPosition)
            nfct_set_attr_u32(ct, ATTR_REPL_NAT_SEQ_OFFSET_BEFORE, adj.reply.offsetBefore)
            nfct_set_attr_u32(ct, ATTR_REPL_NAT_SEQ_OFFSET_AFTER, adj.reply.offsetAfter)
        }
        if !flow.labels.isEmpty, let bitmask = nfct_bitmask_new(UInt32(FlowLabels.maxBit)) {
            for bit in flow.labels.bits { nfct_bitmask_set_bit(bitmask, UInt32(bit)) }
            // The object owns the bitmask from here and frees it with itself.
            nfct_set_attr(ct, ATTR_CONNLABELS, UnsafeRawPointer(bitmask))
        }
        if purpose == .create, let helper = flow.helper, !helper.isEmpty {
            helper.withCString { nfct_set_attr(ct, ATTR_HELPER_NAME, $0) }
        }
    }

    /// The NAT mappings of a flow as libnetfilter_conntrack's SNAT/DNAT attributes.
    private static func setNAT(_ ct: OpaquePointer, _ flow: Flow) {
        if let address = flow.sourceNAT {
            if address.family == .ipv4 {
                nfct_set_attr_u32(ct, ATTR_SNAT_IPV4, address.ipv4.bigEndian)
            } else {
                address.ipv6Bytes.withUnsafeBytes { nfct_set_attr(ct, ATTR_SNAT_IPV6, $0.baseAddress) }
            }
        }
        if let address = flow.destinationNAT {
            if address.family == .ipv4 {
                nfct_set_attr_u32(ct, ATTR_DNAT_IPV4, address.ipv4.bigEndian)
            } else {
                address.ipv6Bytes.withUnsafeBytes { nfct_set_attr(ct, ATTR_DNAT_IPV6, $0.baseAddress) }
            }
        }
        if let port = flow.sourcePortNAT { nfct_set_attr_u16(ct, ATTR_SNAT_PORT, port.bigEndian) }
        if let port = flow.destinationPortNAT { nfct_set_attr_u16(ct, ATTR_DNAT_PORT, port.bigEndian) }
    }

    private static func setAddresses(
        _ ct: OpaquePointer, _ tuple: Tuple, src: (nf_conntrack_attr, nf_conntrack_attr),
        dst: (nf_conntrack_attr, nf_conntrack_attr)
    ) {
        for (address, attrs) in [(tuple.source, src), (tuple.destination, dst)] {
            if address.family == .ipv4 {
                nfct_set_attr_u32(ct, attrs.0, address.ipv4.bigEndian)
            } else {
                address.ipv6Bytes.withUnsafeBytes { nfct_set_attr(ct, attrs.1, $0.baseAddress) }
            }
        }
    }

    /// Reads a flow out of an object parsed from the kernel; nil if it lacks a tuple.
    static func flow(from ct: OpaquePointer) -> Flow? {
        func has(_ a: nf_conntrack_attr) -> Bool { nfct_attr_is_set(ct, a) > 0 }
        guard has(ATTR_ORIG_L3PROTO) else { return nil }
        let l3 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO)
        guard let family = AddressFamily(rawValue: l3) else { return nil }
        let proto = L4Protocol(rawValue: nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO))

        func address(_ v4: nf_conntrack_attr, _ v6: nf_conntrack_attr) -> IPAddress {
            if family == .ipv4 {
                return IPAddress(ipv4: UInt32(bigEndian: nfct_get_attr_u32(ct, v4)))
            }
            guard let raw = nfct_get_attr(ct, v6) else { return .zero(.ipv6) }
            return IPAddress(ipv6Bytes: UnsafeRawBufferPointer(start: raw, count: 16))
        }
        func port(_ a: nf_conntrack_attr) -> UInt16 {
            proto.hasPorts && has(a) ? UInt16(bigEndian: nfct_get_attr_u16(ct, a)) : 0
        }
        let original = Tuple(
            source: address(ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC),
            destination: address(ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST),
            sourcePort: port(ATTR_ORIG_PORT_SRC), destinationPort: port(ATTR_ORIG_PORT_DST))
        let reply: Tuple
        if has(ATTR_REPL_L3PROTO) || has(ATTR_REPL_IPV4_SRC) || has(ATTR_REPL_IPV6_SRC) {
            reply = Tuple(
                source: address(ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC),
                destination: address(ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST),
                sourcePort: port(ATTR_REPL_PORT_SRC), destinationPort: port(ATTR_REPL_PORT_DST))
        } else {
            reply = original.inverted
        }
        var flow = Flow(proto: proto, original: original, reply: reply)
        flow.family = family
        if proto.isICMP && has(ATTR_ICMP_TYPE) {
            flow.icmp = ICMPInfo(
                type: nfct_get_attr_u8(ct, ATTR_ICMP_TYPE), code: nfct_get_attr_u8(ct, ATTR_ICMP_CODE),
                id: UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_ICMP_ID)))
        }
        if has(ATTR_TCP_STATE) {
            flow.tcp = TCPInfo(
                state: TCPState(rawValue: nfct_get_attr_u8(ct, ATTR_TCP_STATE)),
                originalFlags: has(ATTR_TCP_FLAGS_ORIG) ? nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_ORIG) : 0,
                replyFlags: has(ATTR_TCP_FLAGS_REPL) ? nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_REPL) : 0,
                originalWindowScale: has(ATTR_TCP_WSCALE_ORIG) ? nfct_get_attr_u8(ct, ATTR_TCP_WSCALE_ORIG) : 0,
                replyWindowScale: has(ATTR_TCP_WSCALE_REPL) ? nfct_get_attr_u8(ct, ATTR_TCP_WSCALE_REPL) : 0)
        }
        if has(ATTR_SCTP_STATE) {
            flow.sctp = SCTPInfo(
                state: SCTPState(rawValue: nfct_get_attr_u8(ct, ATTR_SCTP_STATE)),
                originalVerificationTag: has(ATTR_SCTP_VTAG_ORIG) ? nfct_get_attr_u32(ct, ATTR_SCTP_VTAG_ORIG) : 0,
                replyVerificationTag: has(ATTR_SCTP_VTAG_REPL) ? nfct_get_attr_u32(ct, ATTR_SCTP_VTAG_REPL) : 0)
        }
        if has(ATTR_DCCP_STATE) {
            flow.dccp = DCCPInfo(
                state: DCCPState(rawValue: nfct_get_attr_u8(ct, ATTR_DCCP_STATE)),
                role: has(ATTR_DCCP_ROLE) ? nfct_get_attr_u8(ct, ATTR_DCCP_ROLE) : 0,
                handshakeSequence: has(ATTR_DCCP_HANDSHAKE_SEQ) ? nfct_get_attr_u64(ct, ATTR_DCCP_HANDSHAKE_SEQ) : 0)
        }
        if has(ATTR_STATUS) { flow.status = FlowStatus(rawValue: nfct_get_attr_u32(ct, ATTR_STATUS)) }
        if has(ATTR_TIMEOUT) { flow.timeout = nfct_get_attr_u32(ct, ATTR_TIMEOUT) }
        if has(ATTR_MARK) { flow.mark = nfct_get_attr_u32(ct, ATTR_MARK) }
        if has(ATTR_ZONE) { flow.zone = nfct_get_attr_u16(ct, ATTR_ZONE) }
        if has(ATTR_ORIG_ZONE) { flow.originalZone = nfct_get_attr_u16(ct, ATTR_ORIG_ZONE) }
        if has(ATTR_REPL_ZONE) { flow.replyZone = nfct_get_attr_u16(ct, ATTR_REPL_ZONE) }
        if has(ATTR_USE) { flow.use = nfct_get_attr_u32(ct, ATTR_USE) }
        if has(ATTR_ID) { flow.id = nfct_get_attr_u32(ct, ATTR_ID) }
        if has(ATTR_HELPER_NAME), let name = nfct_get_attr(ct, ATTR_HELPER_NAME) {
            let text = String(cString: name.assumingMemoryBound(to: CChar.self))
            if !text.isEmpty { flow.helper = text }
        }
        if has(ATTR_ORIG_NAT_SEQ_CORRECTION_POS) {
            flow.sequenceAdjustment = NATSequenceAdjustment(
                original: SequenceAdjustment(
                    correctionPosition: nfct_get_attr_u32(ct, ATTR_ORIG_NAT_SEQ_CORRECTION_POS),
                    offsetBefore: nfct_get_attr_u32(ct, ATTR_ORIG_NAT_SEQ_OFFSET_BEFORE),
                    offsetAfter: nfct_get_attr_u32(ct, ATTR_ORIG_NAT_SEQ_OFFSET_AFTER)),
                reply: SequenceAdjustment(
                    correctionPosition: nfct_get_attr_u32(ct, ATTR_REPL_NAT_SEQ_CORRECTION_POS),
                    offsetBefore: nfct_get_attr_u32(ct, ATTR_REPL_NAT_SEQ_OFFSET_BEFORE),
                    offsetAfter: nfct_get_attr_u32(ct, ATTR_REPL_NAT_SEQ_OFFSET_AFTER)))
        }
        if has(ATTR_ORIG_COUNTER_PACKETS) {
            flow.counters = FlowCounters(
                originalPackets: nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_PACKETS),
                originalBytes: nfct_get_attr_u64(ct, ATTR_ORIG_COUNTER_BYTES),
                replyPackets: nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_PACKETS),
                replyBytes: nfct_get_attr_u64(ct, ATTR_REPL_COUNTER_BYTES))
        }
        if has(ATTR_CONNLABELS), let raw = nfct_get_attr(ct, ATTR_CONNLABELS) {
            let bitmask = OpaquePointer(raw)
            let maxBit = min(Int(nfct_bitmask_maxbit(bitmask)), FlowLabels.maxBit)
            if maxBit >= 0 {
                for bit in 0...maxBit where nfct_bitmask_test_bit(bitmask, UInt32(bit)) != 0 {
                    flow.labels.insert(bit)
                }
            }
        }
        return flow
    }
}

extension NFConntrack {
    /// Which of the optional attributes a parsed object carries.
    static func attributes(of ct: OpaquePointer) -> FlowAttributes {
        func has(_ a: nf_conntrack_attr) -> Bool { nfct_attr_is_set(ct, a) > 0 }
        var present: FlowAttributes = []
        if has(ATTR_TCP_STATE) || has(ATTR_SCTP_STATE) || has(ATTR_DCCP_STATE) { present.insert(.protocolInfo) }
        if has(ATTR_CONNLABELS) { present.insert(.labels) }
        if has(ATTR_HELPER_NAME) { present.insert(.helper) }
        if has(ATTR_ORIG_NAT_SEQ_CORRECTION_POS) { present.insert(.sequenceAdjustment) }
        if has(ATTR_MARK) { present.insert(.mark) }
        if has(ATTR_TIMEOUT) { present.insert(.timeout) }
        if has(ATTR_STATUS) { present.insert(.status) }
        if has(ATTR_ORIG_COUNTER_PACKETS) { present.insert(.counters) }
        return present
    }
}

extension FlowStatus {
    /// Bits the kernel owns and never takes from userspace.
    static let unsettable: FlowStatus = [.dying, .template, .offload, .hwOffload, .expected]
}
