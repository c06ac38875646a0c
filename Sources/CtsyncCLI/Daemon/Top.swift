import ArgumentParser
import Configuration
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

nonisolated(unsafe) private var topInterrupted: sig_atomic_t = 0

/// `ctsync top`: a live view of the daemon, refreshed from its statistics (the control
/// socket's JSON) every interval: event and message rates, caches, links, peer health. Quits on
/// `q` or Ctrl-C. Not on a terminal (or with `--iterations N`), it prints N plain frames and
/// stops, for scripts and tests.
struct TopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "A live view of the daemon: rates, caches, links and peer health (q quits).")

    @OptionGroup var daemon: DaemonOptions

    @Option(name: [.customShort("i"), .long], help: "Seconds between refreshes (0.2 to 60).")
    var interval: Double = 1

    @Option(name: [.customShort("n"), .long], help: "Stop after this many refreshes (default: until q; 1 when not on a terminal).")
    var iterations: Int?

    func validate() throws {
        guard interval >= 0.2 && interval <= 60 else { throw ValidationError("--interval must be between 0.2 and 60 seconds, got \(interval)") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1, got \(iterations)") }
    }

    func run() throws {
        let interactive = isatty(1) == 1 && isatty(0) == 1 && iterations == nil
        let frames = iterations ?? (interactive ? Int.max : 1)
        var saved = termios()
        if interactive {
            // Keys without Enter, no echo; restored on the way out.
            tcgetattr(0, &saved)
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            tcsetattr(0, TCSANOW, &raw)
            signal(SIGINT) { _ in topInterrupted = 1 }
            signal(SIGTERM) { _ in topInterrupted = 1 }
            FileHandle.standardOutput.write(Data("\u{1B}[?25l".utf8))  // hide the cursor
        }
        defer {
            if interactive {
                tcsetattr(0, TCSANOW, &saved)
                FileHandle.standardOutput.write(Data("\u{1B}[?25h\n".utf8))
            }
        }
        var previous: (stats: TopFigures, at: Double)?
        var shown = 0
        while shown < frames && topInterrupted == 0 {
            let answer = try daemon.send(.stats(.general, json: true), timeoutSeconds: 5)
            guard let object = try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] else {
                throw CLIError.failure("the daemon's statistics are not a JSON object")
            }
            let now = Date().timeIntervalSince1970
            let figures = TopFigures(object)
            let rates = previous.map { figures.rates(since: $0.stats, seconds: now - $0.at) }
            let screen = TopScreen.render(figures, rates: rates, socket: (try? daemon.socketPath()) ?? "?", interval: interval)
            FileHandle.standardOutput.write(Data(((interactive ? "\u{1B}[H\u{1B}[2J" : "") + screen).utf8))
            previous = (figures, now)
            shown += 1
            if shown >= frames { break }
            if interactive {
                if Self.waitForQuit(seconds: interval) { break }
            } else {
                usleep(UInt32(interval * 1_000_000))
            }
        }
    }

    /// Waits up to `seconds` for a key on stdin; true when it was `q` or `Q`.
    static func waitForQuit(seconds: Double) -> Bool {
        var descriptor = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(seconds)
        while topInterrupted == 0 {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            if poll(&descriptor, 1, Int32(left * 1000)) > 0 {
                var byte: UInt8 = 0
                if read(0, &byte, 1) == 1 && (byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q")) { return true }
            }
        }
        return true
    }
}

/// The figures `top` shows, read from the statistics' JSON.
struct TopFigures: Equatable {
    var uptime = 0
    var mode: String?
    var inSync = false
    var peerHeardMs: Int?
    var internalFlows = 0
    var externalFlows = 0
    var hashLimit = 0
    var events = 0
    var overruns = 0
    var resyncs = 0
    var sent = 0
    var received = 0
    var retransmitted = 0
    var lost = 0
    var malformed = 0
    var resendQueue = 0
    var commits = 0
    var commitRunning = false
    var links: [Link] = []

    struct Link: Equatable {
        var interface: String
        var kind: String
        var up: Bool
        var current: Bool
        var bytesSent: Int
        var bytesReceived: Int
        var sendErrors: Int
    }

