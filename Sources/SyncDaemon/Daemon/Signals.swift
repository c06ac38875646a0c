import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

nonisolated(unsafe) private var signalPipeWrite: Int32 = -1

/// SIGTERM, SIGINT and SIGHUP as bytes on a pipe the daemon's loop polls: the handler only
/// writes the signal's number (async-signal-safe), the loop acts on it in its own time.
final class SignalPipe {
    let readDescriptor: Int32
    private let writeDescriptor: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw DaemonError.startup("\(SystemCallError.last("pipe"))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readDescriptor = fds[0]
        writeDescriptor = fds[1]
        signalPipeWrite = fds[1]
        // A parent may have left these blocked (some process launchers do): a daemon that
        // cannot hear SIGTERM cannot stop in order.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&unblock, sig) }
        sigprocmask(SIG_UNBLOCK, &unblock, nil)
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig) { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWrite, &byte, 1)
            }
        }
        signal(SIGPIPE, SIG_IGN)
    }

    /// The signals that arrived since the last call.
    func take() -> [Int32] {
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = buffer.withUnsafeMutableBytes { read(readDescriptor, $0.baseAddress, $0.count) }
        return buffer.prefix(max(0, n)).map { Int32($0) }
    }

    func close() {
        signalPipeWrite = -1
        Glibc.close(readDescriptor)
        Glibc.close(writeDescriptor)
    }
}

extension Daemon {
    func handleSignals() {
        for number in signals?.take() ?? [] {
            switch number {
            case SIGTERM, SIGINT:
                log.notice("signal \(number) received, stopping")
                running = false
            case SIGHUP:
                // logrotate's signal: the log files are opened again at their paths. The
                // configuration is read at start only (restart to apply changes).
                if logSink.reopen() { log.notice("SIGHUP received: log files reopened (the configuration is read at start only)") }
                do {
                    try environment.flowLog?.reopen()
                } catch {
                    log.error("SIGHUP: \(error)")
                }
            default: break
            }
        }
    }
}
