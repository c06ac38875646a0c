import CNetfilter
import TestSupport
import Testing

@testable import Conntrack

/// `FlowMessageParser` (the daemon's own reading of ctnetlink messages) against
/// libnetfilter_conntrack's: the same flow and the same attributes for every well-formed
/// message, whether built by the library or laid out the way the kernel sends them. Damaged
/// messages are read without a crash (the library aborts the process on an attribute of the
/// wrong size, "ctnetlink kernel ABI is broken", so it cannot be asked about those).
@Suite struct FlowMessageParserTests {
    /// A message in a zeroed buffer: what follows it reads as the end of the attributes.
    final class Message {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
        var length = 0
        init() { buffer.initializeMemory(as: UInt8.self, repeating: 0) }
        deinit { buffer.deallocate() }

        var netlink: NetlinkMessage {
            NetlinkMessage(
                type: buffer.loadUnaligned(fromByteOffset: 4, as: UInt16.self),
                flags: buffer.loadUnaligned(fromByteOffset: 6, as: UInt16.self), sequence: 1,
                bytes: UnsafeRawBufferPointer(start: buffer.baseAddress, count: length))
        }
    }

    static func built(_ flow: Flow, purpose: NFConntrack.Purpose) throws -> Message {
        let message = Message()
        let header = try NFConntrack.buildMessage(
            at: message.buffer.baseAddress!, flow: flow, type: IPCTNL_MSG_CT_NEW, flags: UInt16(NLM_F_REQUEST), sequence: 1,
            purpose: purpose)
        message.length = Int(header.pointee.nlmsg_len)
        return message
    }

    /// Both readings of a message; they must agree.
    static func expectAgreement(_ message: NetlinkMessage, sourceLocation: SourceLocation = #_sourceLocation) {
        let ours = FlowMessageParser.parse(message.bytes)
        let library = KernelTable.parseFlowAttributesWithLibrary(message)
        #expect(ours?.0 == library?.0, sourceLocation: sourceLocation)
        #expect(ours?.1 == library?.1, sourceLocation: sourceLocation)
    }

    @Test(arguments: Samples.all)
    func agreesOnBuiltMessages(_ flow: Flow) throws {
        for purpose in [NFConntrack.Purpose.create, .update, .delete, .get] {
            let message = try Self.built(flow, purpose: purpose)
            Self.expectAgreement(message.netlink)
            #expect(FlowMessageParser.parse(message.netlink.bytes) != nil)
        }
    }

