import Conntrack

/// Which flows a conntrack command line names, and how they are changed and printed: the
/// semantics of conntrack 1.4.7's filters (tuple, masks, NAT, mark/mask, status, zones,
/// labels, id) as one predicate over `Flow`.
extension ConntrackArguments {
    /// Whether a kernel flow is selected (-L, -D, -E, -G output, -U).
    func selects(_ flow: Flow) -> Bool {
        if let family, flow.family != family { return false }
        if !natSelects(flow) { return false }
        if let mark, flow.mark & mark.mask != mark.value { return false }
        if !labels.isEmpty && labels.contains(where: { !flow.labels.contains($0) }) { return false }
        if let source {
            if let sourceMask {
                if !flow.original.source.matches(network: source, mask: sourceMask) { return false }
            } else if flow.original.source != source {
                return false
            }
        }
        if let destination {
            if let destinationMask {
                if !flow.original.destination.matches(network: destination, mask: destinationMask) { return false }
            } else if flow.original.destination != destination {
                return false
            }
        }
        if let replySource, flow.reply.source != replySource { return false }
        if let replyDestination, flow.reply.destination != replyDestination { return false }
        if let proto, flow.proto != proto { return false }
        if flow.proto.hasPorts {
            if let sourcePort, flow.original.sourcePort != sourcePort { return false }
            if let destinationPort, flow.original.destinationPort != destinationPort { return false }
            if let replySourcePort, flow.reply.sourcePort != replySourcePort { return false }
            if let replyDestinationPort, flow.reply.destinationPort != replyDestinationPort { return false }
        } else if sourcePort != nil || destinationPort != nil || replySourcePort != nil || replyDestinationPort != nil {
            return false
        }
        if let state, flow.stateName != Self.canonicalState(state, flow.proto) { return false }
        if let icmpType, flow.icmp?.type != icmpType { return false }
        if let icmpCode, flow.icmp?.code != icmpCode { return false }
        if let icmpID, flow.icmp?.id != icmpID { return false }
        if let status {
            if !flow.status.isSuperset(of: status.set) { return false }
            if !flow.status.isDisjoint(with: status.clear) { return false }
        }
        if let zone, flow.zone != zone { return false }
        if let originalZone, (flow.originalZone ?? flow.zone) != originalZone { return false }
        if let replyZone, (flow.replyZone ?? flow.zone) != replyZone { return false }
        if let id, flow.id != id { return false }
        if command == .delete, let timeout, given.count > 1, flow.timeout != timeout { return false }
        return true
    }

    /// conntrack's NAT filters: `--src-nat` the reply's destination differs from the original
    /// source (and equals ADDR, its port PORT, when given); `--dst-nat` the same for the reply's
    /// source; `--any-nat` either. An address is compared for IPv4 and IPv6 (conntrack 1.4.7
    /// ignores an IPv6 one).
    private func natSelects(_ flow: Flow) -> Bool {
        func side(_ match: NATMatch, address: IPAddress?, port: UInt16?, mapped: (IPAddress, UInt16)) -> Bool {
            if match.address == nil && match.port == nil { return address != nil || port != nil }
            if let a = match.address, !(address != nil && mapped.0 == a) { return false }
            if let p = match.port, !(flow.proto.hasPorts && mapped.1 == p && (port != nil || address != nil)) { return false }
            return true
        }
        let snat = { (m: NATMatch) in
            side(m, address: flow.sourceNAT, port: flow.sourcePortNAT, mapped: (flow.reply.destination, flow.reply.destinationPort))
        }
        let dnat = { (m: NATMatch) in
            side(m, address: flow.destinationNAT, port: flow.destinationPortNAT, mapped: (flow.reply.source, flow.reply.sourcePort))
        }
        if let anyNAT { return snat(anyNAT) || dnat(anyNAT) }
        if let sourceNAT, !snat(sourceNAT) { return false }
        if let destinationNAT, !dnat(destinationNAT) { return false }
        return true
    }

    /// A state name as the flow's protocol prints it (`LISTEN` is TCP's SYN_SENT2).
    static func canonicalState(_ name: String, _ proto: L4Protocol) -> String {
        switch proto {
        case .tcp: return TCPState(name: name)?.name ?? name
        case .sctp: return SCTPState(name: name)?.name ?? name
        case .dccp: return DCCPState(name: name)?.name ?? name
        default: return name
        }
    }

