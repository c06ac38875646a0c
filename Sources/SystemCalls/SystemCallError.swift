#if canImport(Glibc)
    import Glibc
#endif

/// A failed system call: what was attempted (with its object, e.g. "bind 198.18.0.1 port 3780")
/// and the errno it returned. The one error type of every socket, pipe and file the daemon and
/// the CLI open outside the kernel's conntrack layer (which has `KernelError`, with netlink hints).
public struct SystemCallError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    /// The error of the call that just failed (reads `errno`).
    public static func last(_ operation: String) -> SystemCallError {
        SystemCallError(operation, errno: Glibc.errno)
    }

    public var description: String { "\(operation): \(errnoText(errno))" }
}

/// `strerror` text for an errno, e.g. "File exists".
public func errnoText(_ e: Int32) -> String {
    String(cString: strerror(e))
}

/// Writes text to standard error unbuffered (safe from any thread, unlike `stderr`).
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        offset += n
    }
}

/// Milliseconds on the monotonic clock: the only clock the daemon's timers read.
public func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
