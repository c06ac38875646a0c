import ArgumentParser
import Configuration
import Conntrack
import ControlProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `ctsync`: the operator CLI. One folder per noun, one file per subcommand.
public struct CtsyncCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ctsync",
        abstract: "Operate ctsync and the kernel's connection-tracking table.",
        version: CtsyncVersion.string,
        subcommands: [
            KernelCommand.self, StatsCommand.self, CacheCommand.self, FlushCommand.self, ResyncCommand.self, BulkCommand.self, CommitCommand.self,
            HealthCommand.self,
        ]
    )

    public init() {}

    /// Parses and runs, mapping failures to ctsync's exit codes: 0 ok, 1 runtime failure,
    /// 2 usage error. Messages go to stderr prefixed with `ctsync:`.
    public static func main(_ arguments: [String]? = nil) -> Never {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            Glibc.exit(0)
        } catch let error as CLIError {
            writeStandardError("ctsync: \(error.message)\n")
            Glibc.exit(error.exitCode)
        } catch let error as KernelError {
            writeStandardError("ctsync: \(error)\n")
            Glibc.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            if let code = error as? ExitCode {
                Glibc.exit(code.rawValue)
            }
            writeStandardError("ctsync: \(fullMessage(for: error))\n")
            Glibc.exit(code == .validationFailure ? 2 : (code.rawValue == 64 ? 2 : code.rawValue))
        }
    }
}

/// An error the CLI reports itself: a usage problem (exit 2) or a failure at run time (exit 1).
public struct CLIError: Error, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32
    public var description: String { message }

    public static func usage(_ message: String) -> CLIError { CLIError(message: message, exitCode: 2) }
    public static func failure(_ message: String) -> CLIError { CLIError(message: message, exitCode: 1) }
}

/// The effective user is root (ctsync's kernel commands need CAP_NET_ADMIN).
func requireRoot(_ what: String) throws {
    if geteuid() != 0 {
        throw CLIError.failure("\(what) needs root (CAP_NET_ADMIN on the conntrack table); run it with sudo")
    }
}