    /// The flow `-I`/`-A` creates (the reply tuple completed from the original, or the other
    /// way round; NAT from `--src-nat`/`--dst-nat`).
    func flowToCreate() throws(Problem) -> Flow {
        guard let proto, let timeout else { throw Problem("-p and -t are needed to create a flow") }
        let hasOriginal = source != nil && destination != nil
        var original: Tuple
        var reply: Tuple
        if hasOriginal, let source, let destination {
            original = Tuple(source: source, destination: destination, sourcePort: sourcePort ?? 0, destinationPort: destinationPort ?? 0)
            reply = original.inverted
            if let replySource { reply.source = replySource }
            if let replyDestination { reply.destination = replyDestination }
            if let replySourcePort { reply.sourcePort = replySourcePort }
            if let replyDestinationPort { reply.destinationPort = replyDestinationPort }
        } else if let replySource, let replyDestination {
            reply = Tuple(
                source: replySource, destination: replyDestination, sourcePort: replySourcePort ?? 0, destinationPort: replyDestinationPort ?? 0)
            original = reply.inverted
        } else {
            throw Problem("you have to specify `--src' and `--dst'")
        }
        if let sourceNAT {
            if let a = sourceNAT.address { reply.destination = a }
            if let p = sourceNAT.port { reply.destinationPort = p }
        }
        if let destinationNAT {
            if let a = destinationNAT.address { reply.source = a }
            if let p = destinationNAT.port { reply.sourcePort = p }
        }
        if !proto.hasPorts {
            original.sourcePort = 0
            original.destinationPort = 0
            reply.sourcePort = 0
            reply.destinationPort = 0
        }
        var flow = Flow(proto: proto, original: original, reply: reply)
        if proto.isICMP {
            flow.icmp = ICMPInfo(type: icmpType ?? 0, code: icmpCode ?? 0, id: icmpID ?? 0)
        }
        switch proto {
        case .tcp: flow.tcp = TCPInfo(state: state.flatMap { TCPState(name: $0) } ?? .none)
        case .sctp:
            var info = SCTPInfo(state: state.flatMap { SCTPState(name: $0) } ?? SCTPState(rawValue: 0))
            info.originalVerificationTag = originalVerificationTag ?? 0
            info.replyVerificationTag = replyVerificationTag ?? 0
            flow.sctp = info
        case .dccp:
            var info = DCCPInfo(state: state.flatMap { DCCPState(name: $0) } ?? DCCPState(rawValue: 0))
            info.role = dccpRole ?? 0
            flow.dccp = info
        default: break
        }
        flow.timeout = timeout
        flow.status = status?.set ?? []
        flow.mark = mark?.value ?? 0
        flow.zone = zone ?? 0
        flow.originalZone = originalZone
        flow.replyZone = replyZone
        flow.labels = FlowLabels(bits: labelAdd)
        return flow
    }

    /// The expectation `-I expect` creates: master `-s -d -p --sport --dport`, expected tuple
    /// `--tuple-src --tuple-dst --tuple-port-*`, mask `--mask-src --mask-dst --mask-port-*`.
    func expectationToCreate() throws(Problem) -> Expectation {
        guard let proto, let source, let destination, let tupleSource, let tupleDestination, let sourceMask, let destinationMask else {
            throw Problem("-I expect needs -s, -d, -p, --tuple-src, --tuple-dst, --mask-src and --mask-dst")
        }
        let master = Tuple(source: source, destination: destination, sourcePort: sourcePort ?? 0, destinationPort: destinationPort ?? 0)
        let expected = Tuple(
            source: tupleSource, destination: tupleDestination, sourcePort: tupleSourcePort ?? 0, destinationPort: tupleDestinationPort ?? 0)
        let mask = Tuple(
            source: sourceMask, destination: destinationMask, sourcePort: maskSourcePort ?? 0, destinationPort: maskDestinationPort ?? 0)
        var e = Expectation(family: source.family, master: master, masterProto: proto, expected: expected, proto: proto, mask: mask)
        e.timeout = timeout
        return e
    }

    /// The expectation `-D expect` and `-G expect` name: a connection it expects (`-s -d -p
    /// --sport --dport`), matched under the expectation's mask by the kernel.
    func expectationNamed() throws(Problem) -> Expectation {
        guard let proto, let source, let destination else { throw Problem("-D/-G expect need -s, -d and -p") }
        let tuple = Tuple(source: source, destination: destination, sourcePort: sourcePort ?? 0, destinationPort: destinationPort ?? 0)
        let full = IPAddress.mask(prefix: 128, family: source.family)
        return Expectation(
            family: source.family, master: tuple, masterProto: proto, expected: tuple, proto: proto,
            mask: Tuple(source: full, destination: full, sourcePort: .max, destinationPort: .max))
    }

    /// The flow `-G` looks up.
    func flowToGet() throws(Problem) -> Flow {
        var copy = self
        copy.timeout = 0
        var flow = try copy.flowToCreate()
        flow.zone = zone ?? 0
        return flow
    }

    /// What `-U` makes of a flow it selected, or nil when nothing would change (conntrack does
    /// not count, print or send those).
    func updated(_ flow: Flow) -> Flow? {
        let change = FlowChange(
            timeout: timeout, status: status?.set, mark: mark.map { m in { ($0 & ~m.mask) ^ m.value } }, labelAdd: labelAdd,
            labelDelete: labelDelete)
        return change.applied(to: flow)
    }
}

/// What an update changes in a flow: conntrack's `-U` and `ctsync kernel update`.
struct FlowChange {
    var timeout: UInt32?
    /// Bits to set (the kernel does not clear status bits).
    var status: FlowStatus?
    /// The new mark from the old one.
    var mark: ((UInt32) -> UInt32)?
    var labelAdd: [Int] = []
    /// Label bits to clear; empty clears every label (conntrack's `--label-del` without a value).
    var labelDelete: [Int]?

    /// The changed flow, or nil when nothing would change (conntrack -U neither counts nor sends
    /// those) and no label is added.
    func applied(to flow: Flow) -> Flow? {
        var changed = flow
        if let timeout { changed.timeout = timeout }
        if let status { changed.status.formUnion(status) }
        if let mark { changed.mark = mark(flow.mark) }
        for bit in labelAdd { changed.labels.insert(bit) }
        if let labelDelete {
            if labelDelete.isEmpty { changed.labels = FlowLabels() } else { for bit in labelDelete { changed.labels.remove(bit) } }
        }
        // conntrack sends --label-add with a label mask, which makes every selected flow differ
        // from the kernel's: it is always sent and counted, even when the labels are there.
        return changed == flow && labelAdd.isEmpty ? nil : changed
    }
}
