/// The version both executables report.
public enum CtsyncVersion {
    public static let string = "0.1.0"
}

#if canImport(Glibc)
    import Glibc
#endif

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
