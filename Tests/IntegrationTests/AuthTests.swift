import Conntrack
import Foundation
import SyncProtocol
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `Auth` on the sync link (security review, finding 4 and the authentication it asks for):
/// a pair with a shared key replicates over UDP, multicast and TCP; bytes from the peer's own
/// address that are not sealed with the key (a forged HELLO, a forged flow) change nothing;
/// a frame sealed with the key by another program (the format of docs/security.md) is taken
/// once and refused when replayed.
@Suite(.serialized, requiresNamespaces) struct AuthTests {
    static let secretA = String(repeating: "5a", count: 32)
    static let secretB = String(repeating: "c3", count: 32)

    /// A private key file in a fresh directory; returns its path.
    static func keyFile(_ lines: String, mode: mode_t = 0o600) throws -> String {
        let directory = NSTemporaryDirectory() + "ctt-key-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/sync.key"
        try lines.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode)
        return path
    }

    static func authBlock(_ path: String, algorithm: String = "HMAC-SHA256") -> String {
        "Auth {\n KeyFile \(path)\n Algorithm \(algorithm)\n }"
    }

    func auth(_ daemon: TestDaemon) throws -> [String: Any] {
        ((try daemon.stats()["sync"] as? [String: Any])?["auth"] as? [String: Any]) ?? [:]
    }

    /// Python that seals `payload` as ctsync does (HMAC-SHA256; HKDF-SHA256 for the key) and
    /// sends it, `count` times, from `source` to `destination`'s sync port.
    static let sealer = """
        import hmac, hashlib, socket, struct, sys, time
        source, destination, secret, payload, count, node = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        prk = hmac.new(b"ctsync sync frame v1", secret, hashlib.sha256).digest()
        key = hmac.new(prk, b"ctsync hmac-sha256" + b"\\x01", hashlib.sha256).digest()
        header = b"ctsA" + bytes([1, 1, 1, 0]) + struct.pack(">IQQHH", node, int(time.time() * 1000), 1, len(payload), 0)
        frame = header + payload + hmac.new(key, header + payload, hashlib.sha256).digest()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, 0))
        for _ in range(count):
            s.sendto(frame, (destination, 3780))
        print("sent")
        """

    @Test(arguments: ["UDP", "Multicast", "TCP"])
    func sealedPairReplicatesAndUnsealedBytesChangeNothing(_ transport: String) throws {
        let pair = try SyncPair("au\(transport.prefix(1).lowercased())")
        defer { pair.remove() }
        // A rollover in progress: a seals with key 1, b with key 2; each accepts both.
        let keysA = try Self.keyFile("1 \(Self.secretA)\n2 \(Self.secretB)\n")
        let keysB = try Self.keyFile("2 \(Self.secretB)\n1 \(Self.secretA)\n")
        let (da, db) = try pair.daemons(
            multicast: transport == "Multicast", transport: transport == "TCP" ? "TCP" : "UDP",
            syncExtra: (Self.authBlock(keysA, algorithm: "ChaCha20-Poly1305"), Self.authBlock(keysB, algorithm: "ChaCha20-Poly1305")))
        defer {
            da.stop()
            db.stop()
        }
        try da.start()
        try db.start()
        let flows = burst(300)
        try pair.a.table { _ = try $0.write(flows, operation: .create) }
        #expect(try eventually(within: 10) { try db.externalCount() == 300 }, "\(String(describing: try? db.stats()))")
        let restarts = (try db.stats()["sync"] as? [String: Any])?["peer_restarts"] as? Int
        // From a's own address (origin checks pass), unsealed: a HELLO that once emptied the
        // external cache, and a flow.
        let hello = hexString(SyncWire.encode(SyncMessage(sequence: 1, hello: [.hello], body: .alive)))
        let destination = transport == "Multicast" ? "225.0.0.50" : "198.18.254.2"
        for message in [hello, OriginTests.forgedMessage(port: 5555)] {
            try OriginTests.send(message, from: "198.18.254.1", to: destination, tcp: transport == "TCP", in: pair.a)
        }
        if transport == "TCP" {
            // Not frames: the connection is closed as unframeable, never read as sync.
            #expect(try eventually(within: 5) { ((try db.stats()["sync"] as? [String: Any])?["datagrams_received"] as? Int ?? 0) > 0 })
        } else {
            #expect(try eventually(within: 5) { (try auth(db)["malformed"] as? Int ?? 0) >= 2 }, "\(String(describing: try? auth(db)))")
        }
        #expect(try db.externalCount() == 300)
        #expect(try !db.externalCache().contains { $0.original.sourcePort == 5555 })
        #expect((try db.stats()["sync"] as? [String: Any])?["peer_restarts"] as? Int == restarts)
        // Still in sync afterwards: a destroy and new flows arrive.
        try pair.a.table { _ = try $0.write(Array(flows[0..<100]), operation: .delete) }
        #expect(try eventually(within: 10) { try db.externalCount() == 200 })
        let accepted = try auth(db)["accepted"] as? Int ?? 0
        #expect(accepted > 0)
        #expect(try auth(db)["algorithm"] as? String == "ChaCha20-Poly1305")
    }

    @Test func aFrameSealedWithTheKeyIsTakenOnceOthersAreRefused() throws {
        let pair = try SyncPair("auf")
        defer { pair.remove() }
        let keys = try Self.keyFile("1 \(Self.secretA)\n")
        let (_, db) = try pair.daemons(syncExtra: ("", Self.authBlock(keys)))
        defer { db.stop() }
        try db.start()
        let payload = OriginTests.forgedMessage(port: 6666)
        func seal(_ secret: String, count: Int = 1, node: Int = 99) throws {
            let r = try pair.a.exec(["python3", "-c", Self.sealer, "198.18.254.1", "198.18.254.2", secret, payload, "\(count)", "\(node)"])
            try #require(r.status == 0, "python: \(r.stderr)")
        }
        // Another key: refused, nothing taken.
        try seal(Self.secretB)
        #expect(try eventually(within: 5) { try auth(db)["bad_tag"] as? Int == 1 }, "\(String(describing: try? auth(db)))")
        #expect(try db.externalCount() == 0)
        // The key, sent three times: taken once, twice refused as replays.
        try seal(Self.secretA, count: 3)
        #expect(try eventually(within: 5) { try db.externalCache().contains { $0.original.sourcePort == 6666 } })
        #expect(try eventually(within: 5) { try auth(db)["replayed"] as? Int == 2 }, "\(String(describing: try? auth(db)))")
        #expect(try auth(db)["accepted"] as? Int == 1)
        #expect(db.stderr.contains("sync frames sealed with HMAC-SHA256, key id 1"), "\(db.stderr)")
        #expect(eventually(within: 12) { db.stderr.contains("sync frames refused by authentication") }, "\(db.stderr)")
    }

    @Test func aKeyFileOthersCanReadIsRefused() throws {
        let pair = try SyncPair("auk")
        defer { pair.remove() }
        let keys = try Self.keyFile("1 \(Self.secretA)\n", mode: 0o644)
        let (da, _) = try pair.daemons(syncExtra: (Self.authBlock(keys), ""))
        defer { da.stop() }
        #expect(throws: (any Error).self) { try da.start() }
        #expect(da.stderr.contains("chmod 600 \(keys)"), "\(da.stderr)")
    }
}
