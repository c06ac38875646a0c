import Configuration
import ControlProtocol
import Foundation
import Logging
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Where the daemon's log lines go: stderr in the foreground, a file (`LogFile`), syslog
/// (`Syslog`), any combination. Lines look like conntrackd's:
/// `[Wed Nov 25 12:00:00 2026] (pid=1234) [notice] message`.
final class DaemonLogSink: @unchecked Sendable {
    // Written only before the daemon starts its loop, then read from the daemon thread.
    private let lock = NSLock()
    private var file: UnsafeMutablePointer<FILE>?
    private var toStderr: Bool
    private var toSyslog: Bool

    init(stderr: Bool, filePath: String?, syslogFacility: String?) throws {
        toStderr = stderr
        toSyslog = syslogFacility != nil
        if let filePath { file = try Self.openAppending(filePath, what: "log file") }
        if let facility = syslogFacility {
            openlog("ctsyncd", LOG_PID, Self.facility(named: facility))
        }
    }

    /// Opens a log file for appending, line-buffered, creating its directory if needed.
    static func openAppending(_ path: String, what: String) throws -> UnsafeMutablePointer<FILE> {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        guard let f = fopen(path, "a") else {
            throw DaemonError.startup("cannot open \(what) \(path): \(String(cString: strerror(errno)))")
        }
        setvbuf(f, nil, _IOLBF, 0)
        return f
    }

    static func facility(named name: String) -> Int32 {
        switch name.lowercased() {
        case "daemon": return LOG_DAEMON
        case "user": return LOG_USER
        case "local0": return LOG_LOCAL0
        case "local1": return LOG_LOCAL1
        case "local2": return LOG_LOCAL2
        case "local3": return LOG_LOCAL3
        case "local4": return LOG_LOCAL4
        case "local5": return LOG_LOCAL5
        case "local6": return LOG_LOCAL6
        case "local7": return LOG_LOCAL7
        default: return LOG_DAEMON
        }
    }

    func write(level: Logger.Level, _ message: String) {
        let name: String
        let priority: Int32
        switch level {
        case .trace, .debug:
            name = "debug"
            priority = LOG_DEBUG
        case .info:
            name = "info"
            priority = LOG_INFO
        case .notice:
            name = "notice"
            priority = LOG_NOTICE
        case .warning:
            name = "warning"
            priority = LOG_WARNING
        case .error:
            name = "ERROR"
            priority = LOG_ERR
        case .critical:
            name = "critical"
            priority = LOG_CRIT
        }
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var stamp = [CChar](repeating: 0, count: 64)
        let n = strftime(&stamp, stamp.count, "%a %b %e %H:%M:%S %Y", &parts)
        let when = String(decoding: stamp.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let line = "[\(when)] (pid=\(getpid())) [\(name)] \(message)\n"
        lock.lock()
        defer { lock.unlock() }
        if toStderr { writeStandardError(line) }
        if let file { fputs(line, file) }
        if toSyslog { message.withCString { withVaList([$0]) { vsyslog(priority, "%s", $0) } } }
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        if let file { fclose(file) }
        file = nil
        if toSyslog { closelog() }
        toSyslog = false
    }
}

/// A swift-log handler writing through a `DaemonLogSink`.
struct DaemonLogHandler: LogHandler {
    let sink: DaemonLogSink
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        sink.write(level: level, message.description)
    }
}
