import Configuration
import ControlProtocol
import Foundation
import SyncDaemon
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Exit statuses: 0 success, 1 runtime failure, 2 usage or configuration error.
func fail(_ message: String, _ status: Int32) -> Never {
    writeStandardError("ctsyncd: \(message)\n")
    exit(status)
}

let invocation: DaemonInvocation
do {
    invocation = try DaemonArguments.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail("\(error)", 2)
}

func loadConfig(_ path: String) -> DaemonConfig {
    do {
        return try DaemonConfig.load(path: path)
    } catch {
        fail("\(error)", 2)
    }
}

switch invocation {
case .help:
    print(DaemonArguments.usage, terminator: "")
case .version:
    print("ctsyncd v\(CtsyncVersion.string) (conntrackd 1.4.7 compatible)")
case .check(let path):
    let config = loadConfig(path)
    let report = ConfigCheck.check(config, path: path)
    for warning in report.warnings { writeStandardError("ctsyncd: warning: \(warning)\n") }
    for error in report.errors { writeStandardError("ctsyncd: \(error)\n") }
    if !report.errors.isEmpty { exit(2) }
    print("\(report.summary): ok\(report.warnings.isEmpty ? "" : " (\(report.warnings.count) warning\(report.warnings.count == 1 ? "" : "s"))")")
case .request(let path, let request):
    let config = loadConfig(path)
    do {
        if request == .commit || request == .expectations(.commit) {
            // A commit answers when it has ended; a big table can take a while.
            let answer = try ControlClient.send(request, path: config.general.unixPath, timeoutSeconds: 3600)
            let report = try? JSONDecoder().decode(CommitReport.self, from: Data(answer))
            print(report?.summary ?? String(decoding: answer, as: UTF8.self))
            if let report, report.failed + (report.expectations?.failed ?? 0) > 0 { exit(1) }
        } else {
            let answer = try ControlClient.send(request, path: config.general.unixPath)
            // conntrackd prints nothing for the actions that only do something (-f, -F, -R,
            // -t, -B, -n, -k); scripts that compare its output keep working. `ctsync` shows
            // their answers.
            if request.printsAnswer { FileHandle.standardOutput.write(Data(answer)) }
        }
    } catch {
        fail("\(error)", 1)
    }
case .run(let path, let daemonize):
    let config = loadConfig(path)
    if daemonize {
        exit(Background.start(arguments: Array(CommandLine.arguments.dropFirst()).filter { $0 != "-d" }))
    }
    let isChild = Background.isChild
    if isChild { setsid() }
    let daemon: Daemon
    do {
        daemon = try Daemon(config: config, foreground: !isChild)
    } catch {
        fail("\(error)", 1)
    }
    exit(daemon.run(onReady: { if isChild { Background.ready() } }))
}
exit(0)

extension ControlRequest {
    /// Dumps and statistics print; the actions do not.
    var printsAnswer: Bool {
        switch self {
        case .flushCache, .flushKernel, .resync, .resetTimers, .sendBulk, .requestResync, .kill: return false
        case .expectations(let what):
            if case .dump = what { return true }
            return false
        default: return true
        }
    }
}
