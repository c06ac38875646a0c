import ArgumentParser
import Conntrack
import FlowModel

/// `ctsync kernel list`: like `conntrack -L`, but every family unless `-f` says otherwise.
struct KernelList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List flows in the kernel table (all families unless -f).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: OutputOptions
    @Flag(name: .customLong("expect"), help: "The expectation table instead of the flows (conntrack's `expect` table).")
    var expect = false

    func validate() throws {
        if expect { try filter.checkForExpectations() }
        if expect && output.format.style != .text {
            throw ValidationError("--expect prints conntrack's text layout only (-o text)")
        }
    }

    func run() throws {
        try requireRoot("listing the conntrack table")
        let table = try KernelTable()
        let criteria = filter.filter
        if expect {
            let all = try table.dumpExpectations(family: criteria.family)
            for e in all { print(ExpectationText.line(e)) }
            summary("\(all.count) expectations have been shown.")
            return
        }
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
