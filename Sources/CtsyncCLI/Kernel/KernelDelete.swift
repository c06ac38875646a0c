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
    @Flag(
        name: .customLong("expect"),
        help: "Delete the expectation of the connection -p -s -d --sport --dport names (conntrack's -D expect).")
    var expect = false

    /// `--expect`: conntrack's `-D expect` line, checked by its rules.
    func expectation() throws -> ConntrackArguments {
        try ConntrackArguments.forKernel { () throws(ConntrackArguments.Problem) in try ConntrackArguments(expect: .delete, filter: filter) }
    }

    func validate() throws {
        if expect {
            _ = try expectation()
            return
        }
        if filter.filter.isEmpty {
            throw ValidationError("delete needs at least one filter (use `ctsync kernel flush` to empty the table)")
        }
    }

    func run() throws {
        try requireRoot("deleting conntrack entries")
        if expect {
            // As ctsync -D expect: one expectation, "1 expectations have been deleted.", or exit 1.
            try expectation().runForKernel()
            return
        }
        let removed = try deleteMatching(filter.filter)
        report(removed, verb: "deleted", format: output.format)
        // As conntrack -D: nothing matched is a failure, so `ctsync kernel delete ... &&` stops.
        if removed == 0 { throw ExitCode.failure }
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
