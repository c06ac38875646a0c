import ArgumentParser
import Configuration
import Conntrack
import ControlProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `-o`: one vocabulary for every command. `text` (conntrack's line layout, the default),
/// `extended` and `id` (fields added to text; combine with commas: `-o extended,id`), `json`
/// (one object per line), `xml` (libnetfilter_conntrack's, as `conntrack -o xml`). Commands that
/// print a report rather than flows take `text` and `json` and refuse the rest by name.
public struct OutputFormat: ExpressibleByArgument, Equatable, Sendable, CustomStringConvertible {
    public enum Style: String, Equatable, Sendable { case text, json, xml }
    public var style: Style = .text
    public var extended = false
    public var showID = false

    public init() {}

    public init?(argument: String) {
        var styles: Set<Style> = []
        for part in argument.lowercased().split(separator: ",", omittingEmptySubsequences: false) {
            switch part {
            case "text", "default": styles.insert(.text)
            case "json": styles.insert(.json)
            case "xml": styles.insert(.xml)
            case "extended": extended = true
            case "id": showID = true
            default: return nil
            }
        }
        // One style at a time; extended and id only say more in text.
        guard styles.count <= 1 else { return nil }
        style = styles.first ?? .text
        if style != .text && (extended || showID) { return nil }
    }

    public static var allValueStrings: [String] { ["text", "extended", "id", "json", "xml"] }

    /// What help shows as the default, and what an error names.
    public var description: String {
        var parts: [String] = []
        if style != .text || (!extended && !showID) { parts.append(style.rawValue) }
        if extended { parts.append("extended") }
        if showID { parts.append("id") }
        return parts.joined(separator: ",")
    }

    var textFormat: FlowTextFormat { FlowTextFormat(extended: extended, showID: showID) }
}

/// `-o` for commands that print flows: every value.
public struct OutputOptions: ParsableArguments {
    @Option(
        name: [.customShort("o"), .customLong("output")],
        help: ArgumentHelp(
            "text (conntrack's line layout), extended or id (fields added to text; combine as extended,id), json (one object a line) or xml.",
            valueName: "format")
    )
    public var format: OutputFormat = OutputFormat()

    public init() {}
}

/// `-o` for commands that print a count, a summary or statistics: `text` or `json`.
public struct ReportOutputOptions: ParsableArguments {
    /// `text` or `json` (help lists just these two).
    public struct Format: ExpressibleByArgument, Equatable, Sendable, CustomStringConvertible {
        var style: OutputFormat.Style = .text
        public init() {}
        public init?(argument: String) {
            switch argument.lowercased() {
            case "text", "default": style = .text
            case "json": style = .json
            default: return nil
            }
        }
        public static var allValueStrings: [String] { ["text", "json"] }
        public var description: String { style.rawValue }
    }

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("text or json.", valueName: "format"))
    var output: Format = Format()

    public init() {}

    /// As an `OutputFormat` (never extended, id or xml).
    public var format: OutputFormat {
        var format = OutputFormat()
        format.style = output.style
        return format
    }
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
