import ArgumentParser
import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Describes one flow on the command line, as `conntrack -I` takes it.
struct FlowSpecOptions: ParsableArguments {
    @Option(name: [.customShort("p"), .customLong("proto")], help: "Layer-4 protocol.", transform: ArgumentParsing.proto)
    var proto: L4Protocol?

    @Option(
        name: [.customShort("s"), .customLong("src"), .customLong("orig-src")], help: "Original source address.",
        transform: ArgumentParsing.exactAddress("-s/--src"))
    var source: IPAddress?

    @Option(
        name: [.customShort("d"), .customLong("dst"), .customLong("orig-dst")], help: "Original destination address.",
        transform: ArgumentParsing.exactAddress("-d/--dst"))
    var destination: IPAddress?

    @Option(
        name: [.customShort("r"), .customLong("reply-src")], help: "Reply source (differs from --dst under DNAT).",
        transform: ArgumentParsing.exactAddress("-r/--reply-src"))
    var replySource: IPAddress?

    @Option(
        name: [.customShort("q"), .customLong("reply-dst")], help: "Reply destination (differs from --src under SNAT).",
        transform: ArgumentParsing.exactAddress("-q/--reply-dst"))
    var replyDestination: IPAddress?

    @Option(name: [.customLong("sport"), .customLong("orig-port-src")], help: "Original source port.", transform: ArgumentParsing.port("--sport"))
    var sourcePort: UInt16?

    @Option(
        name: [.customLong("dport"), .customLong("orig-port-dst")], help: "Original destination port.", transform: ArgumentParsing.port("--dport"))
    var destinationPort: UInt16?

    @Option(name: .customLong("reply-port-src"), help: "Reply source port.", transform: ArgumentParsing.port("--reply-port-src"))
    var replySourcePort: UInt16?

    @Option(name: .customLong("reply-port-dst"), help: "Reply destination port.", transform: ArgumentParsing.port("--reply-port-dst"))
    var replyDestinationPort: UInt16?

    @Option(name: .long, help: "Protocol state (TCP, SCTP, DCCP).")
    var state: String?

    @Option(name: [.customShort("t"), .long], help: "Timeout in seconds.", transform: ArgumentParsing.uint("-t/--timeout", "timeout"))
    var timeout: UInt32?

    @Option(name: [.customShort("u"), .long], help: "Status bits (comma list).", transform: ArgumentParsing.status)
    var status: FlowStatus?

    @Option(name: [.customShort("m"), .long], help: "Mark.", transform: ArgumentParsing.uint("-m/--mark", "mark"))
    var mark: UInt32?

    @Option(name: [.customShort("w"), .long], help: "Conntrack zone.", transform: ArgumentParsing.uint("-w/--zone", "zone"))
    var zone: UInt16?

    @Option(name: .customLong("icmp-type"), help: "ICMP type.", transform: ArgumentParsing.uint("--icmp-type", "ICMP type"))
    var icmpType: UInt8?

    @Option(name: .customLong("icmp-code"), help: "ICMP code.", transform: ArgumentParsing.uint("--icmp-code", "ICMP code"))
    var icmpCode: UInt8?

    @Option(name: .customLong("icmp-id"), help: "ICMP id.", transform: ArgumentParsing.uint("--icmp-id", "ICMP id"))
    var icmpID: UInt16?

    @Option(name: .customLong("label"), help: "Connection label bit to set (repeatable).", transform: ArgumentParsing.label)
    var labels: [Int] = []

    @Option(name: .long, help: "Helper name (the helper module must be loaded).")
    var helper: String?

    var isEmpty: Bool {
        proto == nil && source == nil && destination == nil && replySource == nil && replyDestination == nil
            && sourcePort == nil && destinationPort == nil && state == nil && timeout == nil && status == nil
            && mark == nil && zone == nil && icmpType == nil && labels.isEmpty && helper == nil
    }

