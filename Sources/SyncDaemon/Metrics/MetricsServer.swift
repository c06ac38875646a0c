import Configuration
import FlowModel
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// The `Metrics` endpoint: `GET /metrics` over HTTP/1.x on a TCP socket, served from the
/// daemon's own poll loop (non-blocking accept, read and write; no thread). One request per
/// connection, then close. A request has 2 s and 8 KiB to arrive; at most 16 connections are
/// open (a newcomer waits in the kernel's backlog); anything but `GET /metrics` (or `/`) gets a
/// 404 or 405. A scraper that stops reading is dropped after 2 s: the loop never waits for it.
final class MetricsServer {
    static let requestLimit = 8 * 1024
    static let deadlineMilliseconds: Int64 = 2_000
    static let connectionLimit = 16

    let listenDescriptor: Int32
    let address: String
    private(set) var served = 0
    private(set) var refused = 0

    private final class Connection {
        let fd: Int32
        let deadline: Int64
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var answered: Bool { !output.isEmpty }
        init(fd: Int32, deadline: Int64) {
            self.fd = fd
            self.deadline = deadline
        }
    }
    private var connections: [Connection] = []

    init(_ config: MetricsConfig) throws {
        let family = config.address.family == .ipv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError.startup("Metrics: \(SystemCallError.last("socket"))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if config.address.family == .ipv4 {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = config.port.bigEndian
            a.sin_addr.s_addr = config.address.ipv4.bigEndian
            bound = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        } else {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = config.port.bigEndian
            withUnsafeMutableBytes(of: &a.sin6_addr) { raw in
                for i in 0..<8 {
                    raw[i] = UInt8(truncatingIfNeeded: config.address.high >> UInt64(56 - 8 * i))
                    raw[8 + i] = UInt8(truncatingIfNeeded: config.address.low >> UInt64(56 - 8 * i))
                }
            }
            bound = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        let where_ = config.address.family == .ipv4 ? "\(config.address):\(config.port)" : "[\(config.address)]:\(config.port)"
        guard bound == 0 else {
            let error = SystemCallError.last("bind")
            Glibc.close(fd)
            throw DaemonError.startup("Metrics: cannot listen on \(where_): \(error)")
        }
        guard listen(fd, 16) == 0 else {
            let error = SystemCallError.last("listen")
            Glibc.close(fd)
            throw DaemonError.startup("Metrics: \(error)")
        }
        listenDescriptor = fd
        address = where_
    }

    func pollDescriptors() -> [pollfd] {
        var list: [pollfd] = []
        if connections.count < Self.connectionLimit { list.append(pollfd(fd: listenDescriptor, events: Int16(POLLIN), revents: 0)) }
        for c in connections {
            list.append(pollfd(fd: c.fd, events: Int16(c.answered ? POLLOUT : POLLIN), revents: 0))
        }
        return list
    }

    var nextDeadline: Int64? { connections.map(\.deadline).min() }

    /// Accepts, reads, answers and closes as the descriptors allow; `render` makes the body
    /// (Prometheus' text format) once per answered scrape.
    func service(_ ready: [pollfd], now: Int64, render: () -> [UInt8]) {
        for result in ready where result.revents != 0 {
            if result.fd == listenDescriptor {
                acceptNew(now: now)
            } else if let c = connections.first(where: { $0.fd == result.fd }) {
                if c.answered { write(c) } else { read(c, render: render) }
            }
        }
        for c in connections where now >= c.deadline { drop(c) }
    }

    private func acceptNew(now: Int64) {
        while connections.count < Self.connectionLimit {
            let fd = accept(listenDescriptor, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            connections.append(Connection(fd: fd, deadline: now + Self.deadlineMilliseconds))
        }
    }

    private func read(_ c: Connection, render: () -> [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
            drop(c)
            return
        }
        if n > 0 { c.input.append(contentsOf: buffer[0..<n]) }
        guard let end = Self.headerEnd(c.input) else {
            if c.input.count > Self.requestLimit { answer(c, Self.response(status: "431 Request Header Fields Too Large", body: [])) }
            return
        }
        let requestLine = String(decoding: c.input[0..<end].prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        answer(c, Self.respond(to: requestLine, render: render, counted: &served, refused: &refused))
    }

    /// The answer to a request line (`GET /metrics HTTP/1.1`).
    static func respond(to requestLine: String, render: () -> [UInt8], counted: inout Int, refused: inout Int) -> [UInt8] {
        let parts = requestLine.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            refused += 1
            return response(status: "400 Bad Request", body: Array("not an HTTP/1 request\n".utf8))
        }
        let target = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard target == "/metrics" || target == "/" else {
            refused += 1
            return response(status: "404 Not Found", body: Array("ctsyncd serves GET /metrics\n".utf8))
        }
        guard parts[0] == "GET" || parts[0] == "HEAD" else {
            refused += 1
            return response(status: "405 Method Not Allowed", body: Array("GET /metrics\n".utf8), extra: "Allow: GET, HEAD\r\n")
        }
        counted += 1
        let body = render()
        return response(
            status: "200 OK", body: parts[0] == "HEAD" ? [] : body, contentType: "text/plain; version=0.0.4; charset=utf-8",
            length: body.count)
    }

    static func response(
        status: String, body: [UInt8], contentType: String = "text/plain; charset=utf-8", length: Int? = nil, extra: String = ""
    ) -> [UInt8] {
        let head =
            "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(length ?? body.count)\r\n\(extra)Connection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Where the request's header ends (the blank line), if it has arrived.
    static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 3..<bytes.count where bytes[i] == 10 {
            if bytes[i - 1] == 10 || (bytes[i - 1] == 13 && bytes[i - 2] == 10) { return i + 1 }
        }
        return nil
    }

    private func answer(_ c: Connection, _ bytes: [UInt8]) {
        c.output = bytes
        write(c)
    }

    private func write(_ c: Connection) {
        while c.written < c.output.count {
            let n = c.output[c.written...].withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                drop(c)
                return
            }
            c.written += n
        }
        shutdown(c.fd, Int32(SHUT_WR))
        drop(c)
    }

    private func drop(_ c: Connection) {
        guard let index = connections.firstIndex(where: { $0 === c }) else { return }
        Glibc.close(c.fd)
        connections.remove(at: index)
    }

    func close() {
        for c in connections { Glibc.close(c.fd) }
        connections.removeAll()
        Glibc.close(listenDescriptor)
    }
}
