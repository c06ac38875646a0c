import ArgumentParser
import Configuration
import ControlProtocol
import Foundation
import SystemCalls

/// `ctsync health`: is the daemon in sync with its peer? For keepalived's `track_script` (a
/// node out of sync is not preferred as master) and for monitoring.
struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Say whether the daemon is in sync with its peer (exit 0) or not (exit 1; 2: no daemon or a usage error).",
        discussion: """
            Healthy: the daemon runs, the peer was heard within --peer-timeout, its table has come in whole since \
            it was last asked for (at start, after the peer's restart, after -n), our messages do not wait for an \
            acknowledgement longer than --loss-timeout, and the external cache is not refusing the peer's flows \
            (HashLimit). Prints one line (or a JSON object with -o json) with the reasons.
            """)

    @Option(name: .customLong("peer-timeout"), help: "Seconds within which the peer must have been heard (it sends a keep-alive a second).")
    var peerTimeout: Double = 3

    @Option(name: .customLong("loss-timeout"), help: "Seconds our messages may wait for an acknowledgement (FTFW).")
    var lossTimeout: Double = 5

    @OptionGroup var outputOptions: ReportOutputOptions
    var output: String { outputOptions.format.style.rawValue }

    @OptionGroup var daemon: DaemonOptions

    func validate() throws {
        guard peerTimeout > 0, peerTimeout <= 3600 else {
            throw ValidationError("--peer-timeout must be between 0 and 3600 seconds, got \(peerTimeout)")
        }
        guard lossTimeout > 0, lossTimeout <= 3600 else {
            throw ValidationError("--loss-timeout must be between 0 and 3600 seconds, got \(lossTimeout)")
        }
    }

    func run() throws {
        let request = ControlRequest.health(peerTimeoutMs: Int(peerTimeout * 1000), lossTimeoutMs: Int(lossTimeout * 1000))
        let answer: [UInt8]
        do {
            answer = try ControlClient.send(request, path: try daemon.socketPath(), timeoutSeconds: 5)
        } catch {
            // Not running (or not answering) is a verdict too: unhealthy, said as such.
            let reason = "the daemon does not answer: \(error)"
            if output == "json" {
                let text = "{\"healthy\":false,\"reasons\":[\(jsonString(reason))],\"daemon_running\":false}\n"
                FileHandle.standardOutput.write(Data(text.utf8))
            } else {
                writeStandardError("ctsync: unhealthy: \(reason)\n")
            }
            throw ExitCode(2)
        }
        guard let verdict = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] else {
            throw CLIError.failure("health: the daemon's answer is not a verdict")
        }
        let healthy = verdict["healthy"] as? Bool == true
        if output == "json" {
            FileHandle.standardOutput.write(Data(answer))
        } else if healthy {
            let heard = (verdict["peer_heard_ms_ago"] as? Int).map { String(format: "%.1f s ago", Double($0) / 1000) } ?? "?"
            print(
                "healthy: in sync with the peer (\(verdict["mode"] as? String ?? "?"), peer heard \(heard), \(verdict["external_flows"] as? Int ?? 0) flows in the external cache)"
            )
        } else {
            print("unhealthy: " + ((verdict["reasons"] as? [String]) ?? ["?"]).joined(separator: "; "))
        }
        if !healthy { throw ExitCode(1) }
    }

    private func jsonString(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text])) ?? Data("[\"?\"]".utf8)
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
