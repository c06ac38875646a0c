import Testing

@testable import SyncDaemon

@Suite struct VersionTests {
    @Test func versionIsSet() { #expect(!CtsyncVersion.string.isEmpty) }
}
