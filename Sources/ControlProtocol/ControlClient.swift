import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Sends one request to a daemon's control socket and reads the whole answer.
public enum ControlClient {
    /// A ctsync (JSON) request: the answer's status line decides success.
    public static func send(_ request: ControlRequest, path: String, timeoutSeconds: Int = 60) throws(ControlError) -> [UInt8] {
        let answer = try exchange(Array(request.encoded()), path: path, timeoutSeconds: timeoutSeconds)
        guard let newline = answer.firstIndex(of: 10) else {
            throw .failed("the daemon closed the connection without answering")
        }
        let header = Data(answer[..<newline])
        guard let object = try? JSONSerialization.jsonObject(with: header) as? [String: Any],
            let status = object["status"] as? String
        else { throw .failed("unreadable answer from the daemon") }
        if status != "ok" { throw .failed(object["message"] as? String ?? "the daemon refused the request") }
        return Array(answer[(newline + 1)...])
    }

    /// A conntrackd-style request (4-byte code), answered with text until EOF.
    public static func sendLegacy(code: Int32, path: String, timeoutSeconds: Int = 60) throws(ControlError) -> [UInt8] {
        var value = code
        let bytes = withUnsafeBytes(of: &value) { Array($0) }
        return try exchange(bytes, path: path, timeoutSeconds: timeoutSeconds)
    }

    /// Connects, writes `request`, reads until EOF, all within the timeout.
    public static func exchange(_ request: [UInt8], path: String, timeoutSeconds: Int) throws(ControlError) -> [UInt8] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(SystemCallError("socket", errno: errno)) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .failed("UNIX socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw .notRunning(path: path, errno: errno) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var offset = 0
        while offset < request.count {
            let n = request[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw errno == EAGAIN ? .timedOut(seconds: timeoutSeconds) : .system(SystemCallError("send", errno: errno))
            }
            offset += n
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                answer.append(contentsOf: chunk[0..<n])
            } else if n == 0 {
                return answer
            } else if errno != EINTR {
                throw errno == EAGAIN ? .timedOut(seconds: timeoutSeconds) : .system(SystemCallError("receive", errno: errno))
            }
        }
    }
}
