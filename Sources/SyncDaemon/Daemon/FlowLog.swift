import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// conntrackd's stats mode (`Stats { LogFile ...; Syslog ... }`): one line per flow that ends,
/// `[ctime]\t[DESTROY] ipv4     2 tcp      6 src=... packets=... bytes=...`, in the conntrack
/// tool's layout with the layer 3 shown, so existing log parsers keep working. Line-buffered.
final class FlowLog {
    private var file: UnsafeMutablePointer<FILE>?
    private let path: String?
    private let toSyslog: Bool
    private let format = FlowTextFormat(extended: true)
    private(set) var written = 0

    init(_ config: StatsConfig) throws {
        path = config.logFile
        if let path { file = try DaemonLogSink.openAppending(path, what: "Stats LogFile") }
        toSyslog = config.syslogFacility != nil
        if let facility = config.syslogFacility { openlog("ctsyncd", LOG_PID, DaemonLogSink.facility(named: facility)) }
    }

    deinit { if let file { fclose(file) } }

    /// SIGHUP (logrotate): the file is opened again at its path; the old one stays in use if
    /// that fails.
    func reopen() throws {
        guard let path else { return }
        let fresh = try DaemonLogSink.openAppending(path, what: "Stats LogFile")
        if let file { fclose(file) }
        file = fresh
    }

    /// Records a flow that ended (the kernel's destroy event: counters included when the
    /// kernel keeps them, `nf_conntrack_acct`).
    func ended(_ flow: Flow) {
        var flow = flow
        flow.timeout = nil  // as `conntrack -E` shows a destroy
        let line = format.line(flow, event: "DESTROY")
        written += 1
        if let file {
            var now = time(nil)
            var buffer = [CChar](repeating: 0, count: 32)
            ctime_r(&now, &buffer)
            let when = String(cString: buffer).trimmingCharacters(in: .newlines)
            fputs("[\(when)]\t\(line)\n", file)
        }
        if toSyslog { line.withCString { withVaList([$0]) { vsyslog(LOG_INFO, "%s", $0) } } }
    }
}
