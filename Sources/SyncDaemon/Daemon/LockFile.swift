import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon's lock file: held with `flock` for the daemon's life and holding its pid.
///
/// A second daemon on the same file is refused with the holder's pid. A lock left by a
/// process that died is not held by anyone (the kernel drops `flock` locks with their
/// owner), so it is taken over at once, where conntrackd refuses to start until someone
/// deletes the file by hand.
final class LockFile {
    let path: String
    private let fd: Int32

    enum Failure: Error, CustomStringConvertible {
        case held(path: String, pid: String)
        case system(SystemCallError)
        var description: String {
            switch self {
            case .held(let path, let pid):
                return "lock file \(path) is held by another ctsyncd (pid \(pid)): is it already running with this configuration?"
            case .system(let error):
                return "cannot use lock file \(error)"
            }
        }
    }

    init(path: String) throws(Failure) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(.last(path)) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            Glibc.close(fd)
            if e == EWOULDBLOCK {
                let pid = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                throw .held(path: path, pid: pid.isEmpty ? "unknown" : pid)
            }
            throw .system(SystemCallError(path, errno: e))
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd = fd
    }

    /// Removes the file and lets go of the lock.
    func release() {
        unlink(path)
        Glibc.close(fd)
    }
}
