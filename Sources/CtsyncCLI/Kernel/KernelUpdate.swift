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

    @Option(name: .customLong("label-add"), help: "Label bit to add (repeatable).", transform: ArgumentParsing.label)
    var addLabels: [Int] = []

    @OptionGroup var batch: BatchOptions
    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        let changes = mark != nil || timeout != nil || status != nil || !addLabels.isEmpty
        if batch.file != nil {
            if changes { throw ValidationError("give either --file or changes (-m, -t, -u, --label-add), not both") }
        } else if !changes {
            throw ValidationError("nothing to change: give -m/--mark, -t/--timeout, -u/--status or --label-add")
        }
    }

    func run() throws {
        try requireRoot("updating conntrack entries")
        if batch.file != nil {
            try writeAndReport(try batch.flows(), operation: .update, batchSize: batch.batchSize, verb: "updated", format: output.format)
            return
        }
        var criteria = FlowFilter()
        filter.apply(to: &criteria)
        var flows: [Flow] = []
        try KernelTable().dump(family: criteria.family) { flow in
            guard criteria.matches(flow) else { return }
            var changed = flow
            if let mark { changed.mark = (flow.mark & ~mark.mask) | (mark.value & mark.mask) }
            if let timeout { changed.timeout = timeout }
            if let status { changed.status.formUnion(status) }
            for bit in addLabels { changed.labels.insert(bit) }
            flows.append(changed)
        }
        try writeAndReport(flows, operation: .update, batchSize: batch.batchSize, verb: "updated", format: output.format)
    }
}
