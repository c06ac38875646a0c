import FlowModel

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A conntrackd.conf file, parsed and validated: what `ctsyncd -C FILE` runs with.
///
/// The grammar is conntrackd 1.4.7's (src/read_config_lex.l, src/read_config_yy.y), so an
/// existing conntrackd.conf loads unchanged. Every option conntrackd accepts is parsed, in the
/// block it belongs to, with its aliases; where conntrackd warns and carries on with a bad
/// value, ctsync stops with a `ConfigError` naming the file, line, column, option and block.
/// Those places, and the few where ctsync accepts what conntrackd's lexer trips over, are
/// listed in docs/configuration.md.
public struct DaemonConfig: Sendable, Equatable {
    /// Where ctsyncd, ctsync and conntrackd look without `-C`.
    /// The configuration the ctsync package installs.
    public static let packagePath = "/etc/ctsyncd/ctsyncd.conf"
    /// conntrackd's, used unchanged when the package's is not there.
    public static let conntrackdPath = "/etc/conntrackd/conntrackd.conf"
    /// What `-C` defaults to: the package's configuration if it exists, else conntrackd's.
    public static var defaultPath: String { defaultPath(exists: { access($0, F_OK) == 0 }) }

    public static func defaultPath(exists: (String) -> Bool) -> String {
        exists(packagePath) ? packagePath : conntrackdPath
    }

    /// The file it came from (as given to `load` or `parse`).
    public var path: String
    public var general: GeneralConfig
    /// nil when there is no `Sync` section.
    public var sync: SyncConfig?
    /// The `Stats` section (conntrackd's stats mode); nil when absent.
    public var stats: StatsConfig?
    /// The `Helper` section; nil when absent.
    public var helper: HelperConfig?
    /// The `Metrics` section (ctsync's Prometheus endpoint); nil when absent: no endpoint.
    public var metrics: MetricsConfig?
    /// Every section, block and option written in the file, in file order.
    public var settings: [ConfigSetting]
    /// Things conntrackd would warn about, or that override earlier values: worth logging.
    public var warnings: [ConfigWarning]

    public init(
        path: String, general: GeneralConfig = GeneralConfig(), sync: SyncConfig? = nil, stats: StatsConfig? = nil,
        helper: HelperConfig? = nil, metrics: MetricsConfig? = nil, settings: [ConfigSetting] = [], warnings: [ConfigWarning] = []
    ) {
        self.metrics = metrics
        self.path = path
        self.general = general
        self.sync = sync
        self.stats = stats
        self.helper = helper
        self.settings = settings
        self.warnings = warnings
    }

