import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// What the daemon answers to one request.
public struct ControlReply: Sendable {
    public var ok: Bool
    /// For failures: what went wrong, in words.
    public var message: String?
    public var payload: [UInt8]
    /// Set when the answer comes later (a commit): the connection waits, without a deadline,
    /// until the daemon calls `ControlServer.complete(token:with:)`.
    public var deferredToken: Int?
    /// Set for an answer written as the client reads it (a dump): after `payload`, chunk after
    /// chunk, so that a big cache is never held as one answer in memory.
    var stream: ControlStream?

    static func success(stream: ControlStream) -> ControlReply { ControlReply(ok: true, payload: [], stream: stream) }
    public static func success(_ text: String = "") -> ControlReply { ControlReply(ok: true, payload: Array(text.utf8)) }
    public static func deferred(token: Int) -> ControlReply { ControlReply(ok: true, payload: [], deferredToken: token) }
    public static func success(bytes: [UInt8]) -> ControlReply { ControlReply(ok: true, payload: bytes) }
    public static func failure(_ message: String) -> ControlReply { ControlReply(ok: false, message: message, payload: []) }
}

/// An answer produced in chunks while the client reads. `produce` appends the next chunk and
/// returns false once it has appended the last; `finish` runs once the answer is over, written
/// or abandoned (the client went away or stopped reading).
final class ControlStream: @unchecked Sendable {  // made and used on the loop thread only
    private let produce: (inout [UInt8]) -> Bool
    private var finish: (() -> Void)?
    init(produce: @escaping (inout [UInt8]) -> Bool, finish: @escaping () -> Void) {
        self.produce = produce
        self.finish = finish
    }
    /// Appends the next chunk; false when that was the last.
    func next(into output: inout [UInt8]) -> Bool {
        let more = produce(&output)
        if !more { end() }
        return more
    }
    func end() {
        finish?()
        finish = nil
    }
    deinit { finish?() }
}

/// The daemon's UNIX control socket, served from the daemon's own poll loop: non-blocking
/// accept, read, and write; one request per connection; a size limit and a deadline per
/// request; a malformed request gets an error answer, never a crash.
///
/// Two request forms share the socket. conntrackd's: one native-endian 4-byte request code
/// (so conntrackd's own client works against ctsyncd), answered with text until EOF. ctsync's:
/// one JSON object on one line (`ControlRequest.encoded()`), answered with a JSON status line
/// (`{"status":"ok"}` or `{"status":"error","message":...}`) and then the payload until EOF.
final class ControlServer {
    let path: String
    let listenDescriptor: Int32
    static let requestLimit = 64 * 1024
    static let requestDeadlineMilliseconds: Int64 = 5_000

    private final class Connection {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var answered = false
        /// The client is still sending a request we refused: read and drop the rest before
        /// closing, so the close does not reset the connection and lose our answer.
        var discarding = false
        var inputClosed = false
        /// Waiting for a deferred answer, in the request's form (legacy or JSON).
        var pendingToken: Int?
        var pendingLegacy = false
        let deadline: Int64
        /// When the answer last moved: a client that stops reading is dropped after
        /// `writeStallMilliseconds` (it held a whole dump in memory).
        var lastProgress: Int64
        /// The rest of a streamed answer, produced as `output` drains.
        var stream: ControlStream?
        /// Whether there is anything left to write.
        var hasOutput: Bool { written < output.count || stream != nil }
        init(fd: Int32, deadline: Int64, now: Int64) {
            self.fd = fd
            self.deadline = deadline
            lastProgress = now
        }
    }
    private var connections: [Int32: Connection] = [:]
    private(set) var readFailures = 0
    /// Answers abandoned because the client stopped reading (or made room for a newcomer).
    private(set) var stalledClients = 0
    /// `accept` failed for want of descriptors: the listener rests until then (polling it
    /// meanwhile would spin the loop at 100 % CPU).
    private var acceptPausedUntil: Int64?
    private var now: Int64 = 0
    static let connectionLimit = 64
    static let writeStallMilliseconds: Int64 = 5_000
    static let acceptPauseMilliseconds: Int64 = 100
    private(set) var unknownRequests = 0

