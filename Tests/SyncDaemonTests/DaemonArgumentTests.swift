import Configuration
import ControlProtocol
import FlowModel
import Foundation
import Testing

@testable import SyncDaemon

@Suite struct DaemonArgumentTests {
    func parse(_ s: String) throws -> DaemonInvocation {
        try DaemonArguments.parse(s.split(separator: " ").map(String.init))
    }

    @Test func runsTheDaemon() throws {
        #expect(try DaemonArguments.parse([]) == .run(configPath: DaemonConfig.defaultPath, daemonize: false))
        #expect(try parse("-d -C /x.conf") == .run(configPath: "/x.conf", daemonize: true))
    }

    /// The package's configuration first, conntrackd's when the package's is not there.
    @Test func defaultConfiguration() throws {
        #expect(DaemonConfig.defaultPath(exists: { _ in true }) == "/etc/ctsyncd/ctsyncd.conf")
        #expect(DaemonConfig.defaultPath(exists: { _ in false }) == "/etc/conntrackd/conntrackd.conf")
        #expect(try parse("--check -C /x.conf") == .check(configPath: "/x.conf"))
        #expect(try parse("--check") == .check(configPath: DaemonConfig.defaultPath))
    }

    @Test func conntrackdActions() throws {
        #expect(try parse("-C c -i") == .request(configPath: "c", .dump(.internal, format: .text, filter: nil)))
        #expect(try parse("-i ct -x") == .request(configPath: DaemonArguments.defaultConfigPath, .dump(.internal, format: .xml, filter: nil)))
        #expect(try parse("-e -x") == .request(configPath: DaemonArguments.defaultConfigPath, .dump(.external, format: .xml, filter: nil)))
        #expect(try parse("-s") == .request(configPath: DaemonArguments.defaultConfigPath, .stats(.general, json: false)))
        #expect(try parse("-s n") == .request(configPath: DaemonArguments.defaultConfigPath, .stats(.network, json: false)))
        #expect(try parse("-s multicast") == .request(configPath: DaemonArguments.defaultConfigPath, .stats(.link, json: false)))
        #expect(try parse("-f") == .request(configPath: DaemonArguments.defaultConfigPath, .flushCache(nil)))
        #expect(try parse("-f ext") == .request(configPath: DaemonArguments.defaultConfigPath, .flushCache(.external)))
        #expect(try parse("-F") == .request(configPath: DaemonArguments.defaultConfigPath, .flushKernel))
        #expect(try parse("-R ct") == .request(configPath: DaemonArguments.defaultConfigPath, .resync))
        #expect(try parse("-k") == .request(configPath: DaemonArguments.defaultConfigPath, .kill))
        #expect(try parse("-t") == .request(configPath: DaemonArguments.defaultConfigPath, .resetTimers))
        #expect(try parse("-c") == .request(configPath: DaemonArguments.defaultConfigPath, .commit))
        #expect(try parse("-B") == .request(configPath: DaemonArguments.defaultConfigPath, .sendBulk))
        #expect(try parse("-n") == .request(configPath: DaemonArguments.defaultConfigPath, .requestResync))
        // Expectations (ExpectationSync): conntrackd's words, and its request codes.
        let base = DaemonArguments.defaultConfigPath
        #expect(try parse("-i expect -x") == .request(configPath: base, .expectations(.dump(.internal, xml: true))))
        #expect(try parse("-e exp") == .request(configPath: base, .expectations(.dump(.external, xml: false))))
        #expect(try parse("-c expect") == .request(configPath: base, .expectations(.commit)))
        #expect(try parse("-F expect") == .request(configPath: base, .expectations(.flushKernel)))
        #expect(try parse("-R expect") == .request(configPath: base, .expectations(.resync)))
        #expect(try parse("-f expect") == .request(configPath: base, .expectations(.flushCaches(nil))))
        #expect(try parse("-s expect") == .request(configPath: base, .stats(.expect, json: false)))
        for (code, request) in [
            (40, ExpectationRequest.dump(.internal, xml: false)), (41, .dump(.external, xml: false)), (47, .dump(.internal, xml: true)),
            (48, .dump(.external, xml: true)), (38, .flushKernel), (39, .resync), (42, .commit),
        ] as [(Int32, ExpectationRequest)] {
            #expect(ControlRequest(legacyCode: code) == .expectations(request))
        }
        #expect(try parse("-h") == .help)
        #expect(try parse("-v") == .version)
    }

