import ArgumentParser
import Configuration
import ControlProtocol
import SystemCalls

/// How to reach the running daemon: through its configuration (`-C`, as ctsyncd and
/// conntrackd take it) or a socket path given directly.
struct DaemonOptions: ParsableArguments {
    @Option(name: [.customShort("C"), .customLong("config")], help: "The daemon's configuration file (its UNIX Path is the control socket).")
    var config: String = DaemonConfig.defaultPath

    @Option(name: .customLong("socket"), help: "The control socket path (overrides -C).")
    var socket: String?

    func socketPath() throws -> String {
        if let socket { return socket }
        do {
            return try DaemonConfig.load(path: config).general.unixPath
        } catch {
            throw CLIError.usage("\(error)")
        }
    }

    /// Sends a request and returns the answer's payload; failures become CLI errors (exit 1).
    func send(_ request: ControlRequest, timeoutSeconds: Int = 60) throws -> [UInt8] {
        let path = try socketPath()
        do {
            return try ControlClient.send(request, path: path, timeoutSeconds: timeoutSeconds)
        } catch {
            throw CLIError.failure("\(error)")
        }
    }
}
