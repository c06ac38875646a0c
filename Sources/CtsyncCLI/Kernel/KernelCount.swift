import ArgumentParser
import Conntrack

/// `ctsync kernel count`: the kernel's own counter, or the number of flows matching filters.
struct KernelCount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "count", abstract: "Count flows (the kernel's counter; with filters, the matching flows).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: ReportOutputOptions

    func run() throws {
        try requireRoot("counting the conntrack table")
        let table = try KernelTable()
        let criteria = filter.filter
        var count = 0
        if criteria.isEmpty {
            count = try table.count()
        } else {
            try table.dump(family: criteria.family) { if criteria.matches($0) { count += 1 } }
        }
        print(output.format.style == .json ? "{\"count\":\(count)}" : "\(count)")
    }
}
