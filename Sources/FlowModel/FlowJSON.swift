import Foundation

/// ctsync's JSON form of a flow: one object per flow with stable field names
/// (documented in docs/cli.md). Fields that do not apply are left out, never null.
public enum FlowJSON {
    /// Encodes a flow as one compact JSON object. `extra` fields (e.g. event, timestamp) come first.
    public static func encode(_ flow: Flow, extra: [(String, String)] = []) -> String {
        var w = JSONObjectWriter()
        for (k, rawJSON) in extra { w.raw(k, rawJSON) }
        w.string("family", flow.family.description)
        w.string("proto", flow.proto.name)
        w.number("protonum", flow.proto.rawValue)
        if let state = flow.stateName { w.string("state", state) }
        if let timeout = flow.timeout { w.number("timeout", timeout) }
        w.raw("original", tuple(flow.original, flow))
        w.raw("reply", tuple(flow.reply, flow))
        if let icmp = flow.icmp {
            w.raw("icmp", "{\"type\":\(icmp.type),\"code\":\(icmp.code),\"id\":\(icmp.id)}")
        }
        w.raw("status", "[" + flow.status.names.map { "\"\($0)\"" }.joined(separator: ",") + "]")
        w.number("mark", flow.mark)
        w.number("zone", flow.zone)
        if !flow.labels.isEmpty { w.raw("labels", "[" + flow.labels.bits.map(String.init).joined(separator: ",") + "]") }
        if let helper = flow.helper { w.string("helper", helper) }
        if let tcp = flow.tcp {
            w.raw(
                "tcp",
                "{\"flags_original\":\(tcp.originalFlags),\"flags_reply\":\(tcp.replyFlags),"
                    + "\"wscale_original\":\(tcp.originalWindowScale),\"wscale_reply\":\(tcp.replyWindowScale)}")
        }
        if let sctp = flow.sctp {
            w.raw("sctp", "{\"vtag_original\":\(sctp.originalVerificationTag),\"vtag_reply\":\(sctp.replyVerificationTag)}")
        }
        if let dccp = flow.dccp {
            w.raw("dccp", "{\"role\":\(dccp.role),\"handshake_seq\":\(dccp.handshakeSequence)}")
        }
        if let adj = flow.sequenceAdjustment {
            func side(_ s: SequenceAdjustment) -> String {
                "{\"correction_pos\":\(s.correctionPosition),\"offset_before\":\(s.offsetBefore),\"offset_after\":\(s.offsetAfter)}"
            }
            w.raw("seq_adjust", "{\"original\":\(side(adj.original)),\"reply\":\(side(adj.reply))}")
        }
        var nat: [String] = []
        if let a = flow.sourceNAT { nat.append("\"snat\":\"\(a)\"") }
        if let a = flow.destinationNAT { nat.append("\"dnat\":\"\(a)\"") }
        if let p = flow.sourcePortNAT { nat.append("\"snat_port\":\(p)") }
        if let p = flow.destinationPortNAT { nat.append("\"dnat_port\":\(p)") }
        if !nat.isEmpty { w.raw("nat", "{" + nat.joined(separator: ",") + "}") }
        if let c = flow.counters {
            w.raw(
                "counters",
                "{\"original\":{\"packets\":\(c.originalPackets),\"bytes\":\(c.originalBytes)},"
                    + "\"reply\":{\"packets\":\(c.replyPackets),\"bytes\":\(c.replyBytes)}}")
        }
        if let use = flow.use { w.number("use", use) }
        if let id = flow.id { w.number("id", id) }
        return w.finish()
    }

    private static func tuple(_ t: Tuple, _ flow: Flow) -> String {
        var s = "{\"src\":\"\(t.source)\",\"dst\":\"\(t.destination)\""
        if flow.proto.hasPorts { s += ",\"sport\":\(t.sourcePort),\"dport\":\(t.destinationPort)" }
        return s + "}"
    }

    /// What is wrong with a JSON flow, and where.
    public struct DecodeError: Error, CustomStringConvertible, Equatable {
        public var field: String
        public var problem: String
        public var description: String { "field '\(field)': \(problem)" }
    }

    /// Decodes one JSON object (as `encode` writes it) into a flow. The derived `nat`
    /// block and kernel-owned fields (use, counters) are ignored; the reply tuple defaults
    /// to the inverse of the original.
    public static func decode(_ text: String) throws -> Flow {
        let value: JSONValue
        do {
            value = try JSONValue.parse(text)
        } catch {
            throw DecodeError(field: "(line)", problem: "not a JSON object: \(error)")
        }
        return try decode(value)
    }

