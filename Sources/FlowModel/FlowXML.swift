/// libnetfilter_conntrack's XML form of a flow (what `conntrack -o xml` and `conntrackd -i -x`
/// print): one `<flow>` element per line.
public enum FlowXML {
    public static func element(_ flow: Flow) -> String {
        var out = "<flow>"
        out += meta("original", flow.original, flow, reply: false)
        out += meta("reply", flow.reply, flow, reply: true)
        out += "<meta direction=\"independent\">"
        if let state = flow.stateName { out += "<state>\(state)</state>" }
        if let timeout = flow.timeout { out += "<timeout>\(timeout)</timeout>" }
        out += "<mark>\(flow.mark)</mark>"
        if flow.zone != 0 { out += "<zone>\(flow.zone)</zone>" }
        if let use = flow.use { out += "<use>\(use)</use>" }
        if let id = flow.id { out += "<id>\(id)</id>" }
        if !flow.status.contains(.seenReply) { out += "<unreplied/>" }
        if flow.status.contains(.assured) { out += "<assured/>" }
        return out + "</meta></flow>"
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
