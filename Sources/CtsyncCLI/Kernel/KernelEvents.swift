import ArgumentParser
import Conntrack
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

nonisolated(unsafe) private var interrupted: sig_atomic_t = 0

/// `ctsync kernel events`: like `conntrack -E -o timestamp`, one line per event, until
/// interrupted, `--count N` events or `--timeout S` seconds.
struct KernelEvents: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print conntrack events (NEW, UPDATE, DESTROY) as they happen.")

    @OptionGroup var filter: FlowFilterOptions
    @OptionGroup var output: OutputOptions

    @Option(name: [.customShort("e"), .customLong("event-mask")], help: "Event types: comma list of NEW, UPDATE, DESTROY (default all).")
    var eventMask: String = "NEW,UPDATE,DESTROY"

    @Flag(name: .customLong("expect"), help: "The expectation table instead of the flows (conntrack's `expect` table).")
    var expect = false

    @Option(name: .customLong("count"), help: "Stop after this many events.")
    var count: Int?

    @Option(name: .customLong("timeout"), help: "Stop after this many seconds.")
    var timeout: Double?

    @Option(name: .customLong("buffer-size"), help: "Socket receive buffer in bytes (SO_RCVBUFFORCE).")
    var bufferSize: Int = 8 << 20

    func validate() throws {
        if expect { try filter.checkForExpectations() }
        if EventTypes(list: eventMask) == nil {
            throw ValidationError("bad event mask '\(eventMask)' for -e/--event-mask: expected a comma list of NEW, UPDATE, DESTROY")
        }
        if let count, count <= 0 { throw ValidationError("--count must be positive, got \(count)") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be positive seconds, got \(timeout)") }
        if bufferSize < 4096 { throw ValidationError("--buffer-size must be at least 4096 bytes, got \(bufferSize)") }
    }

    func run() throws {
        try requireRoot("listening to conntrack events")
        let types = EventTypes(list: eventMask)!
        if expect {
            try expectationEvents(types)
            return
        }
        let listener = try EventListener(types: types, receiveBufferSize: bufferSize)
        // Said once subscribed, so a script can wait for it before it makes events happen.
        summary("listening for \(eventMask.uppercased()) events")
        let criteria = filter.filter
        let format = output.format
        let sink = OutputSink()
        signal(SIGINT) { _ in interrupted = 1 }
        signal(SIGTERM) { _ in interrupted = 1 }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        var shown = 0
        var lost = 0
        loop: while interrupted == 0 {
            var wait: Int32 = 250
            if let deadline {
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { break }
                wait = Int32(min(250, max(1, left * 1000)))
            }
            for event in try listener.next(timeoutMilliseconds: wait) {
                let now = Date().timeIntervalSince1970
                if let flow = event.flow, !criteria.matches(flow) { continue }
                if event == .overrun { lost += 1 }
                sink.line(Self.render(event, at: now, format: format))
                shown += 1
                if let count, shown >= count { break loop }
            }
            // One write per batch of events: timely for a reader, cheap under a burst.
            sink.flush()
        }
        sink.flush()
        summary("\(shown) flow events have been shown." + (lost > 0 ? " Events were lost \(lost) time(s) (overrun)." : ""))
    }

    /// `--expect`: expectation events in conntrack's layout, until the same limits.
    func expectationEvents(_ types: EventTypes) throws {
        let listener = try ExpectationListener(types: types, receiveBufferSize: bufferSize)
        summary("listening for \(eventMask.uppercased()) expectation events")
        signal(SIGINT) { _ in interrupted = 1 }
        signal(SIGTERM) { _ in interrupted = 1 }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        let sink = OutputSink()
        var shown = 0
        loop: while interrupted == 0 {
            if let deadline, deadline.timeIntervalSinceNow <= 0 { break }
            for item in try listener.next(timeoutMilliseconds: 250) {
                let stamp = String(format: "%.6f", Date().timeIntervalSince1970)
                guard let (name, e) = item else {
                    sink.line("[\(stamp)]\t[OVERRUN] events lost (ENOBUFS)")
                    continue
                }
                if let family = filter.filter.family, e.family != family { continue }
                sink.line("[\(stamp)]\t" + ExpectationText.line(e, event: name))
                shown += 1
                if let count, shown >= count { break loop }
            }
            sink.flush()
        }
        sink.flush()
        summary("\(shown) expectation events have been shown.")
    }

    static func render(_ event: FlowEvent, at time: Double, format: OutputFormat) -> String {
        let stamp = String(format: "%.6f", time)
        guard let flow = event.flow else {
            if format.style == .xml { return "<!-- overrun at \(stamp): events lost (ENOBUFS), a resync from a dump is owed -->" }
            if format.style == .json {
                return "{\"event\":\"overrun\",\"timestamp\":\(stamp),\"detail\":\"events lost (ENOBUFS): a resync from a dump is owed\"}"
            }
            return "[\(stamp)]\t[OVERRUN] events lost (ENOBUFS): a resync from a dump is owed"
        }
        if format.style == .json {
            return FlowJSON.encode(flow, extra: [("event", "\"\(event.name.lowercased())\""), ("timestamp", stamp)])
        }
        if format.style == .xml {
            // conntrack -E -o xml: the event type on the element.
            let element = FlowXML.element(flow)
            return "<flow type=\"\(event.name.lowercased())\">" + element.dropFirst("<flow>".count)
        }
        return "[\(stamp)]\t" + format.textFormat.line(flow, event: event.name)
    }
}
