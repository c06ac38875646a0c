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
        flows.reserveCapacity(data.count / 160)
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var lineNumber = 0
            var start = 0
            while start < bytes.count {
                let end = bytes[start...].firstIndex(of: 10) ?? bytes.count
                lineNumber += 1
                // Blank lines and # comments are skipped.
                var first = start
                while first < end, bytes[first] == 0x20 || bytes[first] == 0x09 || bytes[first] == 0x0d { first += 1 }
                if first < end && bytes[first] != UInt8(ascii: "#") {
                    do {
                        flows.append(try FlowJSON.decode(bytes: UnsafeRawBufferPointer(rebasing: bytes[first..<end])))
                    } catch let error as FlowJSON.DecodeError {
                        throw CLIError.usage("\(file):\(lineNumber): \(error)")
                    }
                }
                start = end + 1
            }
        }
        return flows
    }
}

/// `--generate N`: synthetic flows written as fast as the kernel takes them (benchmarks, scale tests).
struct GenerateOptions: ParsableArguments {
    @Option(
        name: .customLong("generate"),
        help: "Create N distinct established TCP flows from 198.18.0.0/15 (to 198.19.0.1:443), without a file.")
    var count: Int?

    @Option(name: .customLong("generate-first"), help: "Index of the first generated flow (a later run can add new flows).")
    var first: Int = 0

    @Option(name: .customLong("rate"), help: "Flows per second: write in bursts of --burst flows, paced to this rate.")
    var rate: Double?

    @Option(name: .customLong("burst"), help: "Flows per paced burst with --rate (default: the batch size).")
    var burst: Int?

    func validate() throws {
        if let count {
            guard count >= 1, first >= 0, first + count - 1 <= SyntheticFlows.maximumIndex else {
                throw ValidationError("--generate N and --generate-first K must keep K+N-1 within 0...\(SyntheticFlows.maximumIndex)")
            }
        } else if first != 0 {
            throw ValidationError("--generate-first needs --generate")
        }
        if let rate, !(rate > 0 && rate.isFinite) { throw ValidationError("--rate must be a positive number of flows per second") }
        if let burst, burst < 1 { throw ValidationError("--burst must be at least 1") }
        if burst != nil && rate == nil { throw ValidationError("--burst needs --rate") }
    }
}

/// `ctsync kernel insert`: creates one flow from options, or many from `--file` or `--generate`, in batches.
struct KernelInsert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "insert",
        abstract: "Create flows: one from options (like conntrack -I), or many from --file or --generate, batched.")

    @OptionGroup var spec: FlowSpecOptions
    @OptionGroup var batch: BatchOptions
    @OptionGroup var generate: GenerateOptions
    @OptionGroup var output: ReportOutputOptions
    @Flag(
        name: .customLong("expect"),
        help: "Create an expectation instead (conntrack's -I expect): the master by -p -s -d --sport --dport, -t, --tuple-*, --mask-*.")
    var expect = false
    @OptionGroup var expected: ExpectedTupleOptions

    /// `--expect`: conntrack's `-I expect` line, checked by its rules.
    func expectation() throws -> ConntrackArguments {
        if batch.file != nil || generate.count != nil { throw ValidationError("--expect creates one expectation: no --file or --generate") }
        return try ConntrackArguments.forKernel { () throws(ConntrackArguments.Problem) in try ConntrackArguments(expectationOf: spec, expected) }
    }

    func validate() throws {
        if expect {
            _ = try expectation()
            return
        }
        if !expected.isEmpty { throw ValidationError("--tuple-* and --mask-* describe an expectation: they need --expect") }
        if generate.count != nil {
            if batch.file != nil { throw ValidationError("give either --file or --generate, not both") }
            var others = spec
            others.timeout = nil
            others.mark = nil
            guard others.isEmpty else { throw ValidationError("--generate takes only -t/--timeout and -m/--mark of the flow options") }
        } else if batch.file != nil && !spec.isEmpty {
            throw ValidationError("give either --file or the flow's options, not both")
        }
        if batch.file == nil && generate.count == nil { _ = try spec.flow() }
    }

    func run() throws {
        if expect {
            let line = try expectation()
            try requireRoot("inserting conntrack expectations")
            try line.runForKernel()
            if output.format.style == .json { print("{\"created\":1}") } else { summary("1 expectations have been created.") }
            return
        }
        if let count = generate.count {
            let flows = SyntheticFlows(first: generate.first, count: count, timeout: spec.timeout ?? 600, mark: spec.mark ?? 0)
            try requireRoot("inserting conntrack entries")
            try writeAndReport(
                flows, operation: .create, batchSize: batch.batchSize, verb: "created", format: output.format,
                pacing: generate.rate.map { Pacing(rate: $0, burst: generate.burst ?? batch.batchSize) })
            return
        }
        let flows = batch.file == nil ? [try spec.flow()] : try batch.flows()
        try requireRoot("inserting conntrack entries")
        try writeAndReport(flows, operation: .create, batchSize: batch.batchSize, verb: "created", format: output.format)
    }
}

/// Writes paced to a rate: bursts of `burst` flows, each started when the rate allows.
struct Pacing {
    var rate: Double
    var burst: Int
}

/// Writes flows and prints the outcome: a conntrack-style line (text) or an object (json)
/// with the count, the failures and the rate. Any failure makes the command fail. The time is
/// the kernel writes' only (with `pacing`, from the first burst to the end of the last).
func writeAndReport<C: RandomAccessCollection>(
    _ flows: C, operation: WriteOperation, batchSize: Int, verb: String, format: OutputFormat, pacing: Pacing? = nil
) throws where C.Element == Flow, C.Index == Int {
    let table = try KernelTable()
    // The wall clock at the first write, for benchmarks that time what follows in other processes.
    var wall = timespec()
    clock_gettime(CLOCK_REALTIME, &wall)
    let start = DispatchTime.now().uptimeNanoseconds
    var result = WriteReport()
    if let pacing {
        var offset = flows.startIndex
        var burstNumber = 0
        while offset < flows.endIndex {
            let due = start + UInt64(Double(burstNumber * pacing.burst) / pacing.rate * 1e9)
            let now = DispatchTime.now().uptimeNanoseconds
            if due > now { usleep(useconds_t(min((due - now) / 1000, 10_000_000))) }
            let end = min(flows.endIndex, offset + pacing.burst)
            let part = try table.write(flows[offset..<end], operation: operation, batchSize: batchSize)
            result.attempted += part.attempted
            result.created += part.created
            result.updated += part.updated
            result.deleted += part.deleted
            result.sends += part.sends
            result.failures += part.failures  // indices are the collection's own
            offset = end
            burstNumber += 1
        }
    } else {
        result = try table.write(flows, operation: operation, batchSize: batchSize)
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let done = result.succeeded
    let rate = seconds > 0 ? Double(flows.count) / seconds : 0
    if format.style == .json {
        print(
            "{\"\(verb)\":\(done),\"failed\":\(result.failures.count),\"seconds\":\(String(format: "%.6f", seconds)),"
                + "\"started\":\(wall.tv_sec).\(String(format: "%06d", wall.tv_nsec / 1000)),"
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