    /// The flow these options describe; every missing or inconsistent piece is named.
    func flow() throws -> Flow {
        guard let proto else { throw ValidationError("missing -p/--proto") }
        guard let source else { throw ValidationError("missing -s/--src") }
        guard let destination else { throw ValidationError("missing -d/--dst") }
        guard let timeout else { throw ValidationError("missing -t/--timeout (the kernel needs one to create a flow)") }
        guard source.family == destination.family else {
            throw ValidationError("-s \(source) and -d \(destination) are of different families")
        }
        for (option, a) in [("-r/--reply-src", replySource), ("-q/--reply-dst", replyDestination)] {
            if let a, a.family != source.family { throw ValidationError("\(option) \(a) is not of the family of -s \(source)") }
        }
        var original = Tuple(source: source, destination: destination)
        if proto.hasPorts {
            guard let sourcePort, let destinationPort else {
                throw ValidationError("\(proto.name) needs --sport and --dport")
            }
            original.sourcePort = sourcePort
            original.destinationPort = destinationPort
        } else if sourcePort != nil || destinationPort != nil {
            throw ValidationError("--sport/--dport need a protocol with ports; \(proto.name) has none")
        }
        var reply = original.inverted
        if let replySource { reply.source = replySource }
        if let replyDestination { reply.destination = replyDestination }
        if let replySourcePort { reply.sourcePort = replySourcePort }
        if let replyDestinationPort { reply.destinationPort = replyDestinationPort }

        var flow = Flow(proto: proto, original: original, reply: reply)
        if proto.isICMP {
            guard let icmpType else { throw ValidationError("\(proto.name) needs --icmp-type (and --icmp-code, --icmp-id)") }
            flow.icmp = ICMPInfo(type: icmpType, code: icmpCode ?? 0, id: icmpID ?? 0)
        }
        if let state { try ArgumentParsing.checkState(state, proto: proto) }
        switch proto {
        case .tcp: flow.tcp = TCPInfo(state: state.flatMap { TCPState(name: $0) } ?? .none)
        case .sctp: flow.sctp = SCTPInfo(state: state.flatMap { SCTPState(name: $0) } ?? SCTPState(rawValue: 0))
        case .dccp: flow.dccp = DCCPInfo(state: state.flatMap { DCCPState(name: $0) } ?? DCCPState(rawValue: 0))
        default: break
        }
        flow.timeout = timeout
        flow.status = status ?? []
        flow.mark = mark ?? 0
        flow.zone = zone ?? 0
        flow.labels = FlowLabels(bits: labels)
        if let helper {
            guard !helper.isEmpty, helper.utf8.count < 16 else { throw ValidationError("--helper name must be 1-15 bytes") }
            flow.helper = helper
        }
        return flow
    }
}

/// Options for writing many flows from a file: `--file F` (JSON lines, `-` for stdin) and `--batch-size`.
struct BatchOptions: ParsableArguments {
    @Option(name: .customLong("file"), help: "Read flows from a file of JSON lines (as `list -o json` prints them); - for stdin.")
    var file: String?

    @Option(name: .customLong("batch-size"), help: "Netlink messages per sendmsg (1 = one message and one acknowledgement per flow).")
    var batchSize: Int = KernelTable.defaultBatchSize

    func validate() throws {
        if batchSize < 1 || batchSize > 65536 { throw ValidationError("--batch-size must be 1-65536, got \(batchSize)") }
    }

    /// Reads and decodes the file; a bad line is reported with its number.
    func flows() throws -> [Flow] {
        guard let file else { return [] }
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: file) else {
                throw CLIError.failure("cannot read \(file): \(errnoText(errno))")
            }
            data = d
        }
        var flows: [Flow] = []
        var lineNumber = 0
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty || text.hasPrefix("#") { continue }
            do {
                flows.append(try FlowJSON.decode(String(text)))
            } catch let error as FlowJSON.DecodeError {
                throw CLIError.usage("\(file):\(lineNumber): \(error)")
            }
        }
        return flows
    }
}

/// `ctsync kernel insert`: creates one flow from options, or many from `--file` in batches.
struct KernelInsert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "insert", abstract: "Create flows: one from options (like conntrack -I), or many from --file, batched.")

    @OptionGroup var spec: FlowSpecOptions
    @OptionGroup var batch: BatchOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if batch.file != nil && !spec.isEmpty {
            throw ValidationError("give either --file or the flow's options, not both")
        }
        if batch.file == nil { _ = try spec.flow() }
    }

    func run() throws {
        let flows = batch.file == nil ? [try spec.flow()] : try batch.flows()
        try requireRoot("inserting conntrack entries")
        try writeAndReport(flows, operation: .create, batchSize: batch.batchSize, verb: "created", format: output.format)
    }
}

/// Writes flows and prints the outcome: a conntrack-style line (text) or an object (json)
/// with the count, the failures and the rate. Any failure makes the command fail.
func writeAndReport(_ flows: [Flow], operation: WriteOperation, batchSize: Int, verb: String, format: OutputFormat) throws {
    let table = try KernelTable()
    let start = DispatchTime.now().uptimeNanoseconds
    let result = try table.write(flows, operation: operation, batchSize: batchSize)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let done = result.succeeded
    let rate = seconds > 0 ? Double(flows.count) / seconds : 0
    if format.style == .json {
        print(
            "{\"\(verb)\":\(done),\"failed\":\(result.failures.count),\"seconds\":\(String(format: "%.6f", seconds)),"
                + "\"flows_per_second\":\(Int(rate)),\"sendmsg_calls\":\(result.sends),\"batch_size\":\(batchSize)}")
    } else {
        summary("\(done) flow entries have been \(verb).")
        if flows.count > 1 {
            summary(
                String(format: "%d flows in %.3f s (%.0f flows/s, batch %d, %d sendmsg calls)", flows.count, seconds, rate, batchSize, result.sends))
        }
    }
    guard result.failures.isEmpty else {
        for failure in result.failures.prefix(10) {
            let flow = flows[failure.index]
            writeStandardError("ctsync: flow \(failure.index + 1) (\(FlowTextFormat().line(flow))): \(errnoText(failure.errno))\n")
        }
        if result.failures.count > 10 { writeStandardError("ctsync: ... and \(result.failures.count - 10) more failures\n") }
        throw CLIError.failure("\(result.failures.count) of \(flows.count) flows were not \(verb)")
    }
}
