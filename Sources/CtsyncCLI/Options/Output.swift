import ArgumentParser
import Configuration
import Conntrack
import ControlProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `-o text|json|extended[,id]`: how flows are printed.
public struct OutputFormat: ExpressibleByArgument, Equatable, Sendable {
    public enum Style: Equatable, Sendable { case text, json }
    public var style: Style = .text
    public var extended = false
    public var showID = false

    public init() {}

    public init?(argument: String) {
        for part in argument.lowercased().split(separator: ",") {
            switch part {
            case "text", "default": style = .text
            case "json": style = .json
            case "extended": extended = true
            case "id": showID = true
            default: return nil
            }
        }
    }

    public static var allValueStrings: [String] { ["text", "json", "extended", "id"] }

    var textFormat: FlowTextFormat { FlowTextFormat(extended: extended, showID: showID) }
}

public struct OutputOptions: ParsableArguments {
    @Option(
        name: [.customShort("o"), .customLong("output")],
        help: "Output: text (conntrack's line layout), json (one object per line), extended and id add fields to text; combine with commas."
    )
    public var format: OutputFormat = OutputFormat()

    public init() {}
}

/// Buffered writes to stdout, flushed in large chunks (a list of 100k flows is a few writes).
final class OutputSink {
    private var buffer: [UInt8] = []
    private let limit: Int

    init(limit: Int = 1 << 16) {
        self.limit = limit
        buffer.reserveCapacity(limit + 1024)
    }

    func line(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        buffer.append(10)
        if buffer.count >= limit { flush() }
    }

    /// A line written by `body` straight into the buffer (no String in between).
    func line(_ body: (inout [UInt8]) -> Void) {
        body(&buffer)
        buffer.append(10)
        if buffer.count >= limit { flush() }
    }

    func flush() {
        var offset = 0
        while offset < buffer.count {
            let n = buffer[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    deinit { flush() }
}

/// Prints a conntrack-style summary on stderr, e.g. "ctsync: 3 flow entries have been shown."
func summary(_ text: String) {
    writeStandardError("ctsync: \(text)\n")
}
