import Configuration
import FlowModel
import SyncAuth

#if canImport(Glibc)
    import Glibc
#endif

/// Turns the `Auth` block into the links' authenticator: the key file read and checked, this
/// node's id, and this run's epoch.
enum SyncAuthSetup {
    static func authenticator(_ sync: SyncConfig) throws -> FrameAuthenticator? {
        guard let auth = sync.auth else { return nil }
        let keys: [SyncKey]
        do {
            keys = try SyncKeyFile.load(auth.keyFile)
        } catch {
            throw DaemonError.startup("Sync.Auth: \(error)")
        }
        let algorithm: AuthAlgorithm = auth.algorithm == .hmacSHA256 ? .hmacSHA256 : .chacha20Poly1305
        return FrameAuthenticator(algorithm: algorithm, keys: keys, nodeId: auth.nodeId ?? defaultNodeId(sync), epoch: epoch())
    }

    /// Without `NodeId`: a hash of the first link's own address (each node of a pair has its
    /// own), never 0.
    static func defaultNodeId(_ sync: SyncConfig) -> UInt32 {
        var text = ""
        if let first = sync.channels.first {
            switch first {
            case .udp(let c), .tcp(let c): text = "\(c.localAddress)"
            case .multicast(let c): text = c.interfaceAddress.map { "\($0)" } ?? c.interface
            }
        }
        var hash: UInt32 = 2_166_136_261
        for byte in text.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return hash == 0 ? 1 : hash
    }

    /// This run's epoch: the wall clock in milliseconds, so a restarted daemon's frames carry
    /// a later epoch than any of its earlier runs (replays of those are refused).
    static func epoch() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }
}
