#if canImport(Glibc)
    import Glibc
#endif

extension FlowTimestamps {
    /// conntrack's `delta-time=`: whole seconds from the start to the stop (or to now).
    public static func deltaSeconds(start: UInt64, stop: UInt64?) -> Int64 {
        let end = stop.map { Int64($0 / 1_000_000_000) } ?? Int64(time(nil))
        return end - Int64(start / 1_000_000_000)
    }

    /// `ctime`'s form of a time in nanoseconds, without its newline (`Sun Dec  6 18:13:18 2026`).
    public static func localTime(_ nanoseconds: UInt64) -> String {
        var seconds = time_t(nanoseconds / 1_000_000_000)
        var buffer = [CChar](repeating: 0, count: 64)
        guard ctime_r(&seconds, &buffer) != nil else { return "" }
        var text = String(cString: buffer)
        if text.hasSuffix("\n") { text.removeLast() }
        return text
    }
}

/// The conntrack tool's one-line layout (`conntrack -L`, `conntrack -E`), so that
/// existing `grep`/`awk` habits keep working on ctsync's output.
public struct FlowTextFormat: Sendable {
    /// Prefix the layer-3 name and number (`-o extended`).
    public var extended = false
    /// Append `id=` (`-o id`).
    public var showID = false
    /// Print the kernel's start and stop times (`-o ktimestamp`: `[start=Sun Dec  6 18:13:18
    /// 2026] [stop=...]`). `delta-time=` is printed whenever the flow has a start time.
    public var kernelTimestamps = false
    /// Print `mark=` (a destroy event's message has none).
    public var showMark = true
    /// How labels print: bit numbers (ctsync's own), or conntrack's names from its label map
    /// (bits without a name left out; an empty map prints none, as conntrack without one).
    public var labels: LabelStyle = .bits

    public enum LabelStyle: Sendable {
        case bits
        case names([Int: String])
    }

    public init(extended: Bool = false, showID: Bool = false) {
        self.extended = extended
        self.showID = showID
    }

