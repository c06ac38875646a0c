import ArgumentParser
import Conntrack

/// `ctsync kernel update`: changes mark, timeout, status or labels of the flows matching the
/// tuple filters (like `conntrack -U`), or rewrites the flows of a `--file`.
struct KernelUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Change mark, timeout, status or labels of matching flows (like conntrack -U), or update flows from --file.")

    @OptionGroup var filter: TupleFilterOptions

    @Option(
        name: [.customShort("m"), .long], help: "New mark: value, or value/mask to change only the masked bits.",
        transform: ArgumentParsing.mark("-m/--mark"))
    var mark: MarkMatch?

    @Option(name: [.customShort("t"), .long], help: "New timeout in seconds.", transform: ArgumentParsing.uint("-t/--timeout", "timeout"))
    var timeout: UInt32?

    @Option(
        name: [.customShort("u"), .long], help: "Status bits to set (the kernel lets bits be set, not cleared).", transform: ArgumentParsing.status)
    var status: FlowStatus?

    @Option(name: .customLong("label-add"), help: "Label to add: bit number or connlabel.conf name (repeatable).", transform: ArgumentParsing.label)
    var addLabels: [Int] = []

    @Option(
        name: .customLong("label-del"), help: "Label to remove: bit number or connlabel.conf name (repeatable).", transform: ArgumentParsing.label)
    var deleteLabels: [Int] = []

    @OptionGroup var batch: BatchOptions
    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        let changes = mark != nil || timeout != nil || status != nil || !addLabels.isEmpty || !deleteLabels.isEmpty
        if batch.file != nil {
            if changes { throw ValidationError("give either --file or changes (-m, -t, -u, --label-add, --label-del), not both") }
        } else if !changes {
            throw ValidationError("nothing to change: give -m/--mark, -t/--timeout, -u/--status, --label-add or --label-del")
        }
        // As conntrack: "cannot use --label-add and --label-del at the same time".
        if !addLabels.isEmpty && !deleteLabels.isEmpty { throw ValidationError("cannot use --label-add and --label-del at the same time") }
    }

    func run() throws {
        try requireRoot("updating conntrack entries")
        if batch.file != nil {
            try writeAndReport(try batch.flows(), operation: .update, batchSize: batch.batchSize, verb: "updated", format: output.format)
            return
        }
        var criteria = FlowFilter()
        filter.apply(to: &criteria)
        let change = FlowChange(
            timeout: timeout, status: status, mark: mark.map { m in { ($0 & ~m.mask) | (m.value & m.mask) } }, labelAdd: addLabels,
            labelDelete: deleteLabels.isEmpty ? nil : deleteLabels)
        var flows: [Flow] = []
        // As conntrack -U: a flow the change would leave as it is is neither sent nor counted.
        try KernelTable().dump(family: criteria.family) { flow in
            if criteria.matches(flow), let changed = change.applied(to: flow) { flows.append(changed) }
        }
        try writeAndReport(flows, operation: .update, batchSize: batch.batchSize, verb: "updated", format: output.format)
        // As conntrack -U: nothing updated is a failure, so `ctsync kernel update ... &&` stops.
        if flows.isEmpty { throw ExitCode.failure }
    }
}
