import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's expectation table (ctnetlink_exp): dump, create, delete, flush, count, and the
/// conversion between `Expectation` values and libnetfilter_conntrack's `nf_expect` objects.
extension KernelTable {
    /// Every expectation of `family` (all families when nil).
    public func dumpExpectations(family: AddressFamily? = nil) throws -> [Expectation] {
        var result: [Expectation] = []
        let seq = try sendExpectationRequest(type: IPCTNL_MSG_EXP_GET, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: family, nil)
        try receiveUntilDone(sequence: seq, operation: "expectation dump") { message in
            if let e = NFExpect.parse(message) { result.append(e) }
        }
        return result
    }

    /// Creates an expectation (its master flow must exist, with a helper).
    public func createExpectation(_ e: Expectation) throws {
        let seq = try sendExpectationRequest(
            type: IPCTNL_MSG_EXP_NEW, flags: UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK), family: e.family, e)
        try receiveUntilDone(sequence: seq, operation: "expectation create") { _ in }
    }

    /// Creates many expectations, `batchSize` netlink messages per `sendmsg` (only the last of a
    /// batch asks for an acknowledgement, as `write` does for flows). Returns the failures: the
    /// index in `list` and the kernel's errno (EEXIST: one with that tuple exists).
    public func createExpectations(_ list: [Expectation], batchSize: Int = KernelTable.defaultBatchSize) throws -> [(index: Int, errno: Int32)] {
        let flags = UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL)
        let (failures, _) = try writeBatched(count: list.count, batchSize: batchSize) { index, at, sequence in
            let e = list[index]
            let header = ctsync_put_exp_header(at, UInt8(IPCTNL_MSG_EXP_NEW.rawValue), flags, sequence, e.family.rawValue)!
            try NFExpect.with(e) { exp in
                if nfexp_nlmsg_build(header, exp) < 0 { throw KernelError.build(detail: "libnetfilter_conntrack refused an expectation") }
            }
            return header
        }
        return failures.map { (index: $0.0, errno: $0.1) }
    }

    /// Deletes the expectation whose expected tuple is `e`'s.
    public func deleteExpectation(_ e: Expectation) throws {
        let seq = try sendExpectationRequest(type: IPCTNL_MSG_EXP_DELETE, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), family: e.family, e)
        try receiveUntilDone(sequence: seq, operation: "expectation delete") { _ in }
    }

    /// Deletes every expectation (of `family`, or all).
    public func flushExpectations(family: AddressFamily? = nil) throws {
        let seq = try sendExpectationRequest(type: IPCTNL_MSG_EXP_DELETE, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), family: family, nil)
        try receiveUntilDone(sequence: seq, operation: "expectation flush") { _ in }
    }

    /// The kernel's per-CPU expectation statistics (conntrack `-S expect`).
    public func expectationStatistics() throws -> [(cpu: Int, counters: [(String, UInt32)])] {
        let names = ["expect_new", "expect_create", "expect_delete"]
        let seq = try sendExpectationRequest(
            type: IPCTNL_MSG_EXP_GET_STATS_CPU, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: nil, nil)
        return try perCPUStatistics(sequence: seq, names: names)
    }

    private func sendExpectationRequest(type: ctnl_exp_msg_types, flags: UInt16, family: AddressFamily?, _ e: Expectation?) throws -> UInt32 {
        let seq = nextSequence
        nextSequence &+= 1
        let header = ctsync_put_exp_header(sendBuffer.baseAddress!, UInt8(type.rawValue), flags, seq, family?.rawValue ?? 0)!
        if let e {
            try NFExpect.with(e) { exp in
                if nfexp_nlmsg_build(header, exp) < 0 { throw KernelError.build(detail: "libnetfilter_conntrack refused an expectation") }
            }
        }
        try transport.send(UnsafeRawBufferPointer(start: sendBuffer.baseAddress, count: Int(header.pointee.nlmsg_len)))
        return seq
    }
}

/// Expectation events (conntrack `-E expect`): NEW, UPDATE, DESTROY of expectations.
public final class ExpectationListener {
    private let socket: MnlSocket
    private let buffer: UnsafeMutableRawBufferPointer

