import ArgumentParser
import Configuration
import ControlProtocol
import Foundation
import SystemCalls

/// `ctsync stats`: the daemon's statistics, in conntrackd's layout or as JSON.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show the daemon's statistics (conntrackd's -s layout, or JSON).")

    @Argument(help: "Section: general (default), network, cache, runtime, link, rsqueue, process, queue, expect.")
    var section: String = "general"

    @OptionGroup var daemon: DaemonOptions
    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        if section != "general" && StatsSection(prefix: section) == nil {
            throw ValidationError(
                "unknown statistics section '\(section)': expected general, network, cache, runtime, link, rsqueue, process, queue or expect")
        }
    }

    func run() throws {
        let which = section == "general" ? StatsSection.general : StatsSection(prefix: section)!
        let answer = try daemon.send(.stats(which, json: output.format.style == .json))
        FileHandle.standardOutput.write(Data(answer))
    }
}
