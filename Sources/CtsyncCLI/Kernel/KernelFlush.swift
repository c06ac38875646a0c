import ArgumentParser
import Conntrack

/// `ctsync kernel flush`: empties the table (or one family of it); with filters, deletes the matches.
struct KernelFlush: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush",
        abstract: "Empty the kernel table (-f for one family; other filters delete only the matches).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: ReportOutputOptions
    @Flag(name: .customLong("expect"), help: "The expectation table instead of the flows (conntrack's `expect` table).")
    var expect = false

    func validate() throws {
        if expect { try filter.checkForExpectations() }
    }

    func run() throws {
        try requireRoot("flushing the conntrack table")
        let criteria = filter.filter
        if expect {
            let table = try KernelTable()
            let before = try table.dumpExpectations(family: criteria.family).count
            try table.flushExpectations(family: criteria.family)
            if output.format.style == .json { print("{\"flushed\":\(before)}") } else { summary("\(before) expectations have been flushed.") }
            return
        }
        if !criteria.isEmpty {
            // A family or any other criterion: dump, select, delete, with an exact count.
            report(try deleteMatching(criteria), verb: "flushed", format: output.format)
            return
        }
        // One kernel operation; the count is what the kernel's counter dropped by, so flows
        // created meanwhile by live traffic are not counted as removed.
        let table = try KernelTable()
        let before = try table.count()
        try table.flush()
        let after = try table.count()
        report(max(0, before - after), verb: "flushed", format: output.format)
    }
}