    /// Writes attributes the way the kernel lays out an event or a dump entry (nested blocks
    /// flagged NLA_F_NESTED, counters, use, id, timestamps, a security context, an attribute
    /// type the library does not know).
    struct Writer {
        var bytes: [UInt8] = []
        mutating func attribute(_ type: UInt16, _ payload: [UInt8]) {
            let length = 4 + payload.count
            bytes += [UInt8(length & 0xff), UInt8(length >> 8), UInt8(type & 0xff), UInt8(type >> 8)] + payload
            while bytes.count % 4 != 0 { bytes.append(0) }
        }
        mutating func nested(_ type: UInt16, _ body: (inout Writer) -> Void) {
            var inner = Writer()
            body(&inner)
            attribute(type | 0x8000, inner.bytes)
        }
        static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
        static func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (24 - 8 * $0)) & 0xff) } }
        static func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (56 - 8 * $0)) & 0xff) } }
    }

    static func kernelStyle(family: UInt8 = 2, type: UInt16 = 0x100, _ body: (inout Writer) -> Void) -> Message {
        var w = Writer()
        body(&w)
        let message = Message()
        let length = 20 + w.bytes.count
        let header: [UInt8] =
            [UInt8(length & 0xff), UInt8((length >> 8) & 0xff), 0, 0, UInt8(type & 0xff), UInt8(type >> 8), 0x00, 0x06]
            + [0, 0, 0, 0, 0, 0, 0, 0] + [family, 0, 0, 0]
        message.buffer.copyBytes(from: header + w.bytes)
        message.length = length
        return message
    }

    /// CTA_TUPLE_IP, CTA_TUPLE_PROTO and CTA_TUPLE_ZONE, as the kernel writes a tuple.
    static func tuple(_ w: inout Writer, _ src: UInt32, _ dst: UInt32, proto: UInt8, ports: (UInt16, UInt16)?, icmp: (UInt8, UInt8, UInt16)? = nil) {
        w.nested(1) { ip in
            ip.attribute(1, Writer.be32(src))
            ip.attribute(2, Writer.be32(dst))
        }
        w.nested(2) { p in
            p.attribute(1, [proto])
            if let ports {
                p.attribute(2, Writer.be16(ports.0))
                p.attribute(3, Writer.be16(ports.1))
            }
            if let icmp {
                p.attribute(4, Writer.be16(icmp.2))
                p.attribute(5, [icmp.0])
                p.attribute(6, [icmp.1])
            }
        }
        w.attribute(3, Writer.be16(0))
    }

    static var kernelMessages: [Message] {
        var out: [Message] = []
        // A NAT'ed TCP flow as a dump entry: counters (64-bit), use, id, zone, timestamps, a
        // security context, labels, a helper, sequence adjustment, secmark, an unknown type.
        out.append(
            kernelStyle { w in
                w.nested(1) { Self.tuple(&$0, 0xC612_0001, 0xC613_0001, proto: 6, ports: (40000, 80)) }
                w.nested(2) { Self.tuple(&$0, 0xC613_0001, 0xC612_FF01, proto: 6, ports: (80, 61000)) }
                w.attribute(3, Writer.be32(0x19e))
                w.attribute(8, Writer.be32(7))
                w.attribute(17, Writer.be32(0))
                w.nested(9) { c in
                    c.attribute(1, Writer.be64(10))
                    c.attribute(2, Writer.be64(1000))
                }
                w.nested(10) { c in
                    c.attribute(1, Writer.be64(8))
                    c.attribute(2, Writer.be64(900))
                }
                w.attribute(18, Writer.be16(3))
                w.attribute(7, Writer.be32(431_999))
                w.nested(4) { p in
                    p.nested(1) { t in
                        t.attribute(1, [3])
                        t.attribute(2, [7])
                        t.attribute(3, [9])
                        t.attribute(4, [0x23, 0])
                        t.attribute(5, [0x03, 0])
                    }
                }
                w.nested(5) { h in h.attribute(1, Array("ftp".utf8) + [0]) }
                w.nested(15) { s in
                    s.attribute(1, Writer.be32(1))
                    s.attribute(2, Writer.be32(2))
                    s.attribute(3, Writer.be32(3))
                }
                w.nested(16) { s in
                    s.attribute(1, Writer.be32(4))
                    s.attribute(2, Writer.be32(5))
                    s.attribute(3, Writer.be32(6))
                }
                w.attribute(11, Writer.be32(1))
                w.attribute(12, Writer.be32(0xdead_beef))
                w.nested(20) { t in t.attribute(1, Writer.be64(123_456_789)) }
                w.nested(19) { s in s.attribute(1, Array("system_u:object_r:x".utf8) + [0]) }
                w.attribute(22, [0x02, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80])
                w.attribute(99, [1, 2, 3, 4])
            })
        // A destroy event of an ICMP flow with 32-bit counters only.
        out.append(
            kernelStyle(type: 0x102) { w in
                w.nested(1) { Self.tuple(&$0, 0xC612_0001, 0xC612_0002, proto: 1, ports: nil, icmp: (8, 0, 77)) }
                w.nested(2) { Self.tuple(&$0, 0xC612_0002, 0xC612_0001, proto: 1, ports: nil, icmp: (0, 0, 77)) }
                w.nested(9) { c in
                    c.attribute(3, Writer.be32(5))
                    c.attribute(4, Writer.be32(500))
                }
                w.attribute(12, Writer.be32(9))
            })
        // An update event that carries only the status and the protocol state (SCTP).
        out.append(
            kernelStyle { w in
                w.nested(1) { Self.tuple(&$0, 1, 2, proto: 132, ports: (5, 6)) }
                w.nested(2) { Self.tuple(&$0, 2, 1, proto: 132, ports: (6, 5)) }
                w.attribute(3, Writer.be32(0x8))
                w.nested(4) { p in
                    p.nested(3) { s in
                        s.attribute(1, [3])
                        s.attribute(2, Writer.be32(0x1111))
                        s.attribute(3, Writer.be32(0x2222))
                    }
                }
            })
        // DCCP.
        out.append(
            kernelStyle { w in
                w.nested(1) { Self.tuple(&$0, 1, 2, proto: 33, ports: (5, 6)) }
                w.nested(4) { p in
                    p.nested(2) { d in
                        d.attribute(1, [4])
                        d.attribute(2, [1])
                        d.attribute(3, Writer.be64(0x0102_0304_0506_0708))
                    }
                }
            })
        // A flow without a reply tuple.
        out.append(kernelStyle { w in w.nested(1) { Self.tuple(&$0, 1, 2, proto: 17, ports: (5, 6)) } })
        // IPv6 addresses under an IPv6 family; a message with no original tuple.
        out.append(
            kernelStyle(family: 10) { w in
                w.nested(1) { t in
                    t.nested(1) { ip in
                        ip.attribute(3, [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1])
                        ip.attribute(4, [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2])
                    }
                    t.nested(2) { p in
                        p.attribute(1, [58])
                        p.attribute(7, Writer.be16(3))
                        p.attribute(8, [128])
                        p.attribute(9, [0])
                    }
                }
            })
        out.append(kernelStyle { w in w.attribute(3, Writer.be32(1)) })
        return out
    }

    @Test func attributesOfTheWrongSize() throws {
        // A mark of 3 bytes: the message is unreadable.
        let badMark = Self.kernelStyle { w in
            w.nested(1) { Self.tuple(&$0, 1, 2, proto: 17, ports: (5, 6)) }
            w.attribute(8, [0, 0, 7])
        }
        #expect(FlowMessageParser.parse(badMark.netlink.bytes) == nil)
        // A TCP state of 2 bytes: that block is dropped, the rest is read.
        let badState = Self.kernelStyle { w in
            w.nested(1) { Self.tuple(&$0, 1, 2, proto: 6, ports: (5, 6)) }
            w.attribute(8, Writer.be32(7))
            w.nested(4) { p in p.nested(1) { t in t.attribute(1, [3, 3]) } }
        }
        let (flow, present) = try #require(FlowMessageParser.parse(badState.netlink.bytes))
        #expect(flow.tcp == nil && flow.mark == 7 && !present.contains(.protocolInfo))
    }

    @Test func agreesOnKernelStyleMessages() {
        let messages = Self.kernelMessages
        for message in messages { Self.expectAgreement(message.netlink) }
        // What the first one must read as, beyond agreeing.
        let (flow, present) = try! #require(FlowMessageParser.parse(messages[0].netlink.bytes))
        #expect(flow.reply.destinationPort == 61000 && flow.zone == 3 && flow.mark == 7 && flow.helper == "ftp")
        #expect(flow.counters?.replyBytes == 900 && flow.id == 0xdead_beef && flow.labels.bits == [1, 38, 127])
        #expect(present.contains([.status, .mark, .timeout, .protocolInfo, .helper, .sequenceAdjustment, .counters, .labels]))
        #expect(FlowMessageParser.parse(messages[3].netlink.bytes)?.0.dccp?.handshakeSequence == 0x0102_0304_0506_0708)
        #expect(FlowMessageParser.parse(messages[4].netlink.bytes)?.0.reply.sourcePort == 6)
        #expect(FlowMessageParser.parse(messages[5].netlink.bytes)?.0.icmp == ICMPInfo(type: 128, code: 0, id: 3))
        #expect(FlowMessageParser.parse(messages[6].netlink.bytes) == nil)  // no tuple
    }

    /// Damaged messages (bytes changed, cut short, lengths wrong): never a crash; what is read
    /// is of the header's family.
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func readsDamagedMessagesSafely(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var sources: [Message] = Self.kernelMessages
        for flow in Samples.all { sources.append(try Self.built(flow, purpose: .create)) }
        var read = 0
        for _ in 0..<20000 {
            let source = sources[Int.random(in: 0..<sources.count, using: &random)]
            var bytes = [UInt8](UnsafeRawBufferPointer(start: source.buffer.baseAddress, count: source.length))
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                bytes[Int.random(in: 16..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0...(bytes.count - 16), using: &random)) }
            bytes.withUnsafeBytes { message in
                if let (flow, _) = FlowMessageParser.parse(message) {
                    read += 1
                    #expect(flow.family.rawValue == message[16])
                    #expect(flow.original.source.family == flow.family)
                }
            }
        }
        #expect(read > 0)
    }
}

/// The listener's queue: first in, first out across chunks, whatever the batch sizes.
@Suite struct EventQueueTests {
    @Test(arguments: [1, 7, 100, 4096, 10000])
    func deliversEverythingInOrder(limit: Int) {
        var queue = EventQueue()
        var next = 0
        var expected = 0
        var random = SeededGenerator(seed: UInt64(limit))
        for _ in 0..<40 {
            for _ in 0..<Int.random(in: 0...5000, using: &random) {
                var flow = Samples.tcp()
                flow.id = UInt32(next)
                queue.append(.new(flow))
                next += 1
            }
            for _ in 0..<Int.random(in: 0...8, using: &random) {
                let batch = queue.take(limit: limit)
                #expect(batch.count <= limit)
                for event in batch {
                    #expect(event.flow?.id == UInt32(expected))
                    expected += 1
                }
                queue.releaseTaken()
            }
            #expect(queue.count == next - expected)
        }
        while queue.count > 0 {
            for event in queue.take(limit: limit) {
                #expect(event.flow?.id == UInt32(expected))
                expected += 1
            }
        }
        #expect(expected == next)
        queue.releaseSpare()
    }
}
