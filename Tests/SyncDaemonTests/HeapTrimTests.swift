import Testing

@testable import SyncDaemon

@Suite struct HeapTrimTests {
    /// The daemon reaches glibc's mallopt and malloc_trim by name; both exist here, and calling
    /// them is harmless.
    @Test func glibcEntryPointsAreFound() {
        #expect(HeapTrim.isAvailable)
        HeapTrim.configure()
        HeapTrim.trim()
    }
}
