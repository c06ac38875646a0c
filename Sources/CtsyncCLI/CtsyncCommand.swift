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
        discussion: """
            ctsync also takes conntrack's own command line, unchanged: ctsync -L, -G, -D, -I, -U, -A, -E, -F, -C, -S, \
            -R FILE (and the expect table), with conntrack 1.4.7's options, output and exit statuses. \
            'ctsync conntrack -h' lists them.
            """,
        version: CtsyncVersion.string,
        subcommands: [
            KernelCommand.self, StatsCommand.self, CacheCommand.self, FlushCommand.self, ResyncCommand.self, BulkCommand.self, CommitCommand.self,
            HealthCommand.self, TopCommand.self,
        ]
    )

    public init() {}

    /// Parses and runs, mapping failures to ctsync's exit codes: 0 ok, 1 runtime failure,
    /// 2 usage error. Messages go to stderr prefixed with `ctsync:`.
    public static func main(_ arguments: [String]? = nil) -> Never {
        let given = arguments ?? Array(CommandLine.arguments.dropFirst())
        // conntrack's own command line (`ctsync -L ...`, or ctsync installed as `conntrack`).
        let invokedAs = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") }
        if ConntrackArguments.isConntrackLine(given) || (arguments == nil && invokedAs == "conntrack") {
            ConntrackCommandLine.main(given)
        }
        if let problem = CommandPath.unknownSubcommand(in: given) {
            writeStandardError("ctsync: \(problem)\n")
            Glibc.exit(2)
        }
        do {
            var command = try parseAsRoot(given)
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
            // One line: the message and where to read more (not the whole usage text).
            writeStandardError("ctsync: \(oneLineMessage(for: error)) (see '\(CommandPath.of(given)) --help')\n")
            Glibc.exit(code == .validationFailure ? 2 : (code.rawValue == 64 ? 2 : code.rawValue))
        }
    }
}

extension CtsyncCommand {
    /// The argument parser's message without its "Error: " prefix and without the help and
    /// usage lines it appends.
    static func oneLineMessage(for error: Error) -> String {
        var text = message(for: error)
        if text.hasPrefix("Error: ") { text.removeFirst("Error: ".count) }
        let first = text.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? text
        return first.trimmingCharacters(in: .whitespaces)
    }
}

/// The subcommands named on a command line, and a mistyped one caught before the argument
/// parser reports it as an "unexpected argument".
enum CommandPath {
    /// The commands a line of arguments names, as help shows them: `ctsync kernel list`.
    static func of(_ arguments: [String]) -> String {
        walk(arguments).path.joined(separator: " ")
    }

    /// "unknown subcommand 'lis' for 'ctsync kernel'; did you mean 'list'? (...)", or nil.
    static func unknownSubcommand(in arguments: [String]) -> String? {
        let (path, unknown, choices) = walk(arguments)
        guard let unknown else { return nil }
        let suggestion = closest(to: unknown, among: choices).map { "; did you mean '\($0)'?" } ?? ""
        return "unknown subcommand '\(unknown)' for '\(path.joined(separator: " "))'\(suggestion) (one of: \(choices.joined(separator: ", ")))"
    }

    private static func walk(_ arguments: [String]) -> (path: [String], unknown: String?, choices: [String]) {
        var command: ParsableCommand.Type = CtsyncCommand.self
        var path = ["ctsync"]
        for argument in arguments {
            let subcommands = command.configuration.subcommands
            guard !subcommands.isEmpty, !argument.hasPrefix("-"), argument != "help" else { break }
            let names = subcommands.compactMap { $0.configuration.commandName }
            guard let next = subcommands.first(where: { $0.configuration.commandName == argument }) else {
                return (path, argument, names)
            }
            command = next
            path.append(argument)
        }
        return (path, nil, [])
    }

    /// The choice within two edits of `word`, or the only one it is a prefix of.
    static func closest(to word: String, among choices: [String]) -> String? {
        let prefixed = choices.filter { $0.hasPrefix(word) }
        if prefixed.count == 1 { return prefixed[0] }
        let scored = choices.map { ($0, distance(word, $0)) }.filter { $0.1 <= 2 }.sorted { $0.1 < $1.1 }
        return scored.first?.0
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
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