    /// Reads and parses a file. An unreadable file is an error naming the path and the reason.
    public static func load(path: String) throws(ConfigError) -> DaemonConfig {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw ConfigError(file: path, line: 0, column: 0, message: "cannot read '\(path)': \(error.reason)")
        }
        return try parse(bytes: bytes, path: path)
    }

    /// Parses the text of a file; `path` is only used in messages and `DaemonConfig.path`.
    public static func parse(_ text: String, path: String) throws(ConfigError) -> DaemonConfig {
        try parse(bytes: Array(text.utf8), path: path)
    }

    /// Parses raw bytes, as `load` does (invalid UTF-8 is reported, never trapped on).
    public static func parse(bytes: [UInt8], path: String) throws(ConfigError) -> DaemonConfig {
        var parser = ConfigParser(file: path, tokens: ConfigLexer(bytes: bytes).tokenize())
        return try parser.parseFile()
    }

    /// The dotted paths of the options ctsync acts on. Everything else (expectations, the
    /// `Helper` section) is parsed and validated but not used.
    public static let activeOptionPaths: Set<String> = {
        var paths: Set<String> = [
            "General", "General.HashSize", "General.HashLimit", "General.LogFile", "General.Syslog", "General.LockFile",
            "General.UNIX", "General.UNIX.Path", "General.UNIX.Backlog", "General.NetlinkBufferSize",
            "General.NetlinkBufferSizeMaxGrowth", "General.NetlinkOverrunResync", "General.NetlinkEventsReliable",
            "General.PollSecs", "General.EventIterationLimit", "General.Nice", "General.Systemd", "General.Scheduler",
            "General.Scheduler.Type", "General.Scheduler.Priority", "General.Filter",
            "Sync", "Sync.Options", "Sync.Options.TCPWindowTracking", "Sync.Options.IgnoreReceived", "Sync.CommitTimeout", "Sync.PurgeTimeout",
            "Sync.RefreshTime", "Sync.CacheTimeout",
            "Stats", "Stats.LogFile", "Stats.Syslog", "Metrics", "Metrics.IPv4_address", "Metrics.IPv6_address", "Metrics.Port",
            "Sync.Auth", "Sync.Auth.KeyFile", "Sync.Auth.Algorithm", "Sync.Auth.NodeId", "Sync.Options.UpdateDelay", "Sync.Options.ExpectationSync",
        ]
        for policy in ["Accept", "Ignore"] {
            paths.insert("General.Filter.Protocol \(policy)")
            paths.insert("General.Filter.State \(policy)")
            paths.insert("General.Filter.Address \(policy)")
            paths.insert("General.Filter.Address \(policy).IPv4_address")
            paths.insert("General.Filter.Address \(policy).IPv6_address")
        }
        let modes = [
            "FTFW": ["ResendQueueSize", "ACKWindowSize", "StartupResync", "CommitTimeout", "PurgeTimeout", "DisableExternalCache"],
            "NOTRACK": ["StartupResync", "CommitTimeout", "PurgeTimeout", "DisableExternalCache", "DisableInternalCache"],
            "ALARM": ["RefreshTime", "CacheTimeout", "CommitTimeout", "PurgeTimeout"],
        ]
        for (mode, options) in modes {
            paths.insert("Sync.Mode \(mode)")
            for option in options { paths.insert("Sync.Mode \(mode).\(option)") }
        }
        let unicast = [
            "IPv4_address", "IPv6_address", "IPv4_Destination_Address", "IPv6_Destination_Address", "Port", "Interface",
            "SndSocketBuffer", "RcvSocketBuffer", "Checksum", "Default",
        ]
        let multicast = [
            "IPv4_address", "IPv6_address", "Group", "IPv4_interface", "IPv6_interface", "Interface", "SndSocketBuffer",
            "RcvSocketBuffer", "Checksum", "Default",
        ]
        for (link, options) in [("UDP", unicast), ("TCP", unicast + ["ErrorQueueLength"]), ("Multicast", multicast)] {
            paths.insert("Sync.\(link)")
            for option in options { paths.insert("Sync.\(link).\(option)") }
        }
        return paths
    }()

    /// Settings ctsync parses but does not act on yet, in file order, so the daemon can log
    /// "option X at FILE:LINE is parsed but not acted on yet".
    public func inactiveSettings() -> [ConfigSetting] {
        settings.filter { !Self.activeOptionPaths.contains($0.path) }
    }
}

/// One section, block or option as written in the file.
public struct ConfigSetting: Sendable, Equatable {
    /// Dotted and canonical (aliases resolved): `General.UNIX.Path`,
    /// `Sync.Mode FTFW.ResendQueueSize`, `General.Filter.Address Ignore`,
    /// `General.Filter.Address Ignore.IPv4_address`, `Sync.UDP.Port`, `Helper.Type.Policy.ExpectMax`.
    public var path: String
    /// The name as written, e.g. `Path`, or `SocketBufferSize` for `General.NetlinkBufferSize`.
    public var name: String
    public var line: Int
    public var column: Int

    public init(path: String, name: String, line: Int, column: Int) {
        self.path = path
        self.name = name
        self.line = line
        self.column = column
    }
}

/// Why a file was rejected, and where: `FILE:LINE:COLUMN: message`. The message names the
/// option and the block and says what was expected. `line` and `column` are 0 when the file
/// could not be read; the description is then `FILE: message`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        line > 0 ? "\(file):\(line):\(column): \(message)" : "\(file): \(message)"
    }
}

/// Something accepted but worth a log line: `FILE:LINE:COLUMN: warning: message`.
public struct ConfigWarning: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "\(file):\(line):\(column): warning: \(message)" }
}

private struct ReadFailure: Error {
    var reason: String
}

private func readFile(_ path: String) throws(ReadFailure) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw ReadFailure(reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw ReadFailure(reason: String(cString: strerror(errno)))
        }
        if n == 0 { break }
        result.append(contentsOf: chunk[0..<n])
        // A config file is small; refuse to slurp a device or a huge file by mistake.
        if result.count > 16 << 20 { throw ReadFailure(reason: "file is larger than 16 MiB") }
    }
    return result
}

/// `Metrics { IPv4_address A | IPv6_address A; Port P }` (new in ctsync; conntrackd rejects it):
/// where the daemon serves its figures in Prometheus' text format (`GET /metrics`). Off
/// without the block; the defaults keep it on the loopback.
public struct MetricsConfig: Sendable, Equatable {
    public static let defaultPort: UInt16 = 9497
    public var address: IPAddress = IPAddress(ipv4: 0x7F00_0001)
    public var port: UInt16 = MetricsConfig.defaultPort

    public init() {}
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
}
