import ArgumentParser
import Conntrack

/// Selection by tuple, protocol, state and zone: shared by list, count, events, delete,
/// flush and update (conntrack's option names).
public struct TupleFilterOptions: ParsableArguments {
    @Option(name: [.customShort("f"), .long], help: "Address family: ipv4 or ipv6.", transform: ArgumentParsing.family)
    var family: AddressFamily?

    @Option(name: [.customShort("p"), .customLong("proto")], help: "Layer-4 protocol (name or number).", transform: ArgumentParsing.proto)
    var proto: L4Protocol?

    @Option(
        name: [.customShort("s"), .customLong("src"), .customLong("orig-src")], help: "Original source address[/prefix].",
        transform: ArgumentParsing.address("-s/--src"))
    var source: AddressMatch?

    @Option(
        name: [.customShort("d"), .customLong("dst"), .customLong("orig-dst")], help: "Original destination address[/prefix].",
        transform: ArgumentParsing.address("-d/--dst"))
    var destination: AddressMatch?

    @Option(
        name: [.customShort("r"), .customLong("reply-src")], help: "Reply source address[/prefix].",
        transform: ArgumentParsing.address("-r/--reply-src"))
    var replySource: AddressMatch?

    @Option(
        name: [.customShort("q"), .customLong("reply-dst")], help: "Reply destination address[/prefix].",
        transform: ArgumentParsing.address("-q/--reply-dst"))
    var replyDestination: AddressMatch?

    @Option(name: [.customLong("sport"), .customLong("orig-port-src")], help: "Original source port.", transform: ArgumentParsing.port("--sport"))
    var sourcePort: UInt16?

    @Option(
        name: [.customLong("dport"), .customLong("orig-port-dst")], help: "Original destination port.", transform: ArgumentParsing.port("--dport"))
    var destinationPort: UInt16?

    @Option(name: .customLong("reply-port-src"), help: "Reply source port.", transform: ArgumentParsing.port("--reply-port-src"))
    var replySourcePort: UInt16?

    @Option(name: .customLong("reply-port-dst"), help: "Reply destination port.", transform: ArgumentParsing.port("--reply-port-dst"))
    var replyDestinationPort: UInt16?

    @Option(name: .long, help: "Protocol state (TCP unless -p sctp/dccp), e.g. ESTABLISHED.")
    var state: String?

    @Option(name: [.customShort("w"), .long], help: "Conntrack zone.", transform: ArgumentParsing.uint("-w/--zone", "zone"))
    var zone: UInt16?

    @Option(name: .customLong("icmp-type"), help: "ICMP type.", transform: ArgumentParsing.uint("--icmp-type", "ICMP type"))
    var icmpType: UInt8?

    @Option(name: .customLong("icmp-code"), help: "ICMP code.", transform: ArgumentParsing.uint("--icmp-code", "ICMP code"))
    var icmpCode: UInt8?

    @Option(name: .customLong("icmp-id"), help: "ICMP id.", transform: ArgumentParsing.uint("--icmp-id", "ICMP id"))
    var icmpID: UInt16?

    public init() {}

    public mutating func validate() throws {
        if let state { try ArgumentParsing.checkState(state, proto: proto) }
        if sourcePort != nil || destinationPort != nil, let proto, !proto.hasPorts {
            throw ValidationError("--sport/--dport need a protocol with ports; \(proto.name) has none")
        }
        // conntrack's rule (`-L -s 198.18.0.1 -d ::1` is refused): -f and the addresses agree.
        var agreed = family.map { (family: $0, named: "-f \($0)") }
        for (option, match) in [("-s", source), ("-d", destination), ("-r", replySource), ("-q", replyDestination)] {
            guard let match else { continue }
            let f = match.address.family
            do {
                agreed = (try ConntrackArguments.agreeing(agreed?.family, f), agreed?.named ?? "\(option) \(match) is \(f)")
            } catch {
                throw ValidationError("\(error.message): \(option) \(match) is \(f), \(agreed?.named ?? "")")
            }
        }
    }

    /// Applies these criteria to a filter.
    func apply(to filter: inout FlowFilter) {
        filter.family = family
        filter.proto = proto
        filter.source = source
        filter.destination = destination
        filter.replySource = replySource
        filter.replyDestination = replyDestination
        filter.sourcePort = sourcePort
        filter.destinationPort = destinationPort
        filter.replySourcePort = replySourcePort
        filter.replyDestinationPort = replyDestinationPort
        filter.state = state?.uppercased()
        filter.zone = zone
        filter.icmpType = icmpType
        filter.icmpCode = icmpCode
        filter.icmpID = icmpID
    }
}

/// Selection by mark, status and labels (in update these options set values instead).
public struct MarkFilterOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .long], help: "Mark, as value or value/mask.", transform: ArgumentParsing.mark("-m/--mark"))
    var mark: MarkMatch?

    @Option(
        name: [.customShort("u"), .long], help: "Status bits that must be set (comma list, e.g. ASSURED,SEEN_REPLY).",
        transform: ArgumentParsing.status)
    var status: FlowStatus?

    @Option(name: .customLong("label"), help: "Connection label bit that must be set (repeatable).", transform: ArgumentParsing.label)
    var labels: [Int] = []

    public init() {}

    func apply(to filter: inout FlowFilter) {
        filter.mark = mark
        filter.status = status
        if !labels.isEmpty { filter.labels = FlowLabels(bits: labels) }
    }
}

/// Every selection criterion (list, count, events, delete, flush).
public struct FlowFilterOptions: ParsableArguments {
    @OptionGroup var tuple: TupleFilterOptions
    @OptionGroup var marks: MarkFilterOptions

    public init() {}

    public var filter: FlowFilter {
        var f = FlowFilter()
        tuple.apply(to: &f)
        marks.apply(to: &f)
        return f
    }

    /// `--expect` (list, count, flush, events): expectations are selected by family alone, as
    /// conntrack's `-L expect` takes only -f; any other filter is refused, not ignored.
    func checkForExpectations() throws {
        _ = try ConntrackArguments.forKernel { () throws(ConntrackArguments.Problem) in try ConntrackArguments(expect: .list, filter: self) }
    }
}
