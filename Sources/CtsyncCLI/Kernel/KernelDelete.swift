import ArgumentParser
import Conntrack

#if canImport(Glibc)
    import Glibc
#endif

/// `ctsync kernel delete`: removes the flows matching the filters, in batches, and says how many.
struct KernelDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete the flows matching the filters (at least one filter is required).")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        if filter.filter.isEmpty {
            throw ValidationError("delete needs at least one filter (use `ctsync kernel flush` to empty the table)")
        }
    }

    func run() throws {
        try requireRoot("deleting conntrack entries")
        let removed = try deleteMatching(filter.filter)
        report(removed, verb: "deleted", format: output.format)
    }
}

/// Dumps, filters and deletes in batches. A flow that vanished meanwhile (ENOENT) is not an error.
func deleteMatching(_ criteria: FlowFilter) throws -> Int {
    try KernelTable().delete(matching: criteria.matches, family: criteria.family)
}

func report(_ count: Int, verb: String, format: OutputFormat) {
    if format.style == .json {
        print("{\"\(verb)\":\(count)}")
    } else {
        summary("\(count) flow entries have been \(verb).")
    }
}