    public init(types: EventTypes = .all, receiveBufferSize: Int = 4 << 20) throws(KernelError) {
        // NF_NETLINK_CONNTRACK_EXP_NEW 0x8, _UPDATE 0x10, _DESTROY 0x20: the ct bits shifted by 3.
        socket = try MnlSocket(groups: types.rawValue << 3, receiveBufferSize: receiveBufferSize)
        buffer = .allocate(byteCount: 1 << 18, alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// For the daemon's poll loop: readable when events wait.
    public var fileDescriptor: Int32 { socket.fileDescriptor }
    /// Events caused by this netlink port (the daemon's own writes: an injection, a commit)
    /// are skipped: they are not the kernel's news to replicate.
    public var ignoredPort: UInt32 = 0
    public private(set) var ignoredEvents = 0

    /// What arrived within `timeoutMilliseconds`: each expectation with its event's name
    /// (NEW, UPDATE, DESTROY); nil entries stand for lost events (ENOBUFS).
    public func next(timeoutMilliseconds: Int32) throws -> [(String, Expectation)?] {
        guard socket.waitReadable(milliseconds: timeoutMilliseconds) else { return [] }
        let n: Int
        do {
            n = try socket.receive(into: buffer, wait: false)
        } catch {
            if case .overrun = error { return [nil] }
            throw error
        }
        return try parse(count: n)
    }

    private func parse(count n: Int) throws -> [(String, Expectation)?] {
        var out: [(String, Expectation)?] = []
        for message in try NetlinkMessage.split(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n), operation: "expectation events") {
            if ignoredPort != 0 && message.portID == ignoredPort {
                ignoredEvents += 1
                continue
            }
            guard let e = NFExpect.parse(message) else { continue }
            let kind = message.type & 0xff
            let name = kind == UInt16(IPCTNL_MSG_EXP_DELETE.rawValue) ? "DESTROY" : message.flags & UInt16(NLM_F_CREATE) != 0 ? "NEW" : "UPDATE"
            out.append((name, e))
        }
        return out
    }
}

/// Conversion between `Expectation` and libnetfilter_conntrack's `nf_expect`.
enum NFExpect {
    static func parse(_ message: NetlinkMessage) -> Expectation? {
        guard message.type >> 8 == UInt16(NFNL_SUBSYS_CTNETLINK_EXP), let exp = nfexp_new() else { return nil }
        defer { nfexp_destroy(exp) }
        let header = UnsafeRawPointer(message.bytes.baseAddress!).assumingMemoryBound(to: nlmsghdr.self)
        guard nfexp_nlmsg_parse(header, exp) >= 0 else { return nil }
        return expectation(from: exp)
    }

