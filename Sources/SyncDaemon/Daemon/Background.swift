import Configuration
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `-d`: the daemon runs as a child in its own session; the parent waits until the child
/// says it is ready (or reports why it could not start) and exits with a matching status,
/// so `ctsyncd -d && ...` in a script really means the daemon is up.
public enum Background {
    static let marker = "CTSYNCD_BACKGROUND_CHILD"

    public static var isChild: Bool { ProcessInfo.processInfo.environment[marker] == "1" }

    /// Starts the child and waits for its word. Returns the exit status for the parent.
    public static func start(arguments: [String], timeoutSeconds: Double = 60) -> Int32 {
        let child = Process()
        // The binary's own path, not /proc/self/exe: the kernel names a process after the file
        // it executes, and `pidof ctsyncd`, `pgrep -x ctsyncd`, keepalived's track_process and
        // start-stop-daemon --name look for "ctsyncd", not "exe".
        child.executableURL = URL(fileURLWithPath: executablePath())
        child.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment[marker] = "1"
        child.environment = environment
        let ready = Pipe()
        let errors = Pipe()
        child.standardOutput = ready
        child.standardError = errors
        child.standardInput = FileHandle.nullDevice
        do {
            try child.run()
        } catch {
            writeStandardError("ctsyncd: cannot start the daemon process: \(error)\n")
            return 1
        }
        // The child writes one line on stdout once ready, then detaches from the pipe.
        let line = ready.fileHandleForReading.availableData
        if String(decoding: line, as: UTF8.self).hasPrefix("READY") { return 0 }
        child.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        writeStandardError(message.isEmpty ? "ctsyncd: the daemon exited with status \(child.terminationStatus)\n" : message)
        return child.terminationStatus == 0 ? 1 : child.terminationStatus
    }

    /// Where this process's binary is; /proc/self/exe itself if it was replaced or removed
    /// since (a package upgrade).
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return "/proc/self/exe" }
        let path = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.hasSuffix(" (deleted)") ? "/proc/self/exe" : path
    }

    /// Called by the child once it serves requests: tells the parent, then lets go of stdio.
    public static func ready() {
        let message = Array("READY\n".utf8)
        _ = message.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
            dup2(null, 2)
            if null > 2 { close(null) }
        }
    }
}
