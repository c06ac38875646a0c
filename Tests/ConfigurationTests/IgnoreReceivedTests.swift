import FlowModel
import Testing

@testable import Configuration

/// `Sync { Options { IgnoreReceived { ... } } }`: attributes of the peer's flows dropped on
/// arrival (new in ctsync; conntrackd does not know the option).
@Suite struct IgnoreReceivedTests {
    let link = "UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }"

    func config(_ options: String) -> String {
        "Sync {\n    Mode FTFW { }\n    Options {\n        \(options)\n    }\n    \(link)\n}\n"
    }

    @Test func listsAttributesInAnyCase() throws {
        let parsed = try ConfigFixtures.parse(config("IgnoreReceived { Labels helper MARK SequenceAdjustment }"))
        #expect(parsed.sync?.ignoredReceived == [.labels, .helper, .mark, .sequenceAdjustment])
        #expect(!parsed.inactiveSettings().contains { $0.path.hasPrefix("Sync.Options.IgnoreReceived") })
        #expect(try ConfigFixtures.parse(config("TCPWindowTracking on")).sync?.ignoredReceived == [])
    }

    @Test(arguments: [
        (
            "IgnoreReceived Labels",
            "test.conf:4:24: IgnoreReceived in Sync.Options expects a { list } of attributes (Labels, Helper, Mark, SequenceAdjustment), got 'Labels'"
        ),
        (
            "IgnoreReceived { Labels Zone }",
            "test.conf:4:33: unknown attribute 'Zone' in Sync.Options.IgnoreReceived: expected Labels, Helper, Mark or SequenceAdjustment"
        ),
    ])
    func mistakesAreNamedWithTheirPlace(_ options: String, _ expected: String) {
        #expect(ConfigFixtures.errorText(config(options)) == expected)
    }
}
