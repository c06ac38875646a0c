import Foundation

/// What one commit did, as the daemon reports it (`ctsyncd -c`, `ctsync commit`).
public struct CommitReport: Codable, Sendable, Equatable {
    public var attempted = 0
    public var created = 0
    public var updated = 0
    public var failed = 0
    public var seconds = 0.0
    /// The kernel's errors for the flows that failed: "errno text" → count.
    public var errors: [String: Int] = [:]
    /// The expectations committed after the flows (`ExpectationSync`); nil when none were.
    public var expectations: Expectations?

    /// An expectation commit's figures.
    public struct Expectations: Codable, Sendable, Equatable {
        public var attempted = 0
        public var created = 0
        public var failed = 0
        public var seconds = 0.0
        public init() {}
    }

    public init() {}

    /// The report as the control socket carries it.
    public var json: String { (try? JSONEncoder().encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}" }

    /// One line for people: what was committed, how fast.
    public var summary: String {
        let rate = seconds > 0 ? " (\(Int(Double(created + updated) / seconds)) flows/s)" : ""
        var line =
            "committed \(attempted) flows: \(created) created, \(updated) updated, \(failed) failed, in "
            + String(format: "%.3f s", seconds) + rate
        if !errors.isEmpty {
            line += "; errors: " + errors.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
        }
        if let e = expectations {
            let expectationLine =
                "committed \(e.attempted) expectations: \(e.created) created, \(e.failed) failed, in " + String(format: "%.3f s", e.seconds)
            return attempted == 0 && created + updated + failed == 0 && seconds == 0 ? expectationLine : line + "; " + expectationLine
        }
        return line
    }
}
