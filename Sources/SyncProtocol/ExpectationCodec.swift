import FlowModel

/// An `Expectation` as conntrackd's expectation messages carry it (`NTA_EXP_*`, build.c
/// exp2msg / parse.c msg2exp), in conntrackd's order: master, expected, mask (each addresses,
/// protocol, ports when the master's protocol has them), timeout, flags (always), class, NAT
/// (IPv4 only: conntrackd has no IPv6 NAT attribute), helper name, function. The zone and the
/// kernel's id do not travel.
public enum ExpectationCodec {
    public static func attributes(_ e: Expectation, includeTimeout: Bool = true) -> [(UInt16, [UInt8])] {
        var out: [(UInt16, [UInt8])] = []
        let v4 = e.family == .ipv4
        let ports = e.masterProto.hasPorts
        func addresses(_ t: Tuple) -> [UInt8] { bytes(t.source) + bytes(t.destination) }
        func portBytes(_ t: Tuple) -> [UInt8] { be16(t.sourcePort) + be16(t.destinationPort) }
        func u8(_ value: UInt8) -> [UInt8] { [value] }
        out.append(((v4 ? ExpectationAttribute.masterIPv4 : .masterIPv6).rawValue, addresses(e.master)))
        out.append((ExpectationAttribute.masterL4proto.rawValue, u8(e.masterProto.rawValue)))
        if ports { out.append((ExpectationAttribute.masterPort.rawValue, portBytes(e.master))) }
        out.append(((v4 ? ExpectationAttribute.expectIPv4 : .expectIPv6).rawValue, addresses(e.expected)))
        out.append((ExpectationAttribute.expectL4proto.rawValue, u8(e.proto.rawValue)))
        if ports { out.append((ExpectationAttribute.expectPort.rawValue, portBytes(e.expected))) }
        out.append(((v4 ? ExpectationAttribute.maskIPv4 : .maskIPv6).rawValue, addresses(e.mask)))
        out.append((ExpectationAttribute.maskL4proto.rawValue, u8(e.proto.rawValue)))
        if ports { out.append((ExpectationAttribute.maskPort.rawValue, portBytes(e.mask))) }
        if includeTimeout, let timeout = e.timeout { out.append((ExpectationAttribute.timeout.rawValue, be32(timeout))) }
        out.append((ExpectationAttribute.flags.rawValue, be32(e.flags)))
        out.append((ExpectationAttribute.expectationClass.rawValue, be32(e.expectationClass)))
        if let nat = e.nat, nat.tuple.source.family == .ipv4 {
            out.append((ExpectationAttribute.natIPv4.rawValue, addresses(nat.tuple)))
            out.append((ExpectationAttribute.natL4proto.rawValue, u8(nat.proto.rawValue)))
            if ports { out.append((ExpectationAttribute.natPort.rawValue, portBytes(nat.tuple))) }
            out.append((ExpectationAttribute.natDirection.rawValue, be32(nat.direction)))
        }
        // conntrackd's receivers take at most 11 bytes of helper name and 27 of function.
        if let helper = e.helper, helper.utf8.count <= 11 { out.append((ExpectationAttribute.helperName.rawValue, Array(helper.utf8) + [0])) }
        if let function = e.function, function.utf8.count <= 27 { out.append((ExpectationAttribute.function.rawValue, Array(function.utf8) + [0])) }
        return out
    }