    /// Decodes one line's bytes (`insert --file` reads a file as bytes, without a String per line).
    public static func decode(bytes: UnsafeRawBufferPointer) throws -> Flow {
        let value: JSONValue
        do {
            value = try JSONValue.parse(bytes)
        } catch {
            throw DecodeError(field: "(line)", problem: "not a JSON object: \(error)")
        }
        return try decode(value)
    }

    public static func decode(_ o: JSONValue) throws -> Flow {
        guard case .object = o else { throw DecodeError(field: "(line)", problem: "not a JSON object") }
        func fail(_ field: String, _ problem: String) -> DecodeError { DecodeError(field: field, problem: problem) }
        func int<T: FixedWidthInteger>(_ obj: JSONValue, _ key: String, _ path: String, as: T.Type) throws -> T? {
            guard let v = obj[key] else { return nil }
            let exact: T?
            switch v {
            case .integer(let n): exact = T(exactly: n)
            case .unsigned(let n): exact = T(exactly: n)
            case .number(let d): exact = d.isFinite && d == d.rounded() ? T(exactly: d) : nil
            default: exact = nil
            }
            guard let exact else { throw fail(path, "expected an integer in range for \(T.self), got \(v.compactText)") }
            return exact
        }
        func address(_ obj: JSONValue, _ key: String, _ path: String) throws -> IPAddress {
            guard let s = obj[key]?.string else { throw fail(path, "missing address") }
            guard let a = IPAddress(s) else { throw fail(path, "bad address '\(s)'") }
            return a
        }
        func object(_ key: String) throws -> JSONValue? {
            guard let raw = o[key] else { return nil }
            guard case .object = raw else { throw fail(key, "expected an object") }
            return raw
        }
        func tuple(_ key: String, proto: L4Protocol) throws -> Tuple? {
            guard let t = try object(key) else { return nil }
            var tuple = Tuple(
                source: try address(t, "src", "\(key).src"), destination: try address(t, "dst", "\(key).dst"))
            guard tuple.source.family == tuple.destination.family else {
                throw fail(key, "src and dst are of different families")
            }
            if proto.hasPorts {
                tuple.sourcePort = try int(t, "sport", "\(key).sport", as: UInt16.self) ?? 0
                tuple.destinationPort = try int(t, "dport", "\(key).dport", as: UInt16.self) ?? 0
            }
            return tuple
        }

        let proto: L4Protocol
        // conntrack names a protocol it does not know "unknown": its number says which.
        if let name = o["proto"]?.string, name != "unknown" || o["protonum"] == nil {
            guard let p = L4Protocol(name: name) else { throw fail("proto", "unknown protocol '\(name)'") }
            proto = p
        } else if let n = try int(o, "protonum", "protonum", as: UInt8.self) {
            proto = L4Protocol(rawValue: n)
        } else {
            throw fail("proto", "missing")
        }
        guard let original = try tuple("original", proto: proto) else { throw fail("original", "missing") }
        let reply = try tuple("reply", proto: proto) ?? original.inverted
        guard reply.source.family == original.source.family else {
            throw fail("reply", "family differs from the original tuple")
        }
        var flow = Flow(proto: proto, original: original, reply: reply)
        if let fam = o["family"]?.string {
            guard let f = AddressFamily(name: fam), f == original.source.family else {
                throw fail("family", "'\(fam)' does not match the addresses")
            }
        }
        if let i = o["icmp"], case .object = i {
            flow.icmp = ICMPInfo(
                type: try int(i, "type", "icmp.type", as: UInt8.self) ?? 0,
                code: try int(i, "code", "icmp.code", as: UInt8.self) ?? 0,
                id: try int(i, "id", "icmp.id", as: UInt16.self) ?? 0)
        } else if proto.isICMP {
            throw fail("icmp", "missing for an ICMP flow")
        }
        let stateName = o["state"]?.string
        let empty = JSONValue.object([])
        if proto == .tcp {
            let t = o["tcp"] ?? empty
            var state = TCPState.none
            if let stateName {
                guard let s = TCPState(name: stateName) else { throw fail("state", "unknown TCP state '\(stateName)'") }
                state = s
            }
            flow.tcp = TCPInfo(
                state: state,
                originalFlags: try int(t, "flags_original", "tcp.flags_original", as: UInt8.self) ?? 0,
                replyFlags: try int(t, "flags_reply", "tcp.flags_reply", as: UInt8.self) ?? 0,
                originalWindowScale: try int(t, "wscale_original", "tcp.wscale_original", as: UInt8.self) ?? 0,
                replyWindowScale: try int(t, "wscale_reply", "tcp.wscale_reply", as: UInt8.self) ?? 0)
        } else if proto == .sctp {
            let t = o["sctp"] ?? empty
            var state = SCTPState(rawValue: 0)
            if let stateName {
                guard let s = SCTPState(name: stateName) else { throw fail("state", "unknown SCTP state '\(stateName)'") }
                state = s
            }
            flow.sctp = SCTPInfo(
                state: state,
                originalVerificationTag: try int(t, "vtag_original", "sctp.vtag_original", as: UInt32.self) ?? 0,
                replyVerificationTag: try int(t, "vtag_reply", "sctp.vtag_reply", as: UInt32.self) ?? 0)
        } else if proto == .dccp {
            let t = o["dccp"] ?? empty
            var state = DCCPState(rawValue: 0)
            if let stateName {
                guard let s = DCCPState(name: stateName) else { throw fail("state", "unknown DCCP state '\(stateName)'") }
                state = s
            }
            flow.dccp = DCCPInfo(
                state: state, role: try int(t, "role", "dccp.role", as: UInt8.self) ?? 0,
                handshakeSequence: try int(t, "handshake_seq", "dccp.handshake_seq", as: UInt64.self) ?? 0)
        } else if stateName != nil {
            throw fail("state", "\(proto.name) flows have no state")
        }
        if let s = o["status"] {
            if case .array(let names) = s {
                for name in names {
                    guard let text = name.string, let bit = FlowStatus(name: text) else {
                        throw fail("status", "unknown status bit \(name.compactText)")
                    }
                    flow.status.formUnion(bit)
                }
            } else if let n = try int(o, "status", "status", as: UInt32.self) {
                flow.status = FlowStatus(rawValue: n)
            }
        }
        flow.timeout = try int(o, "timeout", "timeout", as: UInt32.self)
        flow.mark = try int(o, "mark", "mark", as: UInt32.self) ?? 0
        flow.zone = try int(o, "zone", "zone", as: UInt16.self) ?? 0
        if let labels = o["labels"] {
            guard case .array(let bits) = labels else { throw fail("labels", "expected an array of bit numbers") }
            for b in bits {
                let n: Int?
                switch b {
                case .integer(let i): n = Int(exactly: i)
                default: n = nil
                }
                guard let n, (0...FlowLabels.maxBit).contains(n) else {
                    throw fail("labels", "bit \(b.compactText) is outside 0...\(FlowLabels.maxBit)")
                }
                flow.labels.insert(n)
            }
        }
        if let helper = o["helper"] {
            guard let h = helper.string, h.utf8.count < 16 else { throw fail("helper", "expected a name under 16 bytes") }
            flow.helper = h
        }
        if let adj = o["seq_adjust"], case .object = adj {
            func side(_ key: String) throws -> SequenceAdjustment {
                let s = adj[key] ?? empty
                return SequenceAdjustment(
                    correctionPosition: try int(s, "correction_pos", "seq_adjust.\(key).correction_pos", as: UInt32.self) ?? 0,
                    offsetBefore: try int(s, "offset_before", "seq_adjust.\(key).offset_before", as: UInt32.self) ?? 0,
                    offsetAfter: try int(s, "offset_after", "seq_adjust.\(key).offset_after", as: UInt32.self) ?? 0)
            }
            flow.sequenceAdjustment = NATSequenceAdjustment(original: try side("original"), reply: try side("reply"))
        }
        flow.id = try int(o, "id", "id", as: UInt32.self)
        return flow
    }
}

