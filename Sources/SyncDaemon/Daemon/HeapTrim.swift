#if canImport(Glibc)
    import Glibc
#endif

/// Keeps the daemon's resident set following what it holds, not the largest burst it saw.
///
/// glibc raises its mmap threshold to the size of the largest mmapped block freed (up to
/// 32 MB). After the first big transient buffer (a resync's dump, a bulk's messages, a cache's
/// storage growing) is freed, later ones come from the heap instead, and a heap fragmented by
/// them does not give pages back: under steady churn with peer restarts the daemon grew ~18 % in
/// five minutes (scripts/soak.sh). Fixed thresholds keep big blocks in mmap (returned to the
/// system when freed), and a periodic trim returns the free pages the heap still holds.
enum HeapTrim {
    /// Blocks at least this big are mmapped, whatever was freed before.
    static let mmapThreshold: Int32 = 256 << 10
    /// The heap's top is returned once this much of it is free.
    static let trimThreshold: Int32 = 1 << 20
    /// How often `trim` runs from the loop.
    static let intervalMilliseconds: Int64 = 30_000

    // <malloc.h> is not part of Swift's Glibc module: glibc's own entry points, by name.
    private typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    private typealias MallocTrim = @convention(c) (Int) -> Int32
    private static let mallopt: Mallopt? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt").map { unsafeBitCast($0, to: Mallopt.self) }
    private static let mallocTrim: MallocTrim? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim").map {
        unsafeBitCast($0, to: MallocTrim.self)
    }
    /// glibc's <malloc.h> values.
    private static let mTrimThreshold: Int32 = -1
    private static let mMmapThreshold: Int32 = -3

    /// Whether glibc's entry points were found (they are on every glibc system).
    static var isAvailable: Bool { mallopt != nil && mallocTrim != nil }

    static func configure() {
        _ = mallopt?(mMmapThreshold, mmapThreshold)
        _ = mallopt?(mTrimThreshold, trimThreshold)
    }

    /// Returns free heap pages (every arena, not only the top) to the system.
    static func trim() { _ = mallocTrim?(0) }
}
