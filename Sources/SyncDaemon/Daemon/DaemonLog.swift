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
///
/// When stderr is systemd's journal (`$JOURNAL_STREAM` names it), a line is `<4>message`: the
/// journal reads the priority from the prefix and adds the time and pid itself. With `Syslog`
/// on as well, the line goes to syslog only, which reaches the same journal: once, not twice.
final class DaemonLogSink: @unchecked Sendable {
    // Written only before the daemon starts its loop, then read from the daemon thread.
    private let lock = NSLock()
    private var file: UnsafeMutablePointer<FILE>?
    private let filePath: String?
    private(set) var toStderr: Bool
    private(set) var stderrIsJournal: Bool
    private var toSyslog: Bool

    init(
        stderr: Bool, filePath: String?, syslogFacility: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws {
        stderrIsJournal = stderr && Self.isJournal(descriptor: 2, journalStream: environment["JOURNAL_STREAM"])
        toSyslog = syslogFacility != nil
        toStderr = stderr && !(stderrIsJournal && toSyslog)
        self.filePath = filePath
        if let filePath { file = try Self.openAppending(filePath, what: "log file") }
        if let facility = syslogFacility {
            openlog("ctsyncd", LOG_PID, Self.facility(named: facility))
        }
    }

    /// systemd sets `JOURNAL_STREAM=DEVICE:INODE` for a service whose stderr is the journal;
    /// the descriptor is the journal if it is still that file (not redirected since).
    static func isJournal(descriptor: Int32, journalStream: String?) -> Bool {
        guard let journalStream else { return false }
        let parts = journalStream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// The journal's form of a line: the syslog priority in angle brackets, then the message.
    static func journalLine(priority: Int32, _ message: String) -> String {
        "<\(priority)>\(message.replacingOccurrences(of: "\n", with: " "))\n"
    }

    /// SIGHUP (logrotate): the log file is closed and opened again at its path, so lines go to
    /// the new file once the old one was moved away. False, with the error logged, if it
    /// cannot be opened (the old one stays in use).
    @discardableResult
    func reopen() -> Bool {
        guard let filePath else { return true }
        do {
            let fresh = try Self.openAppending(filePath, what: "log file")
            lock.lock()
            let old = file
            file = fresh
            lock.unlock()
            if let old { fclose(old) }
            return true
        } catch {
            write(level: .error, "reopening the log file: \(error)")
            return false
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
        if toStderr { writeStandardError(stderrIsJournal ? Self.journalLine(priority: priority, message) : line) }
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