    /// One line for a flow; `event` adds the `[NEW]`-style prefix of `conntrack -E`.
    public func line(_ flow: Flow, event: String? = nil) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(200)
        write(flow, event: event, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The same line appended to `out` as bytes, without its newline: a listing of a large
    /// table writes straight into its output buffer, with no String per flow.
    public func write(_ flow: Flow, event: String? = nil, into out: inout [UInt8]) {
        if let event { pad(Array("[\(event)]".utf8), 9, left: true, &out) }
        if extended {
            if event != nil { out.append(32) }
            pad(Array(flow.family.description.utf8), 8, &out)
            out.append(32)
            number(UInt64(flow.family.rawValue), &out)
            out.append(32)
        } else if event != nil {
            out.append(32)
        }
        pad(Array(flow.proto.name.utf8), 8, &out)
        out.append(32)
        number(UInt64(flow.proto.rawValue), &out)
        out.append(32)
        if let timeout = flow.timeout {
            number(UInt64(timeout), &out)
            out.append(32)
        }
        if let state = flow.stateName {
            out.append(contentsOf: state.utf8)
            out.append(32)
        }
        tuple(flow.original, flow, reply: false, &out)
        if let z = flow.originalZone { field("zone-orig=", UInt64(z), &out) }
        if let c = flow.counters { counters(c.originalPackets, c.originalBytes, &out) }
        if !flow.status.contains(.seenReply) { text("[UNREPLIED] ", &out) }
        tuple(flow.reply, flow, reply: true, &out)
        if let z = flow.replyZone { field("zone-reply=", UInt64(z), &out) }
        if let c = flow.counters { counters(c.replyPackets, c.replyBytes, &out) }
        if flow.status.contains(.hwOffload) {
            text("[HW_OFFLOAD] ", &out)
        } else if flow.status.contains(.offload) {
            text("[OFFLOAD] ", &out)
        } else if flow.status.contains(.assured) {
            text("[ASSURED] ", &out)
        }
        if showMark { field("mark=", UInt64(flow.mark), &out) }
        if flow.zone != 0 { field("zone=", UInt64(flow.zone), &out) }
        if let stamps = flow.timestamps {
            if let start = stamps.start { field("delta-time=", UInt64(FlowTimestamps.deltaSeconds(start: start, stop: stamps.stop)), &out) }
            if kernelTimestamps {
                if let start = stamps.start { out.append(contentsOf: "[start=\(FlowTimestamps.localTime(start))] ".utf8) }
                if let stop = stamps.stop { out.append(contentsOf: "[stop=\(FlowTimestamps.localTime(stop))] ".utf8) }
            }
        }
        if let helper = flow.helper {
            text("helper=", &out)
            out.append(contentsOf: helper.utf8)
            out.append(32)
        }
        if let use = flow.use { field("use=", UInt64(use), &out) }
        if showID, let id = flow.id { field("id=", UInt64(id), &out) }
        if !flow.labels.isEmpty {
            switch labels {
            case .bits:
                text("labels=", &out)
                out.append(contentsOf: flow.labels.bits.map(String.init).joined(separator: ",").utf8)
                out.append(32)
            case .names(let names) where !names.isEmpty:
                // libnetfilter_conntrack's: "labels=" and "NAME," each, then the last byte
                // (the comma, or the "=" when no bit has a name) becomes the space.
                text("labels=", &out)
                for name in flow.labels.names(in: names) { out.append(contentsOf: (name + ",").utf8) }
                out.removeLast()
                out.append(32)
            case .names: break
            }
        }
        out.removeLast()
    }

    private func tuple(_ t: Tuple, _ flow: Flow, reply: Bool, _ out: inout [UInt8]) {
        text("src=", &out)
        address(t.source, &out)
        text(" dst=", &out)
        address(t.destination, &out)
        out.append(32)
        if flow.proto == .gre {
            text("srckey=0x", &out)
            out.append(contentsOf: String(t.sourcePort, radix: 16).utf8)
            text(" dstkey=0x", &out)
            out.append(contentsOf: String(t.destinationPort, radix: 16).utf8)
            out.append(32)
        } else if flow.proto.hasPorts {
            field("sport=", UInt64(t.sourcePort), &out)
            field("dport=", UInt64(t.destinationPort), &out)
        } else if flow.proto.isICMP, let icmp = flow.icmp {
            let type = reply ? icmp.replyType(family: flow.family) : icmp.type
            field("type=", UInt64(type), &out)
            field("code=", UInt64(icmp.code), &out)
            field("id=", UInt64(icmp.id), &out)
        }
    }

    private func counters(_ packets: UInt64, _ bytes: UInt64, _ out: inout [UInt8]) {
        field("packets=", packets, &out)
        field("bytes=", bytes, &out)
    }

    @inline(__always)
    private func text(_ s: StaticString, _ out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// `name` (with its `=`), the number and a space.
    private func field(_ name: StaticString, _ value: UInt64, _ out: inout [UInt8]) {
        text(name, &out)
        number(value, &out)
        out.append(32)
    }

    private func number(_ value: UInt64, _ out: inout [UInt8]) {
        if value < 10 {
            out.append(48 + UInt8(value))
            return
        }
        var digits: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            while v > 0 {
                buffer[count] = 48 + UInt8(v % 10)
                v /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(buffer[i]) }
        }
    }

    private func address(_ a: IPAddress, _ out: inout [UInt8]) {
        guard a.family == .ipv4 else {
            out.append(contentsOf: a.description.utf8)
            return
        }
        let v = a.ipv4
        number(UInt64(v >> 24), &out)
        out.append(46)
        number(UInt64((v >> 16) & 0xff), &out)
        out.append(46)
        number(UInt64((v >> 8) & 0xff), &out)
        out.append(46)
        number(UInt64(v & 0xff), &out)
    }

    private func pad(_ s: [UInt8], _ width: Int, left: Bool = false, _ out: inout [UInt8]) {
        let fill = max(0, width - s.count)
        if left { out.append(contentsOf: repeatElement(32, count: fill)) }
        out.append(contentsOf: s)
        if !left { out.append(contentsOf: repeatElement(32, count: fill)) }
    }
}
