import ArgumentParser
import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

/// `ctsync cache internal|external`: the daemon's caches, with `ctsync kernel list`'s filters.
struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "Dump the daemon's internal or external cache (filters as in kernel list).")

    @Argument(help: "internal or external")
    var which: String

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var daemon: DaemonOptions

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard CacheName(rawValue: which) != nil else { throw ValidationError("unknown cache '\(which)': expected internal or external") }
    }

    func run() throws {
        let criteria = filter.filter
        let cache = CacheName(rawValue: which)!
        let format = output.format
        // text is conntrackd's -i layout and xml its -x, both from the daemon; extended and id
        // are conntrack's line layout with more fields, printed here from the JSON dump.
        let dumpFormat: DumpFormat =
            switch format.style {
            case .xml: .xml
            case .json: .json
            case .text: format.extended || format.showID ? .json : .text
            }
        let answer = try daemon.send(.dump(cache, format: dumpFormat, filter: criteria.isEmpty ? nil : criteria))
        var lines = 0
        if format.style == .text && dumpFormat == .json {
            let sink = OutputSink()
            let text = format.textFormat
            for line in answer.split(separator: 10) where !line.isEmpty {
                guard let flow = try? line.withUnsafeBytes({ try FlowJSON.decode(bytes: $0) }) else {
                    throw CLIError.failure("the daemon's dump has a line that is not a flow: \(String(decoding: line.prefix(200), as: UTF8.self))")
                }
                sink.line { text.write(flow, into: &$0) }
                lines += 1
            }
            sink.flush()
        } else {
            FileHandle.standardOutput.write(Data(answer))
            lines = answer.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
        }
        summary("\(lines) flow entries in the \(which) cache.")
    }
}

/// `ctsync flush internal|external|all|kernel`: empties a cache, or the kernel table of what
/// the daemon's filter accepts (the internal cache follows through the destroy events).
struct FlushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush", abstract: "Flush the daemon's caches (internal, external, all) or, with 'kernel', the kernel table.")

    @Argument(help: "internal, external, all (both caches) or kernel; required: the external cache is the backup's only copy of the peer's flows")
    var what: String?

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        guard let what else {
            throw ValidationError(
                "flush needs to be told what: internal, external, all (both caches) or kernel (the external cache is the backup's only copy of the peer's flows)"
            )
        }
        guard ["internal", "external", "all", "kernel"].contains(what) else {
            throw ValidationError("unknown target '\(what)': expected internal, external, all or kernel")
        }
    }

    func run() throws {
        let request: ControlRequest
        let what = self.what ?? ""
        switch what {
        case "internal": request = .flushCache(.internal)
        case "external": request = .flushCache(.external)
        case "kernel": request = .flushKernel
        default: request = .flushCache(nil)
        }
        let answer = try daemon.send(request)
        if output.format.style == .json {
            FileHandle.standardOutput.write(Data(answer))
        } else if let object = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any], let n = object["flushed"] {
            summary("\(n) flow entries have been flushed (\(what)).")
        }
    }
}

/// `ctsync resync`: makes the internal cache equal the kernel table now; with `--request`,
/// asks the peer for its whole table instead (`ctsyncd -n`).
struct ResyncCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resync",
        abstract: "Resynchronise the internal cache with the kernel table, or (--request) ask the peer for its table.")

    @Flag(name: .customLong("request"), help: "Ask the peer to send its whole internal cache (ctsyncd -n).")
    var request = false

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: ReportOutputOptions

    func run() throws {
        if request {
            _ = try daemon.send(.requestResync)
            summary("resync requested from the peer.")
            return
        }
        let answer = try daemon.send(.resync)
        if output.format.style == .json {
            FileHandle.standardOutput.write(Data(answer))
        } else if let o = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] {
            summary("internal cache resynced: \(o["flows"] ?? 0) flows, \(o["added"] ?? 0) added, \(o["removed"] ?? 0) removed.")
        }
    }
}

/// `ctsync bulk`: sends the whole internal cache to the peer (`ctsyncd -B`).
struct BulkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bulk", abstract: "Send the daemon's whole internal cache to the peer (ctsyncd -B).")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: ReportOutputOptions

    func run() throws {
        let answer = try daemon.send(.sendBulk)
        if output.format.style == .json {
            FileHandle.standardOutput.write(Data(answer))
        } else if let o = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] {
            summary("\(o["queued"] ?? 0) flows queued for the peer.")
        }
    }
}

/// `ctsync commit`: injects the external cache into the kernel table (`ctsyncd -c`) and says
/// how many flows were created, updated and failed, and how long it took. Exit 1 when the
/// daemon is not running or nothing could be committed.
struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "Inject the daemon's external cache into the kernel table (ctsyncd -c): create new flows, update existing ones.")

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: ReportOutputOptions

    func run() throws {
        let answer = try daemon.send(.commit, timeoutSeconds: 3600)
        if output.format.style == .json {
            FileHandle.standardOutput.write(Data(answer))
            return
        }
        guard let report = try? JSONDecoder().decode(CommitReport.self, from: Data(answer)) else {
            throw CLIError.failure("unreadable commit report from the daemon: \(String(decoding: answer, as: UTF8.self))")
        }
        print(report.summary)
        if report.failed > 0 { throw ExitCode(1) }
    }
}
