import ArgumentParser
import Conntrack

/// `ctsync kernel flush`: empties the table (or one family of it); with filters, deletes the matches.
struct KernelFlush: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush",
        abstract: "Empty the kernel table (-f for one family; other filters delete only the matches).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try requireRoot("flushing the conntrack table")
        var criteria = filter.filter
        let family = criteria.family
        criteria.family = nil
        if !criteria.isEmpty {
            criteria.family = family
            report(try deleteMatching(criteria), verb: "flushed", format: output.format)
            return
        }
        // One kernel operation; the count is what the kernel's counter dropped by, so flows
        // created meanwhile by live traffic are not counted as removed.
        let table = try KernelTable()
        let before: Int
        if let family {
            var n = 0
            try table.dump(family: family) { _ in n += 1 }
            before = n
        } else {
            before = try table.count()
        }
        try table.flush(family: family)
        let after: Int
        if let family {
            var n = 0
            try table.dump(family: family) { _ in n += 1 }
            after = n
        } else {
            after = try table.count()
        }
        report(max(0, before - after), verb: "flushed", format: output.format)
    }
}
