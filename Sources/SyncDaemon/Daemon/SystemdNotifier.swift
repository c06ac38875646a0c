import Configuration
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// sd_notify without libsystemd: a datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace). Also reads `WATCHDOG_USEC` to know how often to ping.
struct SystemdNotifier {
    let socketPath: String?
    /// Half the watchdog interval, in milliseconds (systemd's advice), when a watchdog is set.
    let watchdogIntervalMilliseconds: Int64?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let usec = environment["WATCHDOG_USEC"].flatMap(Int64.init), usec > 0 {
            watchdogIntervalMilliseconds = max(1, usec / 2000)
        } else {
            watchdogIntervalMilliseconds = nil
        }
    }

    /// Sends `state` (e.g. "READY=1", "WATCHDOG=1", "STOPPING=1"); false if it could not.
    @discardableResult
    func notify(_ state: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let payload = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { addr in
                payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, addr, length) }
            }
        }
        return sent == payload.count
    }
}
