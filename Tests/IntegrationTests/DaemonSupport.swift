import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A ctsyncd running in a test namespace with a configuration of its own, in a temporary
/// directory (socket, lock, log). Stopped by `stop()`, by PID.
final class TestDaemon {
    let namespace: TestNamespace
    let directory: String
    let configPath: String
    let process = Process()

    var socketPath: String { directory + "/ctsyncd.ctl" }
    var lockPath: String { directory + "/ctsyncd.lock" }
    var logPath: String { directory + "/ctsyncd.log" }

    /// The default General block; `general` adds lines inside it, `extra` adds sections.
    static func config(directory: String, general: String = "", filter: String? = nil, extra: String = "") -> String {
        let filterBlock =
            filter ?? """
                Filter From Userspace {
                    Address Ignore {
                        IPv4_address 127.0.0.1
                        IPv6_address ::1
                    }
                }
                """
        return """
            General {
                HashSize 16384
                HashLimit 262144
                LogFile \(directory)/ctsyncd.log
                Syslog off
                LockFile \(directory)/ctsyncd.lock
                UNIX {
                    Path \(directory)/ctsyncd.ctl
                }
                NetlinkBufferSize 2097152
                NetlinkBufferSizeMaxGrowth 8388608
                \(general)
                \(filterBlock)
            }
            \(extra)
            """
    }

    init(_ namespace: TestNamespace, config: ((String) -> String)? = nil) throws {
        self.namespace = namespace
        directory = NSTemporaryDirectory() + "ctt-daemon-\(namespace.name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        configPath = directory + "/ctsyncd.conf"
        let text = config?(directory) ?? Self.config(directory: directory)
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts the daemon in the foreground (logs on stderr to a file) and waits, bounded,
    /// until it answers on its control socket.
    func start(environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", namespace.name, Host.ctsyncd, "-C", configPath]
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        FileManager.default.createFile(atPath: directory + "/stderr", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/stderr"))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if !process.isRunning { throw DaemonFailure(message: "ctsyncd exited: \(stderr)") }
            if let r = try? ctsyncd(["-s"]), r.status == 0 { return }
            usleep(20_000)
        }
        throw DaemonFailure(message: "ctsyncd did not answer within 20 s: \(stderr)")
    }

    struct DaemonFailure: Error { var message: String }

    var stderr: String { (try? String(contentsOfFile: directory + "/stderr", encoding: .utf8)) ?? "" }

    /// Runs `ctsyncd -C CONFIG ARGS` (a client request) in the namespace.
    @discardableResult
    func ctsyncd(_ arguments: [String], timeout: Double = 60) throws -> CommandResult {
        try namespace.exec([Host.ctsyncd, "-C", configPath] + arguments, timeout: timeout)
    }

    /// One of conntrackd's action flags (`-f -R -B -n -t ...`): true when it succeeded and, as
    /// with conntrackd, printed nothing.
    func quietly(_ arguments: [String]) throws -> Bool {
        let r = try ctsyncd(arguments)
        return r.status == 0 && r.stdout.isEmpty
    }

    /// The internal cache as flows, through `ctsync cache internal -o json`.
    func internalCache() throws -> [Flow] {
        let r = try namespace.ctsync(["cache", "internal", "-o", "json", "-C", configPath])
        guard r.status == 0 else { throw DaemonFailure(message: "cache dump failed: \(r.stderr)") }
        return try r.lines.map(FlowJSON.decode)
    }

    /// The daemon's statistics as JSON.
    func stats() throws -> [String: Any] {
        let r = try namespace.ctsync(["stats", "-o", "json", "-C", configPath])
        guard r.status == 0, let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw DaemonFailure(message: "stats failed: \(r.stderr)")
        }
        return o
    }

    /// Stops the daemon with SIGTERM (by PID) and waits, bounded, for it to exit.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