    @Test(arguments: [
        ("-x", "-x must follow -i or -e"),
        ("-i -s", "-s cannot be combined with -i"),
        ("-s bogus", "-s: unknown statistics 'bogus'"),
        ("-f middle", "-f: unknown cache 'middle'"),
        ("-i foo", "-i: unknown target 'foo'"),
        ("-C", "-C needs a configuration file"),
        ("-d -k", "-d starts the daemon; it cannot be combined with -k"),
        ("--frob", "unknown option '--frob'"),
        ("--check -c", "--check validates the configuration; it cannot be combined with -c"),
        ("--check -d", "--check validates the configuration; it cannot be combined with -d"),
    ])
    func usageErrors(_ arguments: String, _ expected: String) {
        do {
            _ = try parse(arguments)
            Issue.record("\(arguments) parsed")
        } catch {
            #expect("\(error)".hasPrefix(expected), "\(error)")
        }
    }

    @Test func legacyCodesMapLikeConntrackd() {
        #expect(ControlRequest(legacyCode: 16) == .dump(.internal, format: .text, filter: nil))
        #expect(ControlRequest(legacyCode: 21) == .stats(.general, json: false))
        #expect(ControlRequest(legacyCode: 20) == .kill)
        #expect(ControlRequest(legacyCode: 46) == .commit)
        #expect(ControlRequest(legacyCode: 99) == nil)
    }

    @Test func jsonRequestsRoundTrip() throws {
        var filter = FlowFilter()
        filter.proto = .tcp
        filter.source = AddressMatch("198.18.0.0/15")
        filter.mark = MarkMatch(value: 1, mask: 0xff)
        let requests: [ControlRequest] = [
            .dump(.internal, format: .json, filter: filter), .stats(.cache, json: true), .flushCache(.external), .flushCache(nil),
            .flushKernel, .resync, .resetTimers, .kill, .commit, .sendBulk, .requestResync,
            .expectations(.dump(.external, xml: true)), .expectations(.dump(.internal, xml: false)), .expectations(.flushKernel),
            .expectations(.resync), .expectations(.commit), .expectations(.flushCaches(nil)), .expectations(.flushCaches(.internal)),
        ]
        for request in requests {
            #expect(try ControlRequest.decode(request.encoded()) == request)
        }
        #expect(throws: ControlError.badRequest("unknown command 'x'")) { try ControlRequest.decode(Data(#"{"command":"x"}"#.utf8)) }
        // Expectation requests that name no known action, or a dump without a cache, are refused.
        for bad in [#"{"command":"expectations"}"#, #"{"command":"expectations","detail":"drop"}"#, #"{"command":"expectations","detail":"dump"}"#] {
            #expect(throws: ControlError.self) { try ControlRequest.decode(Data(bad.utf8)) }
        }
    }
}

/// ctsyncd(8) describes every flag the parser takes (read from the parser's source, so a flag
/// added without its manual entry fails here).
@Suite struct DaemonManualTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test func ctsyncdManualNamesEveryFlag() throws {
        let parser = try String(contentsOfFile: Self.root + "/Sources/SyncDaemon/Daemon/DaemonArguments.swift", encoding: .utf8)
        let manual = try String(contentsOfFile: Self.root + "/docs/man/ctsyncd.8", encoding: .utf8)
        let cases = parser.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("case \"-") }
        let flags = cases.flatMap { line in
            line.split(separator: "\"").enumerated().filter { $0.offset % 2 == 1 }.map(\.element).filter { $0.hasPrefix("-") }
        }
        #expect(flags.count >= 17, "\(flags)")
        let entries = manual.split(separator: "\n").filter { $0.hasPrefix(".B") || $0.hasPrefix(".TP") || $0.contains("\\fB") }
        for flag in flags {
            let escaped = flag.replacingOccurrences(of: "-", with: "\\-")
            #expect(entries.contains { $0.contains(escaped) }, "docs/man/ctsyncd.8 does not describe \(flag)")
        }
    }
}
