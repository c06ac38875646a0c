#if canImport(Glibc)
    import Glibc
#endif

/// libnetfilter_conntrack's XML form of a flow (what `conntrack -o xml` and `conntrackd -i -x`
/// print): one `<flow>` element per line.
public enum FlowXML {
    /// `kernelTimestamps` adds `<timestamp><start>NS</start><stop>NS</stop></timestamp>`
    /// (`-o xml,ktimestamp`); `showMark` false leaves out `<mark>` (a destroy event has none);
    /// `when` (`-o xml,timestamp` in events) adds libnetfilter_conntrack's `<when>` local time;
    /// `labelNames` (conntrack's label map, `-o labels`) adds `<labels>` with the named bits of a
    /// flow that has labels.
    public static func element(
        _ flow: Flow, kernelTimestamps: Bool = false, showMark: Bool = true, when: time_t? = nil, labelNames: [Int: String] = [:]
    ) -> String {
        var out = "<flow>"
        out += meta("original", flow.original, flow, reply: false)
        out += meta("reply", flow.reply, flow, reply: true)
        out += "<meta direction=\"independent\">"
        if let state = flow.stateName { out += "<state>\(state)</state>" }
        if let timeout = flow.timeout { out += "<timeout>\(timeout)</timeout>" }
        if showMark { out += "<mark>\(flow.mark)</mark>" }
        if !labelNames.isEmpty, !flow.labels.isEmpty {
            out += "<labels>"
            for name in flow.labels.names(in: labelNames) { out += "<label>\(name)</label>" }
            out += "</labels>"
        }
        if flow.zone != 0 { out += "<zone>\(flow.zone)</zone>" }
        if let use = flow.use { out += "<use>\(use)</use>" }
        if let id = flow.id { out += "<id>\(id)</id>" }
        if !flow.status.contains(.seenReply) { out += "<unreplied/>" }
        if flow.status.contains(.assured) { out += "<assured/>" }
        if let stamps = flow.timestamps {
            if kernelTimestamps {
                out += "<timestamp>"
                if let start = stamps.start { out += "<start>\(start)</start>" }
                if let stop = stamps.stop { out += "<stop>\(stop)</stop>" }
                out += "</timestamp>"
            }
            if let start = stamps.start { out += "<deltatime>\(FlowTimestamps.deltaSeconds(start: start, stop: stamps.stop))</deltatime>" }
        }
        out += "</meta>"
        if let when { out += whenElement(when) }
        return out + "</flow>"
    }

    /// `<when><hour>18</hour><min>04</min><sec>09</sec><wday>1</wday>...</when>`, local time.
    static func whenElement(_ time: time_t) -> String {
        var t = time
        var tm = tm()
        guard localtime_r(&t, &tm) != nil else { return "" }
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "<when><hour>\(tm.tm_hour)</hour><min>\(two(tm.tm_min))</min><sec>\(two(tm.tm_sec))</sec><wday>\(tm.tm_wday + 1)</wday>"
            + "<day>\(tm.tm_mday)</day><month>\(tm.tm_mon + 1)</month><year>\(tm.tm_year + 1900)</year></when>"
    }

    private static func meta(_ direction: String, _ t: Tuple, _ flow: Flow, reply: Bool) -> String {
        var out = "<meta direction=\"\(direction)\">"
        out += "<layer3 protonum=\"\(flow.family.rawValue)\" protoname=\"\(flow.family)\">"
        out += "<src>\(t.source)</src><dst>\(t.destination)</dst></layer3>"
        out += "<layer4 protonum=\"\(flow.proto.rawValue)\" protoname=\"\(flow.proto.name)\">"
        if flow.proto.hasPorts { out += "<sport>\(t.sourcePort)</sport><dport>\(t.destinationPort)</dport>" }
        return out + "</layer4></meta>"
    }
}
