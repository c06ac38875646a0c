import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What the machine running the tests offers.
public enum Host {
    public static let isRoot = geteuid() == 0
    public static func has(_ tool: String) -> Bool {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }
    public static let canUseNamespaces = isRoot && has("ip")
    public static let hasConntrackTool = canUseNamespaces && has("conntrack")

    /// In CI (`CI=true`) nothing is skipped: a test whose prerequisite (root, a tool) is
    /// missing runs and fails, so a CI run cannot pass quietly without having tested.
    public static let strict = ProcessInfo.processInfo.environment["CI"] == "true"
    /// Whether a gated test runs: when the condition holds, and always in CI.
    public static func runs(if condition: Bool) -> Bool { condition || strict }

    /// The directory of the executables built beside this test bundle.
    public static let buildDirectory: URL = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The xctest bundle may be a directory on some layouts.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir
    }()
    public static let ctsync = buildDirectory.appendingPathComponent("ctsync").path
    public static let ctsyncd = buildDirectory.appendingPathComponent("ctsyncd").path
}

/// A finished command: its exit status and output.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    /// Both streams, for messages.
    public var output: String { stderr.isEmpty ? stdout : stdout + stderr }
}

/// Runs a command with its output in files (no pipe deadlock on large output), bounded in time:
/// past `timeout` seconds it is killed and the result says so.
@discardableResult
public func run(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/env")
    process.arguments = arguments[0].hasPrefix("/") ? Array(arguments.dropFirst()) : arguments
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ctt-\(getpid())-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out")
    let err = dir.appendingPathComponent("err")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    if let input {
        let inFile = dir.appendingPathComponent("in")
        try input.write(to: inFile, atomically: true, encoding: .utf8)
        process.standardInput = try FileHandle(forReadingFrom: inFile)
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(5_000) }
    var timedOut = false
    if process.isRunning {
        timedOut = true
        process.terminate()
    }
    process.waitUntilExit()
    let stdout = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    var stderr = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
    if timedOut { stderr += "\n[killed after \(timeout) s]" }
    return CommandResult(status: process.terminationStatus, stdout: stdout, stderr: stderr)
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass; returns whether it held.
public func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        usleep(20_000)
    } while Date() < deadline
    return try condition()
}

/// A network namespace made for one test (`ctt_<tag>_<pid>`), with loopback up, removed by `remove()`.
public final class TestNamespace: @unchecked Sendable {
    public let name: String

    public init(_ tag: String) throws {
        name = "ctt_\(tag)_\(getpid())"
        _ = try? run(["ip", "netns", "del", name])
        let made = try run(["ip", "netns", "add", name])
        guard made.status == 0 else { throw NamespaceError(message: "ip netns add \(name): \(made.stderr)") }
        try run(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    public struct NamespaceError: Error {
        public var message: String
        public init(message: String) { self.message = message }
    }

    /// Runs a command inside the namespace.
    @discardableResult
    public func exec(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
        try run(["ip", "netns", "exec", name] + arguments, input: input, timeout: timeout)
    }

    /// Runs ctsync inside the namespace.
    @discardableResult
    public func ctsync(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
        try exec([Host.ctsync] + arguments, input: input, timeout: timeout)
    }

    public func remove() {
        _ = try? run(["ip", "netns", "del", name])
    }
}

/// The real conntrackd (Debian's 1.4.7) started in a namespace in the foreground, so its PID is
/// ours to stop; its output goes to a file. The one way the tests start it.
public final class ConntrackdProcess: @unchecked Sendable {
    public let namespace: String
    public let configPath: String
    public let output: URL
    private let process = Process()
    /// Runs after the process is stopped (e.g. removing its configuration's directory).
    public var onStop: (() -> Void)?

    public init(namespace: String, configPath: String) throws {
        self.namespace = namespace
        self.configPath = configPath
        output = URL(fileURLWithPath: configPath + ".out")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", namespace, "conntrackd", "-C", configPath]
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = process.standardOutput
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// What it printed (its errors, when it did not start).
    public var log: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

    /// `conntrackd -C CONFIG ARGS` in its namespace (a client request to it).
    @discardableResult
    public func client(_ arguments: [String], timeout: Double = 30) throws -> CommandResult {
        try run(["ip", "netns", "exec", namespace, "conntrackd", "-C", configPath] + arguments, timeout: timeout)
    }

    /// Waits (bounded) until it answers `-s`.
    public func answers(within seconds: Double) -> Bool {
        eventually(within: seconds) { ((try? client(["-s"], timeout: 5))?.status ?? 1) == 0 }
    }

    /// `-k`, then SIGTERM and at last SIGKILL by PID while it is still there.
    public func stop() {
        if process.isRunning { _ = try? client(["-k"], timeout: 5) }
        for signal in [SIGTERM, SIGKILL] where process.isRunning {
            kill(process.processIdentifier, signal)
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(20_000) }
        }
        if !process.isRunning { process.waitUntilExit() }
        onStop?()
        onStop = nil
    }
}