    /// The expectation a message's attributes describe; nil without a master and an expected
    /// tuple of one family.
    public static func expectation(_ attributes: [(UInt16, [UInt8])]) -> Expectation? {
        var family: AddressFamily?
        var master: Tuple?
        var expected: Tuple?
        var mask: Tuple?
        var nat: Tuple?
        var masterProto = L4Protocol(rawValue: 0)
        var proto = L4Protocol(rawValue: 0)
        var natProto = L4Protocol(rawValue: 0)
        var masterPorts: (UInt16, UInt16)?
        var expectedPorts: (UInt16, UInt16)?
        var maskPorts: (UInt16, UInt16)?
        var natPorts: (UInt16, UInt16)?
        var timeout: UInt32?
        var flags: UInt32 = 0
        var expectationClass: UInt32 = 0
        var natDirection: UInt32 = 0
        var helper: String?
        var function: String?
        func tuple(_ p: [UInt8], _ f: AddressFamily) -> Tuple? {
            let size = f == .ipv4 ? 4 : 16
            guard p.count == 2 * size else { return nil }
            return Tuple(source: address(Array(p[0..<size]), f), destination: address(Array(p[size...]), f))
        }
        func pair(_ p: [UInt8]) -> (UInt16, UInt16)? {
            p.count == 4 ? (UInt16(p[0]) << 8 | UInt16(p[1]), UInt16(p[2]) << 8 | UInt16(p[3])) : nil
        }
        func word(_ p: [UInt8]) -> UInt32? { p.count == 4 ? p.reduce(0) { $0 << 8 | UInt32($1) } : nil }
        func text(_ p: [UInt8]) -> String { String(decoding: p.prefix { $0 != 0 }, as: UTF8.self) }
        for (id, payload) in attributes {
            guard let attribute = ExpectationAttribute(rawValue: id) else { continue }
            switch attribute {
            case .masterIPv4, .masterIPv6, .expectIPv4, .expectIPv6, .maskIPv4, .maskIPv6, .natIPv4:
                let f: AddressFamily = [.masterIPv6, .expectIPv6, .maskIPv6].contains(attribute) ? .ipv6 : .ipv4
                if attribute != .natIPv4 {
                    if let family, family != f { return nil }
                    family = f
                }
                guard let t = tuple(payload, f) else { return nil }
                switch attribute {
                case .masterIPv4, .masterIPv6: master = t
                case .expectIPv4, .expectIPv6: expected = t
                case .maskIPv4, .maskIPv6: mask = t
                default: nat = t
                }
            case .masterL4proto, .expectL4proto, .maskL4proto, .natL4proto:
                guard payload.count == 1 else { return nil }
                let p = L4Protocol(rawValue: payload[0])
                switch attribute {
                case .masterL4proto: masterProto = p
                case .expectL4proto: proto = p
                case .natL4proto: natProto = p
                default: break
                }
            case .masterPort: masterPorts = pair(payload)
            case .expectPort: expectedPorts = pair(payload)
            case .maskPort: maskPorts = pair(payload)
            case .natPort: natPorts = pair(payload)
            case .timeout: timeout = word(payload)
            case .flags: flags = word(payload) ?? 0
            case .expectationClass: expectationClass = word(payload) ?? 0
            case .natDirection: natDirection = word(payload) ?? 0
            case .helperName: helper = text(payload)
            case .function: function = text(payload)
            }
        }
        guard let family, var master, var expected else { return nil }
        var m = mask ?? Tuple(source: .zero(family), destination: .zero(family))
        if let (s, d) = masterPorts { (master.sourcePort, master.destinationPort) = (s, d) }
        if let (s, d) = expectedPorts { (expected.sourcePort, expected.destinationPort) = (s, d) }
        if let (s, d) = maskPorts { (m.sourcePort, m.destinationPort) = (s, d) }
        var e = Expectation(family: family, master: master, masterProto: masterProto, expected: expected, proto: proto, mask: m)
        e.timeout = timeout
        e.flags = flags
        e.expectationClass = expectationClass
        e.helper = helper
        e.function = function
        if var n = nat {
            if let (s, d) = natPorts { (n.sourcePort, n.destinationPort) = (s, d) }
            e.nat = ExpectationNAT(direction: natDirection, tuple: n, proto: natProto)
        }
        return e
    }

    private static func bytes(_ a: IPAddress) -> [UInt8] {
        a.family == .ipv4 ? be32(a.ipv4) : a.ipv6Bytes
    }

    private static func address(_ b: [UInt8], _ f: AddressFamily) -> IPAddress {
        if f == .ipv4 { return IPAddress(ipv4: b.reduce(0) { $0 << 8 | UInt32($1) }) }
        return b.withUnsafeBytes { IPAddress(ipv6Bytes: $0) }
    }

    private static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    private static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
}
