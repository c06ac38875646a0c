import Configuration

#if canImport(Glibc)
    import Glibc
#endif

/// `ctsyncd --check`: what a start would find wrong with a configuration that parsed, without
/// starting anything (no socket, no lock file, no kernel access).
public enum ConfigCheck {
    public struct Report: Sendable {
        /// Would stop the daemon at start.
        public var errors: [String] = []
        /// Would be logged at start: the parser's warnings and the checks' own.
        public var warnings: [String] = []
        /// One line: the mode, the links, the caches' limit.
        public var summary: String = ""
    }

    public static func check(_ config: DaemonConfig, path: String) -> Report {
        var report = Report()
        report.warnings = config.warnings.map { "\($0)" }
        if let sync = config.sync {
            if sync.auth != nil {
                do {
                    _ = try SyncAuthSetup.authenticator(sync)
                } catch {
                    report.errors.append("\(error)")
                }
            }
            for channel in sync.channels {
                let interface = channel.interface
                if !interface.isEmpty && if_nametoindex(interface) == 0 {
                    report.warnings.append("Sync: interface '\(interface)' does not exist here (yet): the link stays down until it does")
                }
            }
            let links = sync.channels.map { channel -> String in
                switch channel {
                case .udp(let c): return "UDP \(c.localAddress) -> \(c.destination) port \(c.port) on \(c.interface)"
                case .tcp(let c): return "TCP \(c.localAddress) -> \(c.destination) port \(c.port) on \(c.interface)"
                case .multicast(let c): return "multicast \(c.group) port \(c.port) on \(c.interface)"
                }
            }
            report.summary = "\(path): sync mode \(sync.mode.name), \(links.joined(separator: "; ")), HashLimit \(config.general.hashLimit)"
        } else {
            report.summary = "\(path): statistics mode, HashLimit \(config.general.hashLimit)"
        }
        return report
    }
}
