import Testing

@testable import Configuration

/// `Sync { Auth { KeyFile ...; Algorithm ...; NodeId ... } }` (new in ctsync).
@Suite struct AuthConfigTests {
    let link = "UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }"

    func config(_ auth: String) -> String {
        "Sync {\n    Mode FTFW { }\n    \(auth)\n    \(link)\n}\n"
    }

    @Test func parsesAndDefaults() throws {
        let full = try ConfigFixtures.parse(config("Auth { KeyFile /etc/ctsyncd/sync.key Algorithm chacha20-poly1305 NodeId 42 }"))
        #expect(full.sync?.auth == AuthConfig(keyFile: "/etc/ctsyncd/sync.key", algorithm: .chacha20Poly1305, nodeId: 42))
        let minimal = try ConfigFixtures.parse(config("Auth {\n KeyFile /k\n }"))
        #expect(minimal.sync?.auth == AuthConfig(keyFile: "/k"))
        #expect(try ConfigFixtures.parse(config("")).sync?.auth == nil)
    }

    @Test(arguments: [
        ("Auth { Algorithm HMAC-SHA256 }", "test.conf:3:5: Auth in Sync needs a KeyFile"),
        ("Auth { KeyFile /k Algorithm md5 }", "test.conf:3:33: Algorithm in Sync.Auth expects HMAC-SHA256 or ChaCha20-Poly1305, got 'md5'"),
        ("Auth { KeyFile /k NodeId 0 }", "test.conf:3:30: NodeId in Sync.Auth expects a node id from 1 to 4294967295, got '0'"),
        ("Auth { KeyFile relative }", "test.conf:3:20: KeyFile in Sync.Auth expects an absolute path"),
    ])
    func mistakesAreNamedWithTheirPlace(_ auth: String, _ expected: String) {
        let text = ConfigFixtures.errorText(config(auth)) ?? ""
        #expect(text.hasPrefix(expected), "\(text)")
    }

    @Test func authBelongsInSync() {
        let text = ConfigFixtures.errorText("General {\n Auth { KeyFile /k }\n}\n") ?? ""
        #expect(text.contains("Auth") && text.contains("Sync"), "\(text)")
    }
}

/// `Sync { Options { UpdateDelay ms } }` (new in ctsync): the coalescing delay.
@Suite struct UpdateDelayConfigTests {
    func config(_ options: String) -> String {
        "Sync {\n    Mode FTFW { }\n    Options {\n        \(options)\n    }\n    UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }\n}\n"
    }

    @Test func defaultsAndValues() throws {
        #expect(try ConfigFixtures.parse(config("TCPWindowTracking off")).sync?.updateDelayMilliseconds == 20)
        #expect(try ConfigFixtures.parse(config("UpdateDelay 0")).sync?.updateDelayMilliseconds == 0)
        #expect(try ConfigFixtures.parse(config("UpdateDelay 250")).sync?.updateDelayMilliseconds == 250)
        let text = ConfigFixtures.errorText(config("UpdateDelay 5000")) ?? ""
        #expect(text.contains("UpdateDelay in Sync.Options expects milliseconds from 0 (off) to 1000, got '5000'"), "\(text)")
    }
}