    /// Binds the socket (replacing a stale socket file: the caller holds the lock file, so no
    /// other daemon owns it), mode 0600, and listens.
    init(path: String, backlog: Int) throws(ControlError) {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .system(SystemCallError("socket", errno: errno)) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            Glibc.close(fd)
            throw .failed("UNIX socket path too long (\(bytes.count) bytes, at most 107): \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        // Only a stale socket is replaced: a file of another kind is not ours to delete, and a
        // socket someone answers on belongs to a live daemon (with another lock file).
        var status = stat()
        if lstat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFSOCK else {
                Glibc.close(fd)
                throw .failed("\(path) exists and is not a socket: not replacing it (UNIX Path)")
            }
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let answered = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            Glibc.close(probe)
            guard answered != 0 else {
                Glibc.close(fd)
                throw .failed("another daemon answers on \(path): not taking its control socket over (UNIX Path)")
            }
            unlink(path)
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let oldMask = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(oldMask)
        guard bound == 0 else {
            let e = errno
            Glibc.close(fd)
            throw .system(SystemCallError("bind \(path)", errno: e))
        }
        chmod(path, 0o600)
        guard listen(fd, Int32(max(1, backlog))) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw .system(SystemCallError("listen", errno: e))
        }
        listenDescriptor = fd
    }

    func close() {
        for c in connections.values { Glibc.close(c.fd) }
        connections.removeAll()
        Glibc.close(listenDescriptor)
        unlink(path)
    }

    /// The descriptors to poll: the listening socket, and each connection for reading or writing.
    func pollDescriptors() -> [pollfd] {
        var out: [pollfd] = []
        if acceptPausedUntil == nil && (connections.count < Self.connectionLimit || slowestReader != nil) {
            out.append(pollfd(fd: listenDescriptor, events: Int16(POLLIN), revents: 0))
        }
        for c in connections.values where c.pendingToken == nil {
            var events: Int32 = 0
            if !c.answered || (c.discarding && !c.inputClosed) { events |= Int32(POLLIN) }
            if c.answered && c.hasOutput { events |= Int32(POLLOUT) }
            out.append(pollfd(fd: c.fd, events: Int16(events), revents: 0))
        }
        return out
    }

    /// The answered connection that has read least recently (a candidate to make room).
    private var slowestReader: Connection? {
        connections.values.filter { $0.answered && $0.hasOutput && $0.pendingToken == nil }
            .min { $0.lastProgress < $1.lastProgress }
    }

    /// The earliest request deadline, for the poll timeout.
    var nextDeadline: Int64? {
        let requests = connections.values.filter { $0.pendingToken == nil && (!$0.answered || $0.discarding) }.map(\.deadline)
        let writes = connections.values.filter { $0.answered && $0.hasOutput }.map { $0.lastProgress + Self.writeStallMilliseconds }
        return (requests + writes + [acceptPausedUntil].compactMap { $0 }).min()
    }

    /// Answers the connections waiting for `token`; false when none waits any more.
    @discardableResult
    func complete(token: Int, with reply: ControlReply) -> Bool {
        now = monotonicMilliseconds()
        let waiting = connections.values.filter { $0.pendingToken == token }
        for c in waiting {
            c.lastProgress = now
            c.pendingToken = nil
            answer(c, legacy: c.pendingLegacy, reply)
        }
        return !waiting.isEmpty
    }

    /// Accepts, reads, answers and writes what the poll results allow. `handle` runs on the
    /// caller's thread for each complete request.
    func service(_ results: [pollfd], now: Int64, handle: (ControlRequest, _ legacy: Bool) -> ControlReply) {
        self.now = now
        if let paused = acceptPausedUntil, now >= paused {
            acceptPausedUntil = nil
            acceptAll(now: now)
        }
        for result in results where result.revents != 0 {
            if result.fd == listenDescriptor {
                acceptAll(now: now)
            } else if let c = connections[result.fd], c.pendingToken == nil {
                if c.answered {
                    if c.discarding { discard(c) }
                    flush(c)
                } else {
                    read(c, handle: handle)
                }
            }
        }
        for c in connections.values where c.answered && c.hasOutput && now - c.lastProgress >= Self.writeStallMilliseconds {
            stalledClients += 1
            drop(c)
        }
        for c in connections.values where now >= c.deadline && c.pendingToken == nil {
            if !c.answered {
                readFailures += 1
                answer(c, legacy: c.input.first != UInt8(ascii: "{"), .failure(ControlError.timedOut(seconds: 5).description))
            } else if c.discarding {
                c.discarding = false
                flush(c)
            }
        }
    }