    init(_ o: [String: Any]) {
        func int(_ v: Any?) -> Int { (v as? NSNumber)?.intValue ?? 0 }
        uptime = int(o["uptime_seconds"])
        hashLimit = int(o["hash_limit"])
        internalFlows = int((o["internal"] as? [String: Any])?["active"])
        externalFlows = int((o["external"] as? [String: Any])?["active"])
        let netlink = o["netlink"] as? [String: Any] ?? [:]
        events = int(netlink["events_received"])
        overruns = int(netlink["overruns"])
        resyncs = int(netlink["resyncs"])
        let commit = o["commit"] as? [String: Any] ?? [:]
        commits = int(commit["commits"])
        commitRunning = commit["running"] as? Bool ?? false
        if let sync = o["sync"] as? [String: Any] {
            mode = sync["mode"] as? String
            inSync = sync["in_sync"] as? Bool ?? false
            peerHeardMs = (sync["peer_heard_ms_ago"] as? NSNumber)?.intValue
            sent = int(sync["sent"])
            received = int(sync["received"])
            retransmitted = int(sync["retransmitted"])
            lost = int(sync["lost"])
            malformed = int(sync["malformed"])
            resendQueue = int(sync["resend_queue"])
            links = (sync["links"] as? [[String: Any]] ?? []).map {
                Link(
                    interface: $0["interface"] as? String ?? "?", kind: $0["kind"] as? String ?? "?", up: $0["up"] as? Bool ?? false,
                    current: $0["current"] as? Bool ?? false, bytesSent: int($0["bytes_sent"]), bytesReceived: int($0["bytes_received"]),
                    sendErrors: int($0["send_errors"]))
            }
        }
    }

    /// Per-second rates since an earlier reading.
    func rates(since earlier: TopFigures, seconds: Double) -> TopRates {
        let s = max(seconds, 0.001)
        func rate(_ a: Int, _ b: Int) -> Double { Double(max(0, a - b)) / s }
        var linkRates: [String: (tx: Double, rx: Double)] = [:]
        for link in links {
            if let old = earlier.links.first(where: { $0.interface == link.interface }) {
                linkRates[link.interface] = (rate(link.bytesSent, old.bytesSent), rate(link.bytesReceived, old.bytesReceived))
            }
        }
        return TopRates(
            events: rate(events, earlier.events), sent: rate(sent, earlier.sent), received: rate(received, earlier.received),
            retransmitted: rate(retransmitted, earlier.retransmitted), lost: rate(lost, earlier.lost), links: linkRates)
    }
}

struct TopRates {
    var events: Double
    var sent: Double
    var received: Double
    var retransmitted: Double
    var lost: Double
    var links: [String: (tx: Double, rx: Double)]
}

enum TopScreen {
    static func render(_ f: TopFigures, rates r: TopRates?, socket: String, interval: Double) -> String {
        func per(_ v: Double?) -> String { v.map { String(format: "%9.0f/s", $0) } ?? "        -/s" }
        func bytes(_ v: Double?) -> String {
            guard let v else { return "      -" }
            if v >= 1_048_576 { return String(format: "%5.1f MB/s", v / 1_048_576) }
            if v >= 1024 { return String(format: "%5.1f kB/s", v / 1024) }
            return String(format: "%5.0f  B/s", v)
        }
        var lines: [String] = []
        let heard = f.peerHeardMs.map { String(format: "%.1f s ago", Double($0) / 1000) } ?? "never"
        lines.append("ctsync top - \(socket) - up \(f.uptime) s - every \(interval) s (q quits)")
        if let mode = f.mode {
            lines.append("sync \(mode)   peer heard \(heard)   \(f.inSync ? "in sync" : "NOT in sync")\(f.commitRunning ? "   COMMIT RUNNING" : "")")
        } else {
            lines.append("statistics mode (no Sync)")
        }
        lines.append("")
        lines.append("caches        internal \(f.internalFlows) flows   external \(f.externalFlows) flows   limit \(f.hashLimit)")
        lines.append("kernel events \(per(r?.events))   total \(f.events)   overruns \(f.overruns)   resyncs \(f.resyncs)")
        if f.mode != nil {
            lines.append("messages sent \(per(r?.sent))   received \(per(r?.received))")
            lines.append("         resent \(per(r?.retransmitted))   lost \(per(r?.lost))   lost total \(f.lost)   malformed \(f.malformed)")
            lines.append("resend queue  \(f.resendQueue)   commits \(f.commits)")
            lines.append("")
            lines.append("link              kind  state  sending  out          in           send errors")
            for link in f.links {
                let rate = r?.links[link.interface]
                lines.append(
                    link.interface.padding(toLength: 17, withPad: " ", startingAt: 0) + link.kind.padding(toLength: 6, withPad: " ", startingAt: 0)
                        + (link.up ? "up     " : "DOWN   ") + (link.current ? "yes      " : "         ") + bytes(rate?.tx) + "  "
                        + bytes(rate?.rx) + "  \(link.sendErrors)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