    /// The original tuple and protocol a conntrack object holds.
    static func tuple(_ ct: OpaquePointer) -> (AddressFamily, Tuple, L4Protocol)? {
        guard nfct_attr_is_set(ct, ATTR_ORIG_L3PROTO) > 0, let family = AddressFamily(rawValue: nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO)) else {
            return nil
        }
        let proto = L4Protocol(rawValue: nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO))
        func address(_ v4: nf_conntrack_attr, _ v6: nf_conntrack_attr) -> IPAddress {
            if family == .ipv4 { return IPAddress(ipv4: UInt32(bigEndian: nfct_get_attr_u32(ct, v4))) }
            guard let raw = nfct_get_attr(ct, v6) else { return .zero(.ipv6) }
            return IPAddress(ipv6Bytes: UnsafeRawBufferPointer(start: raw, count: 16))
        }
        var t = Tuple(source: address(ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC), destination: address(ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST))
        if proto.hasPorts {
            t.sourcePort = UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_ORIG_PORT_SRC))
            t.destinationPort = UInt16(bigEndian: nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST))
        }
        return (family, t, proto)
    }

    static func expectation(from exp: OpaquePointer) -> Expectation? {
        func object(_ a: nf_expect_attr) -> OpaquePointer? {
            guard nfexp_attr_is_set(exp, a) > 0, let raw = nfexp_get_attr(exp, a) else { return nil }
            return OpaquePointer(raw)
        }
        guard let masterCT = object(ATTR_EXP_MASTER), let (family, master, masterProto) = tuple(masterCT),
            let expectedCT = object(ATTR_EXP_EXPECTED), let (_, expected, proto) = tuple(expectedCT)
        else { return nil }
        let mask = object(ATTR_EXP_MASK).flatMap(tuple)?.1 ?? Tuple(source: .zero(family), destination: .zero(family))
        var e = Expectation(family: family, master: master, masterProto: masterProto, expected: expected, proto: proto, mask: mask)
        if nfexp_attr_is_set(exp, ATTR_EXP_TIMEOUT) > 0 { e.timeout = nfexp_get_attr_u32(exp, ATTR_EXP_TIMEOUT) }
        if nfexp_attr_is_set(exp, ATTR_EXP_ZONE) > 0 { e.zone = nfexp_get_attr_u16(exp, ATTR_EXP_ZONE) }
        if nfexp_attr_is_set(exp, ATTR_EXP_FLAGS) > 0 { e.flags = nfexp_get_attr_u32(exp, ATTR_EXP_FLAGS) }
        if nfexp_attr_is_set(exp, ATTR_EXP_CLASS) > 0 { e.expectationClass = nfexp_get_attr_u32(exp, ATTR_EXP_CLASS) }
        if nfexp_attr_is_set(exp, ATTR_EXP_HELPER_NAME) > 0, let raw = nfexp_get_attr(exp, ATTR_EXP_HELPER_NAME) {
            e.helper = String(cString: raw.assumingMemoryBound(to: CChar.self))
        }
        if nfexp_attr_is_set(exp, ATTR_EXP_FN) > 0, let raw = nfexp_get_attr(exp, ATTR_EXP_FN) {
            e.function = String(cString: raw.assumingMemoryBound(to: CChar.self))
        }
        if let natCT = object(ATTR_EXP_NAT_TUPLE), let (_, t, p) = tuple(natCT) {
            let dir = nfexp_attr_is_set(exp, ATTR_EXP_NAT_DIR) > 0 ? UInt32(nfexp_get_attr_u8(exp, ATTR_EXP_NAT_DIR)) : 0
            e.nat = ExpectationNAT(direction: dir, tuple: t, proto: p)
        }
        return e
    }

    /// Runs `body` with an `nf_expect` holding `e` (and its tuples' objects), destroyed after.
    static func with<T>(_ e: Expectation, _ body: (OpaquePointer) throws -> T) throws -> T {
        guard let exp = nfexp_new() else { throw KernelError.build(detail: "out of memory") }
        var objects: [OpaquePointer] = []
        defer {
            nfexp_destroy(exp)
            for ct in objects { nfct_destroy(ct) }
        }
        func conntrack(_ t: Tuple, _ proto: L4Protocol, withPorts: Bool) throws -> OpaquePointer {
            guard let ct = nfct_new() else { throw KernelError.build(detail: "out of memory") }
            objects.append(ct)
            nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, e.family.rawValue)
            nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, proto.rawValue)
            for (address, v4, v6) in [
                (t.source, ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC), (t.destination, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST),
            ] {
                if e.family == .ipv4 {
                    nfct_set_attr_u32(ct, v4, address.ipv4.bigEndian)
                } else {
                    address.ipv6Bytes.withUnsafeBytes { nfct_set_attr(ct, v6, $0.baseAddress) }
                }
            }
            if withPorts && proto.hasPorts {
                nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, t.sourcePort.bigEndian)
                nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, t.destinationPort.bigEndian)
            }
            return ct
        }
        let master = try conntrack(e.master, e.masterProto, withPorts: true)
        let expected = try conntrack(e.expected, e.proto, withPorts: true)
        let mask = try conntrack(e.mask, e.proto, withPorts: true)
        nfexp_set_attr(exp, ATTR_EXP_MASTER, UnsafeRawPointer(master))
        nfexp_set_attr(exp, ATTR_EXP_EXPECTED, UnsafeRawPointer(expected))
        nfexp_set_attr(exp, ATTR_EXP_MASK, UnsafeRawPointer(mask))
        if let timeout = e.timeout { nfexp_set_attr_u32(exp, ATTR_EXP_TIMEOUT, timeout) }
        if e.zone != 0 { nfexp_set_attr_u16(exp, ATTR_EXP_ZONE, e.zone) }
        if e.flags != 0 { nfexp_set_attr_u32(exp, ATTR_EXP_FLAGS, e.flags) }
        if e.expectationClass != 0 { nfexp_set_attr_u32(exp, ATTR_EXP_CLASS, e.expectationClass) }
        if let helper = e.helper { helper.withCString { nfexp_set_attr(exp, ATTR_EXP_HELPER_NAME, $0) } }
        if let nat = e.nat {
            let natCT = try conntrack(nat.tuple, nat.proto, withPorts: true)
            nfexp_set_attr(exp, ATTR_EXP_NAT_TUPLE, UnsafeRawPointer(natCT))
            nfexp_set_attr_u8(exp, ATTR_EXP_NAT_DIR, UInt8(truncatingIfNeeded: nat.direction))
        }
        if let function = e.function { function.withCString { nfexp_set_attr(exp, ATTR_EXP_FN, $0) } }
        return try body(exp)
    }
}

/// libnetfilter_conntrack's XML for an expectation (conntrackd's `-i expect -x`), made by the
/// library itself.
public enum ExpectationXML {
    public static func element(_ e: Expectation) -> String {
        var buffer = [CChar](repeating: 0, count: 2048)
        let n =
            (try? NFExpect.with(e) { exp in nfexp_snprintf(&buffer, UInt32(buffer.count), exp, UInt32(NFCT_T_UNKNOWN.rawValue), UInt32(NFCT_O_XML), 0)
            }) ?? -1
        guard n > 0 else { return "" }
        return String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
