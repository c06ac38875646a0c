import Conntrack
import ControlProtocol
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.serialized, requiresNamespaces) struct CommitTests {
    /// Flows made on a (with NAT, marks, zones, labels) reach b's external cache; b's commit
    /// puts them into b's kernel exactly as they are on a; a second commit updates them.
    @Test func commitInjectsTheExternalCacheWithNAT() throws {
        let pair = try SyncPair("cmt")
        defer { pair.remove() }
        for ns in [pair.a, pair.b] {
            let r = try ns.exec(["nft", "-f", "-"], input: trackingRuleset)
            try #require(r.status == 0, "nft: \(r.stderr)")
        }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = variedFlows()
        let made = try pair.a.table { try $0.write(flows, operation: .create) }
        try #require(made.failures.isEmpty, "creating on a: \(made.failures)")
        // Only the test's flows: with a ct rule in place, the sync link's own traffic is tracked too.
        let keys = Set(flows.map(\.key))
        let onA = try pair.a.table { try $0.dump() }.filter { keys.contains($0.key) }
        try #require(onA.count == flows.count)
        // The kernel set up the NAT itself: the bits are there, so the NAT travels.
        #expect(onA.filter { $0.status.contains(.srcNAT) }.count == 4)
        #expect(onA.filter { $0.status.contains(.dstNAT) }.count == 1)
        #expect(try eventually(within: 10) { try db.externalCount() >= flows.count })
        let external = try db.externalCount()

        let commit = try pair.b.ctsync(["commit", "-C", db.configPath])
        #expect(commit.status == 0, "\(commit.stdout) \(commit.stderr)")
        // The sync link's own flow exists on both sides already: it is updated, the rest created.
        #expect(commit.stdout.contains("committed \(external) flows: "), "\(commit.stdout)")
        #expect(commit.stdout.contains(" 0 failed"), "\(commit.stdout)")
        let onB = try pair.b.table { try $0.dump() }.filter { keys.contains($0.key) }
        #expect(Set(onB.map(essentials)) == Set(onA.map(essentials)))
        for flow in onB {
            // What was left of the peer's timeout, not more.
            let original = onA.first { $0.key == flow.key }
            #expect((flow.timeout ?? 0) > 0 && (flow.timeout ?? 0) <= (original?.timeout ?? 0) + 1)
            if let tcp = flow.tcp { #expect(tcp.originalFlags & TCPInfo.beLiberal != 0) }
        }

        // b's own cache follows its kernel (events paused for the commit, table re-read after).
        #expect(try eventually(within: 5) { keys.isSubset(of: Set(try db.internalCache().map(\.key))) })

        // Again: everything exists now, so everything is updated; conntrackd's client form too.
        let again = try db.ctsyncd(["-c"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("0 created, \(external) updated, 0 failed"), "\(again.stdout)")
        #expect(try pair.b.table { try $0.dump() }.filter { keys.contains($0.key) }.count == flows.count)
    }

    /// CommitTimeout is given to committed flows; a commit while one runs is refused; the
    /// daemon keeps answering during a commit; with the daemon down, commit exits 1.
    @Test func commitTimeoutAndConcurrentCommitRefused() throws {
        let pair = try SyncPair("cmc")
        defer { pair.remove() }
        let (da, db) = try pair.daemons(extra: "CommitTimeout 1234")
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let count = 40_000
        let created = try pair.a.table { try $0.write(burst(count), operation: .create).created }
        try #require(created == count)
        #expect(try eventually(within: 20) { try db.externalCount() == count })

        // Two commits at once, made certain: the daemon is stopped (SIGSTOP) while both
        // requests are written to its control socket, then continued; it reads both in one
        // turn of its loop, so the second arrives while the first runs and must be refused.
        let pid = db.process.processIdentifier
        kill(pid, SIGSTOP)
        let stopped = eventually(within: 5) {
            // /proc/PID/stat: "pid (comm) STATE ...": T when stopped.
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            return stat.split(separator: ")").last?.split(separator: " ").first == "T"
        }
        try #require(stopped, "ctsyncd did not stop")
        let requests = try (0..<2).map { _ in try ControlConnection(path: db.socketPath, request: Array(ControlRequest.commit.encoded())) }
        kill(pid, SIGCONT)
        let answers = requests.map { $0.answer(within: 60) }
        let refused = answers.filter { $0.contains("already in progress") }
        let done = answers.filter { $0.contains("\"created\":\(count)") }
        #expect(refused.count == 1 && done.count == 1, "\(answers)")
        print("concurrent commit refused: \(refused.first ?? "-")")
        let timeouts = try pair.b.table { try $0.dump().map { $0.timeout ?? 0 } }
        #expect(timeouts.count == count)
        #expect(timeouts.allSatisfy { $0 > 1200 && $0 <= 1234 })

        let socket = db.socketPath
        db.stop()
        let down = try pair.b.ctsync(["commit", "--socket", socket])
        #expect(down.status == 1)
        #expect(down.stderr.contains("running"), "\(down.stderr)")
    }

    /// SIGTERM while a commit runs: the daemon lets it finish, the client that asked gets its
    /// report, every flow is in the kernel, and the daemon exits 0.
    @Test func stopWaitsForARunningCommit() throws {
        let pair = try SyncPair("cms")
        defer { pair.remove() }
        let (da, db) = try pair.daemons()
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let count = 80_000
        let created = try pair.a.table { try $0.write(burst(count), operation: .create).created }
        try #require(created == count)
        #expect(try eventually(within: 30) { try db.externalCount() == count })

        let pid = db.process.processIdentifier
        let request = try ControlConnection(path: db.socketPath, request: Array(ControlRequest.commit.encoded()))
        // The committer's thread is named: SIGTERM goes out once it runs.
        func committing() -> Bool {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return tasks.contains { task in
                ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? "").hasPrefix("ctsyncd-commit")
            }
        }
        let deadline = Date().addingTimeInterval(10)
        while !committing() && Date() < deadline { usleep(500) }
        try #require(committing(), "no commit thread seen")
        kill(pid, SIGTERM)
        let answer = request.answer(within: 60)
        #expect(answer.contains("\"status\":\"ok\"") && answer.contains("\"created\":\(count)"), "\(answer)")
        #expect(eventually(within: 20) { !db.process.isRunning })
        db.process.waitUntilExit()
        #expect(db.process.terminationStatus == 0)
        #expect(db.stderr.contains("waiting for the running commit to end before stopping"), "\(db.stderr.suffix(2000))")
        #expect(try pair.b.table { try $0.count() } == count)
    }
}

/// A raw connection to a daemon's control socket: the request is written at once (the daemon
/// may be stopped), the answer read later, bounded in time.
final class ControlConnection {
    let fd: Int32

    init(path: String, request: [UInt8]) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestNamespace.NamespaceError(message: "connect \(path): \(errno)") }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw TestNamespace.NamespaceError(message: "send: \(sent)") }
    }

    /// Everything the daemon answers until it closes the connection (or the time is up).
    func answer(within seconds: Double) -> String {
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