    private func acceptAll(now: Int64) {
        while true {
            // Full: a newcomer (keepalived's `-c`, say) goes before the client that has read its
            // answer least recently; if every slot still waits for its request, newcomers wait
            // in the kernel's backlog until one frees (the listener is not polled meanwhile).
            if connections.count >= Self.connectionLimit {
                guard let slowest = slowestReader else { return }
                stalledClients += 1
                drop(slowest)
            }
            let fd = accept(listenDescriptor, nil, nil)
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    acceptPausedUntil = now + Self.acceptPauseMilliseconds
                }
                return
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            connections[fd] = Connection(fd: fd, deadline: now + Self.requestDeadlineMilliseconds, now: now)
        }
    }

    private func read(_ c: Connection, handle: (ControlRequest, Bool) -> ControlReply) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        var sawEOF = false
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(c.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                c.input.append(contentsOf: chunk[0..<n])
                if c.input.count > Self.requestLimit {
                    c.discarding = true
                    answer(c, legacy: c.input.first != UInt8(ascii: "{"), .failure(ControlError.tooLarge(limit: Self.requestLimit).description))
                    return
                }
                continue
            }
            if n == 0 { sawEOF = true }
            if n < 0 && errno != EAGAIN && errno != EINTR {
                readFailures += 1
                drop(c)
                return
            }
            break
        }
        guard let first = c.input.first else {
            if sawEOF { drop(c) }
            return
        }
        if first == UInt8(ascii: "{") {
            guard let newline = c.input.firstIndex(of: 10) ?? (sawEOF ? c.input.endIndex : nil) else { return }
            let reply: ControlReply
            do {
                reply = handle(try ControlRequest.decode(Data(c.input[..<newline])), false)
            } catch {
                unknownRequests += 1
                reply = .failure(error.description)
            }
            answer(c, legacy: false, reply)
        } else {
            guard c.input.count >= 4 else {
                if sawEOF { answer(c, legacy: true, .failure("request of \(c.input.count) bytes: expected a 4-byte request code")) }
                return
            }
            let code = c.input.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            if let request = ControlRequest(legacyCode: code) {
                answer(c, legacy: true, handle(request, true))
            } else {
                unknownRequests += 1
                answer(c, legacy: true, .failure("unknown request code \(code)"))
            }
        }
    }

    private func answer(_ c: Connection, legacy: Bool, _ reply: ControlReply) {
        if let token = reply.deferredToken {
            c.pendingToken = token
            c.pendingLegacy = legacy
            return
        }
        c.answered = true
        if legacy {
            // conntrackd's clients print what they get; a failure is said in words.
            c.output = reply.ok ? reply.payload : Array("ctsyncd: \(reply.message ?? "request failed")\n".utf8)
        } else {
            var header = reply.ok ? "{\"status\":\"ok\"}\n" : "{\"status\":\"error\",\"message\":\(jsonQuoted(reply.message ?? "failed"))}\n"
            if reply.ok { header.reserveCapacity(header.utf8.count + reply.payload.count) }
            c.output = Array(header.utf8) + reply.payload
        }
        if reply.ok { c.stream = reply.stream } else { reply.stream?.end() }
        if !c.discarding { shutdown(c.fd, Int32(SHUT_RD)) }
        flush(c)
    }

    private func discard(_ c: Connection) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(c.fd, $0.baseAddress, $0.count) }
            if n > 0 { continue }
            if n == 0 || (errno != EAGAIN && errno != EINTR) { c.inputClosed = true }
            return
        }
    }

    private func flush(_ c: Connection) {
        while c.hasOutput {
            if c.written == c.output.count, let stream = c.stream {
                // Drained: the next chunk of a streamed answer.
                c.output.removeAll(keepingCapacity: true)
                c.written = 0
                if !stream.next(into: &c.output) { c.stream = nil }
                continue
            }
            let n = c.output[c.written...].withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                c.written += n
                c.lastProgress = now
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            drop(c)  // the client went away; nothing more to do for it
            return
        }
        if c.discarding && !c.inputClosed { return }
        drop(c)
    }

    private func drop(_ c: Connection) {
        c.stream?.end()
        c.stream = nil
        Glibc.close(c.fd)
        connections.removeValue(forKey: c.fd)
    }
}
