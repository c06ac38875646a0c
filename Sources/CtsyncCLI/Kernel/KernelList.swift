import ArgumentParser
import Conntrack

/// `ctsync kernel list`: like `conntrack -L`, but every family unless `-f` says otherwise.
struct KernelList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List flows in the kernel table (all families unless -f).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot("listing the conntrack table")
        let table = try KernelTable()
        let criteria = filter.filter
        let sink = OutputSink()
        let format = output.format
        let text = format.textFormat
        var shown = 0
        try table.dump(family: criteria.family) { flow in
            guard criteria.matches(flow) else { return }
            shown += 1
            if format.style == .json {
                sink.line(FlowJSON.encode(flow))
            } else {
                sink.line { text.write(flow, into: &$0) }
            }
        }
        sink.flush()
        summary("\(shown) flow entries have been shown.")
    }
}
