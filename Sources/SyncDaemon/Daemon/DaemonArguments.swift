import Configuration
import ControlProtocol
import FlowModel
import SystemCalls

/// What `ctsyncd` was asked to do, from conntrackd's command line.
public enum DaemonInvocation: Equatable, Sendable {
    /// Run the daemon (`-d`: in the background).
    case run(configPath: String, daemonize: Bool)
    /// Send a request to the running daemon found through the configuration's UNIX path.
    case request(configPath: String, ControlRequest)
    /// `--check`: read and validate the configuration, report, exit.
    case check(configPath: String)
    case help
    case version
}

/// conntrackd(8)'s flags, parsed the way conntrackd does: one action, optional words after
/// `-i -e -f -F -R -c -s` (matched by prefix, e.g. `-s n`), `-x` after `-i`/`-e`, `-C FILE`.
public enum DaemonArguments {
    public static let defaultConfigPath = DaemonConfig.defaultPath

    public struct UsageError: Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func parse(_ arguments: [String]) throws(UsageError) -> DaemonInvocation {
        var configPath = defaultConfigPath
        var daemonize = false
        var check = false
        var action: ControlRequest?
        var actionFlag: String?
        var xml = false
        var index = 0

        func optionalWord() -> String? {
            guard index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") else { return nil }
            index += 1
            return arguments[index]
        }
        func setAction(_ flag: String, _ request: ControlRequest) throws(UsageError) {
            if let actionFlag {
                throw UsageError(message: "\(flag) cannot be combined with \(actionFlag): give one action")
            }
            actionFlag = flag
            action = request
        }
        func target(_ flag: String, _ word: String?) throws(UsageError) -> Bool {
            // true for conntrack entries (default), false for expectations
            guard let word else { return true }
            if "ct".hasPrefix(word) || word == "conntrack" { return true }
            if "expect".hasPrefix(word) { return false }
            throw UsageError(message: "\(flag): unknown target '\(word)': expected ct or expect")
        }

        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-C":
                guard index + 1 < arguments.count else { throw UsageError(message: "-C needs a configuration file") }
                index += 1
                configPath = arguments[index]
            case "-d":
                daemonize = true
            case "--check":
                check = true
            case "-h", "--help":
                return .help
            case "-v", "--version":
                return .version
            case "-i", "-e":
                let cache: CacheName = argument == "-i" ? .internal : .external
                if try target(argument, optionalWord()) {
                    try setAction(argument, .dump(cache, format: .text, filter: nil))
                } else {
                    try setAction(argument, .expectations(.dump(cache, xml: false)))
                }
            case "-x":
                switch action {
                case .dump(let cache, _, let filter)?: action = .dump(cache, format: .xml, filter: filter)
                case .expectations(.dump(let cache, _))?: action = .expectations(.dump(cache, xml: true))
                default: throw UsageError(message: "-x must follow -i or -e")
                }
                xml = true
            case "-s":
                let word = optionalWord()
                guard let section = word.map({ StatsSection(prefix: $0) }) ?? .general else {
                    throw UsageError(
                        message:
                            "-s: unknown statistics '\(word ?? "")': expected network, cache, runtime, link, rsqueue, process, queue, ct or expect")
                }
                try setAction(argument, .stats(section, json: false))
            case "-f":
                let word = optionalWord()
                switch word {
                case nil: try setAction(argument, .flushCache(nil))
                case let w? where "internal".hasPrefix(w): try setAction(argument, .flushCache(.internal))
                case let w? where "external".hasPrefix(w): try setAction(argument, .flushCache(.external))
                case let w? where "expect".hasPrefix(w): try setAction(argument, .expectations(.flushCaches(nil)))
                default: throw UsageError(message: "-f: unknown cache '\(word!)': expected internal, external or expect")
                }
            case "-F":
                try setAction(argument, try target(argument, optionalWord()) ? .flushKernel : .expectations(.flushKernel))
            case "-R":
                try setAction(argument, try target(argument, optionalWord()) ? .resync : .expectations(.resync))
            case "-c":
                try setAction(argument, try target(argument, optionalWord()) ? .commit : .expectations(.commit))
            case "-k": try setAction(argument, .kill)
            case "-t": try setAction(argument, .resetTimers)
            case "-B": try setAction(argument, .sendBulk)
            case "-n": try setAction(argument, .requestResync)
            default:
                throw UsageError(message: "unknown option '\(argument)' (see ctsyncd -h)")
            }
            index += 1
        }
        _ = xml
        if check {
            if let actionFlag { throw UsageError(message: "--check validates the configuration; it cannot be combined with \(actionFlag)") }
            if daemonize { throw UsageError(message: "--check validates the configuration; it cannot be combined with -d") }
            return .check(configPath: configPath)
        }
        if let action {
            if daemonize { throw UsageError(message: "-d starts the daemon; it cannot be combined with \(actionFlag!)") }
            return .request(configPath: configPath, action)
        }
        return .run(configPath: configPath, daemonize: daemonize)
    }

    public static let usage = """
        ctsyncd: connection tracking state synchronisation daemon (conntrackd-compatible flags)

        Usage: ctsyncd [-C FILE] [-d]                 run the daemon (foreground unless -d)
               ctsyncd [-C FILE] ACTION              ask the running daemon
               ctsyncd --check [-C FILE]             validate the configuration and exit

        Actions:
          -i [ct|expect] [-x]    dump the internal cache (-x: XML)
          -e [ct|expect] [-x]    dump the external cache (-x: XML)
          -s [network|cache|runtime|link|rsqueue|process|queue|ct|expect]
                                 statistics, in conntrackd's layout
          -f [internal|external|expect]
                                 flush the caches
          -F [ct|expect]         flush the kernel table (flows the filter accepts)
          -R [ct|expect]         resync the internal cache with the kernel table
          -t                     set the kernel timeout of every flow to PurgeTimeout
          -k                     stop the daemon
          -c, -B, -n             commit, bulk send, request resync (with replication)
        Options:
          -C FILE                configuration (default: the first of \(DaemonConfig.packagePath) and
                                 \(DaemonConfig.conntrackdPath) that exists)
          -d                     run in the background
          -h, -v                 help, version

        Exit status: 0 success, 1 failure (e.g. daemon not running), 2 usage or configuration error.

        """
}