extension JSONValue {
    /// The value in JSON's own compact form (for messages).
    public var compactText: String {
        switch self {
        case .object(let members): return "{" + members.map { jsonQuoted($0.key) + ":" + $0.value.compactText }.joined(separator: ",") + "}"
        case .array(let elements): return "[" + elements.map(\.compactText).joined(separator: ",") + "]"
        case .string(let s): return jsonQuoted(s)
        case .integer(let n): return "\(n)"
        case .unsigned(let n): return "\(n)"
        case .number(let d): return "\(d)"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        }
    }
}

/// Builds one JSON object with fields in insertion order.
struct JSONObjectWriter {
    private var text = "{"
    private var first = true

    private mutating func key(_ k: String) {
        if !first { text += "," }
        first = false
        text += "\"\(k)\":"
    }
    mutating func raw(_ k: String, _ json: String) {
        key(k)
        text += json
    }
    mutating func number<T: BinaryInteger>(_ k: String, _ v: T) {
        key(k)
        text += "\(v)"
    }
    mutating func string(_ k: String, _ v: String) {
        key(k)
        text += jsonQuoted(v)
    }
    mutating func finish() -> String { text + "}" }
}

/// A JSON string literal with the escapes JSON requires.
public func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                out += String(format: "\\u%04x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}
