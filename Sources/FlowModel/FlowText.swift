/// The conntrack tool's one-line layout (`conntrack -L`, `conntrack -E`), so that
/// existing `grep`/`awk` habits keep working on ctsync's output.
public struct FlowTextFormat: Sendable {
    /// Prefix the layer-3 name and number (`-o extended`).
    public var extended = false
    /// Append `id=` (`-o id`).
    public var showID = false

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
        field("mark=", UInt64(flow.mark), &out)
        if flow.zone != 0 { field("zone=", UInt64(flow.zone), &out) }
        if let helper = flow.helper {
            text("helper=", &out)
            out.append(contentsOf: helper.utf8)
            out.append(32)
        }
        if let use = flow.use { field("use=", UInt64(use), &out) }
        if showID, let id = flow.id { field("id=", UInt64(id), &out) }
        if !flow.labels.isEmpty {
            text("labels=", &out)
            out.append(contentsOf: flow.labels.bits.map(String.init).joined(separator: ",").utf8)
            out.append(32)
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
