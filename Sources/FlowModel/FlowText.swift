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
        var out = ""
        out.reserveCapacity(200)
        if let event { out += pad("[\(event)]", 9, left: true) + " " }
        if extended { out += pad(flow.family.description, 8) + " \(flow.family.rawValue) " }
        out += pad(flow.proto.name, 8) + " \(flow.proto.rawValue) "
        if let timeout = flow.timeout { out += "\(timeout) " }
        if let state = flow.stateName { out += state + " " }
        out += tuple(flow.original, flow, reply: false)
        if let c = flow.counters { out += "packets=\(c.originalPackets) bytes=\(c.originalBytes) " }
        if !flow.status.contains(.seenReply) { out += "[UNREPLIED] " }
        out += tuple(flow.reply, flow, reply: true)
        if let c = flow.counters { out += "packets=\(c.replyPackets) bytes=\(c.replyBytes) " }
        if flow.status.contains(.hwOffload) {
            out += "[HW_OFFLOAD] "
        } else if flow.status.contains(.offload) {
            out += "[OFFLOAD] "
        } else if flow.status.contains(.assured) {
            out += "[ASSURED] "
        }
        out += "mark=\(flow.mark) "
        if flow.zone != 0 { out += "zone=\(flow.zone) " }
        if let helper = flow.helper { out += "helper=\(helper) " }
        if let use = flow.use { out += "use=\(use) " }
        if showID, let id = flow.id { out += "id=\(id) " }
        if !flow.labels.isEmpty { out += "labels=" + flow.labels.bits.map(String.init).joined(separator: ",") + " " }
        out.removeLast()
        return out
    }

    private func tuple(_ t: Tuple, _ flow: Flow, reply: Bool) -> String {
        var out = "src=\(t.source) dst=\(t.destination) "
        if flow.proto == .gre {
            out += "srckey=0x\(String(t.sourcePort, radix: 16)) dstkey=0x\(String(t.destinationPort, radix: 16)) "
        } else if flow.proto.hasPorts {
            out += "sport=\(t.sourcePort) dport=\(t.destinationPort) "
        } else if flow.proto.isICMP, let icmp = flow.icmp {
            let type = reply ? icmp.replyType(family: flow.family) : icmp.type
            out += "type=\(type) code=\(icmp.code) id=\(icmp.id) "
        }
        return out
    }

    private func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return left ? fill + s : s + fill
    }
}
