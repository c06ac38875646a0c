import ArgumentParser
import Conntrack

/// `kernel insert --expect`: the expected tuple and its mask, as conntrack's `-I expect` takes them.
struct ExpectedTupleOptions: ParsableArguments {
    @Option(
        name: .customLong("tuple-src"), help: "With --expect: the expected connection's source.",
        transform: ArgumentParsing.exactAddress("--tuple-src"))
    var source: IPAddress?

    @Option(
        name: .customLong("tuple-dst"), help: "With --expect: the expected connection's destination.",
        transform: ArgumentParsing.exactAddress("--tuple-dst"))
    var destination: IPAddress?

    @Option(
        name: .customLong("mask-src"), help: "With --expect: the mask of the expected source.", transform: ArgumentParsing.exactAddress("--mask-src"))
    var sourceMask: IPAddress?

    @Option(
        name: .customLong("mask-dst"), help: "With --expect: the mask of the expected destination.",
        transform: ArgumentParsing.exactAddress("--mask-dst"))
    var destinationMask: IPAddress?

    @Option(
        name: .customLong("tuple-port-src"), help: "With --expect: the expected source port.", transform: ArgumentParsing.port("--tuple-port-src"))
    var sourcePort: UInt16?

    @Option(
        name: .customLong("tuple-port-dst"), help: "With --expect: the expected destination port.",
        transform: ArgumentParsing.port("--tuple-port-dst"))
    var destinationPort: UInt16?

    @Option(
        name: .customLong("mask-port-src"), help: "With --expect: the mask of the expected source port.",
        transform: ArgumentParsing.port("--mask-port-src"))
    var sourcePortMask: UInt16?

    @Option(
        name: .customLong("mask-port-dst"), help: "With --expect: the mask of the expected destination port.",
        transform: ArgumentParsing.port("--mask-port-dst"))
    var destinationPortMask: UInt16?

    var isEmpty: Bool {
        source == nil && destination == nil && sourceMask == nil && destinationMask == nil && sourcePort == nil && destinationPort == nil
            && sourcePortMask == nil && destinationPortMask == nil
    }
}

/// ctsync's own options as conntrack's line for the expect table, so `kernel list/count/flush/
/// events/insert/delete --expect` are checked by conntrack's rules (`ConntrackRules`) and run
/// by the code `ctsync -L/-I/-D expect` runs.
extension ConntrackArguments {
    init(expect command: Command) {
        self.init()
        self.command = command
        table = .expect
    }

    /// Takes an option's value and notes it given (addresses must agree in family, as on conntrack's line).
    mutating func take<T>(_ field: WritableKeyPath<ConntrackArguments, T?>, _ value: T?, _ option: Option) throws(Problem) {
        guard let value else { return }
        self[keyPath: field] = value
        given.insert(option)
        if let address = value as? IPAddress { family = try Self.agreeing(family, address.family) }
    }

    mutating func take(_ value: UInt16?, _ option: ProtoOption) {
        guard let value, let field = Self.portField(option) else { return }
        self[keyPath: field] = value
        givenProto.insert(option)
    }

    /// An `ADDR/N` filter: the address, and a shorter prefix as conntrack's mask option.
    mutating func take(_ match: AddressMatch?, _ field: WritableKeyPath<ConntrackArguments, IPAddress?>, _ option: Option) throws(Problem) {
        guard let match else { return }
        try take(field, match.address, option)
        let full = match.address.family == .ipv4 ? 32 : 128
        if match.prefix < full { given.insert(option == .src ? .maskSrc : .maskDst) }
    }

    /// A flow filter, for the expectation commands that select (list, count, flush, events, delete).
    init(expect command: Command, filter options: FlowFilterOptions) throws(Problem) {
        self.init(expect: command)
        let f = options.filter
        if let f = f.family {
            given.insert(.family)
            family = f
        }
        try take(\.proto, f.proto, .protonum)
        try take(f.source, \.source, .src)
        try take(f.destination, \.destination, .dst)
        try take(f.replySource, \.replySource, .replySrc)
        try take(f.replyDestination, \.replyDestination, .replyDst)
        take(f.sourcePort, .sport)
        take(f.destinationPort, .dport)
        take(f.replySourcePort, .replyPortSrc)
        take(f.replyDestinationPort, .replyPortDst)
        let others: [(Option, Bool)] = [(.mark, f.mark != nil), (.zone, f.zone != nil), (.status, f.status != nil), (.label, f.labels != nil)]
        for (option, present) in others where present { given.insert(option) }
        let protocolOptions: [(ProtoOption, Bool)] = [
            (.state, f.state != nil), (.icmpType, f.icmpType != nil), (.icmpCode, f.icmpCode != nil), (.icmpID, f.icmpID != nil),
        ]
        for (option, present) in protocolOptions where present { givenProto.insert(option) }
    }

    /// conntrack's `-I expect` line: the master from the flow options, the expected tuple and mask.
    init(expectationOf spec: FlowSpecOptions, _ expected: ExpectedTupleOptions) throws(Problem) {
        self.init(expect: .create)
        try take(\.proto, spec.proto, .protonum)
        try take(\.source, spec.source, .src)
        try take(\.destination, spec.destination, .dst)
        try take(\.replySource, spec.replySource, .replySrc)
        try take(\.replyDestination, spec.replyDestination, .replyDst)
        try take(\.timeout, spec.timeout, .timeout)
        try take(\.tupleSource, expected.source, .tupleSrc)
        try take(\.tupleDestination, expected.destination, .tupleDst)
        try take(\.sourceMask, expected.sourceMask, .maskSrc)
        try take(\.destinationMask, expected.destinationMask, .maskDst)
        take(spec.sourcePort, .sport)
        take(spec.destinationPort, .dport)
        take(expected.sourcePort, .tuplePortSrc)
        take(expected.destinationPort, .tuplePortDst)
        take(expected.sourcePortMask, .maskPortSrc)
        take(expected.destinationPortMask, .maskPortDst)
        var rest = spec
        (rest.proto, rest.source, rest.destination, rest.replySource, rest.replyDestination) = (nil, nil, nil, nil, nil)
        (rest.timeout, rest.sourcePort, rest.destinationPort) = (nil, nil, nil)
        if !rest.isEmpty { throw Problem("with --expect the flow options are -p, -s, -d, --sport, --dport and -t (the master)") }
    }

    /// A line made from ctsync's options, checked by conntrack's rules: its problems are
    /// ctsync's usage errors.
    static func forKernel(_ make: () throws(Problem) -> ConntrackArguments) throws -> ConntrackArguments {
        do {
            let line = try make()
            try line.check()
            if line.table == .expect, let command = line.command, ![.create, .delete, .get].contains(command), let option = line.givenProto.first {
                throw Problem("Illegal option `--\(option.rawValue)' with this command")
            }
            return line
        } catch let problem as Problem {
            throw ValidationError("--expect: \(problem.message)")
        }
    }

    /// Runs the line as `ctsync -I/-D expect` runs it: the kernel's refusals as failures.
    func runForKernel() throws {
        guard let command else { return }
        do {
            _ = try ConntrackCommandLine.expectations(command, self, try KernelTable(), batch: false)
        } catch let failure as ConntrackCommandLine.Failure {
            throw CLIError(message: failure.message, exitCode: failure.code)
        } catch let problem as Problem {
            throw CLIError.usage(problem.message)
        }
    }
}
