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

    @Option(name: [.customShort("o"), .customLong("output")], help: "text (conntrackd's -i layout), xml, or json.")
    var format: String = "text"

    func validate() throws {
        guard CacheName(rawValue: which) != nil else { throw ValidationError("unknown cache '\(which)': expected internal or external") }
        guard DumpFormat(rawValue: format) != nil else { throw ValidationError("unknown output '\(format)' for -o: expected text, xml or json") }
    }

    func run() throws {
        let criteria = filter.filter
        let answer = try daemon.send(
            .dump(CacheName(rawValue: which)!, format: DumpFormat(rawValue: format)!, filter: criteria.isEmpty ? nil : criteria))
        FileHandle.standardOutput.write(Data(answer))
        let lines = answer.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
        summary("\(lines) flow entries in the \(which) cache.")
    }
}

/// `ctsync flush internal|external|all|kernel`: empties a cache, or the kernel table of what
/// the daemon's filter accepts (the internal cache follows through the destroy events).
struct FlushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush", abstract: "Flush the daemon's caches (internal, external, all) or, with 'kernel', the kernel table.")

    @Argument(help: "internal, external, all (default) or kernel")
    var what: String = "all"

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard ["internal", "external", "all", "kernel"].contains(what) else {
            throw ValidationError("unknown target '\(what)': expected internal, external, all or kernel")
        }
    }

    func run() throws {
        let request: ControlRequest
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
    @OptionGroup var output: OutputOptions

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
    @OptionGroup var output: OutputOptions

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
    @OptionGroup var output: OutputOptions

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
