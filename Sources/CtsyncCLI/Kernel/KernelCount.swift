import ArgumentParser
import Conntrack

/// `ctsync kernel count`: the kernel's own counter, or the number of flows matching filters.
struct KernelCount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "count", abstract: "Count flows (the kernel's counter; with filters, the matching flows).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: ReportOutputOptions
    @Flag(name: .customLong("expect"), help: "The expectation table instead of the flows (conntrack's `expect` table).")
    var expect = false

    func validate() throws {
        if expect { try filter.checkForExpectations() }
    }

    func run() throws {
        try requireRoot("counting the conntrack table")
        let table = try KernelTable()
        let criteria = filter.filter
        var count = 0
        if expect {
            count = try table.dumpExpectations(family: criteria.family).count
        } else if criteria.isEmpty {
            count = try table.count()
        } else {
            try table.dump(family: criteria.family) { if criteria.matches($0) { count += 1 } }
        }
        print(output.format.style == .json ? "{\"count\":\(count)}" : "\(count)")
    }
}
