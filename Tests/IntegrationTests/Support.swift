import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What the machine running the tests offers.
enum Host {
    static let isRoot = geteuid() == 0
    static func has(_ tool: String) -> Bool {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }
    static let canUseNamespaces = isRoot && has("ip")
    static let hasConntrackTool = canUseNamespaces && has("conntrack")

    /// The `ctsync` executable built beside this test bundle.
    static let ctsync: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The xctest bundle may be a directory on some layouts.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("ctsync").path
    }()
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var lines: [String] { stdout.split(separator: "\n").map(String.init) }
}

/// Runs a command with its output in files (no pipe deadlock on large output), bounded in time:
/// past `timeout` seconds it is killed and the result says so.
@discardableResult
func run(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
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

/// A network namespace made for one test (`ctt_<tag>_<pid>`), with loopback up, removed by `remove()`.
final class TestNamespace {
    let name: String

    init(_ tag: String) throws {
        name = "ctt_\(tag)_\(getpid())"
        _ = try? run(["ip", "netns", "del", name])
        let made = try run(["ip", "netns", "add", name])
        guard made.status == 0 else { throw NamespaceError(message: "ip netns add \(name): \(made.stderr)") }
        try run(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    struct NamespaceError: Error { var message: String }

    /// Runs a command inside the namespace.
    @discardableResult
    func exec(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
        try run(["ip", "netns", "exec", name] + arguments, input: input, timeout: timeout)
    }

    /// Runs ctsync inside the namespace.
    @discardableResult
    func ctsync(_ arguments: [String], input: String? = nil, timeout: Double = 120) throws -> CommandResult {
        try exec([Host.ctsync] + arguments, input: input, timeout: timeout)
    }

    /// Runs `body` with a kernel table opened inside the namespace.
    func table<T>(_ body: (KernelTable) throws -> T) throws -> T {
        let table = try NetworkNamespace.run(name) { try KernelTable() }
        return try body(table)
    }

    func remove() {
        _ = try? run(["ip", "netns", "del", name])
    }
}

/// One `conntrack -L` line split into its parts: protocol, number, timeout, state, and
/// key=value pairs per direction (the first src= starts the original tuple, the second the reply).
struct ConntrackLine: Equatable {
    var proto: String
    var timeout: Int
    var state: String?
    var original: [String: String] = [:]
    var reply: [String: String] = [:]
    var other: [String: String] = [:]
    var flags: Set<String> = []

    init?(_ line: String) {
        var tokens = line.split(separator: " ").map(String.init)
        if tokens.first?.hasPrefix("ipv") == true { tokens.removeFirst(2) }
        guard tokens.count > 3, UInt8(tokens[1]) != nil else { return nil }
        proto = tokens[0]
        // conntrackd's cache dumps (-i, -e) leave the timeout out.
        let timeout = Int(tokens[2])
        self.timeout = timeout ?? -1
        var rest = tokens.dropFirst(timeout == nil ? 2 : 3)
        if let first = rest.first, !first.contains("=") {
            state = first
            rest = rest.dropFirst()
        }
        var sources = 0
        var seenMark = false
        for token in rest {
            if token.hasPrefix("[") {
                flags.insert(token)
                continue
            }
            let kv = token.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "src" { sources += 1 }
            if kv[0] == "mark" { seenMark = true }
            // ICMP tuples carry an id= too; the flow's own id= comes after mark=.
            let flowWide = ["mark", "zone", "use", "helper", "labels"].contains(kv[0]) || (kv[0] == "id" && seenMark)
            switch (sources, kv[0]) {
            case (_, _) where flowWide: other[kv[0]] = kv[1]
            case (1, _): original[kv[0]] = kv[1]
            default: reply[kv[0]] = kv[1]
            }
        }
    }

    /// The same line with the timeout (which counts down between two reads) set aside.
    var withoutTimeout: ConntrackLine {
        var c = self
        c.timeout = 0
        return c
    }
}

let requiresNamespaces = Testing.ConditionTrait.enabled(
    if: Host.canUseNamespaces, "needs root and iproute2: creates network namespaces and writes the kernel conntrack table")
let requiresConntrackTool = Testing.ConditionTrait.enabled(
    if: Host.hasConntrackTool, "needs root and the conntrack tool (Debian package conntrack) to compare against")
