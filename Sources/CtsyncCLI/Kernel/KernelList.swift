import ArgumentParser
import Conntrack
import FlowModel

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
        // conntrack -o xml: a document around one <flow> element a line.
        if format.style == .xml { sink.line("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>") }
        try table.dump(family: criteria.family) { flow in
            guard criteria.matches(flow) else { return }
            shown += 1
            switch format.style {
            case .json: sink.line(FlowJSON.encode(flow))
            case .xml: sink.line(FlowXML.element(flow))
            case .text: sink.line { text.write(flow, into: &$0) }
            }
        }
        if format.style == .xml { sink.line("</conntrack>") }
        sink.flush()
        summary("\(shown) flow entries have been shown.")
    }
}
