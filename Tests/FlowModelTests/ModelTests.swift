import TestSupport
import Testing

@testable import FlowModel

@Suite struct AddressTests {
    @Test func parsesAndPrintsIPv4() throws {
        let a = try #require(IPAddress("198.18.0.1"))
        #expect(a.family == .ipv4)
        #expect(a.ipv4 == 0xC612_0001)
        #expect(a.description == "198.18.0.1")
        #expect(IPAddress("198.18.0.256") == nil)
        #expect(IPAddress("nonsense") == nil)
    }

    @Test func parsesAndPrintsIPv6() throws {
        let a = try #require(IPAddress("2001:db8::1"))
        #expect(a.family == .ipv6)
        #expect(a.high == 0x2001_0db8_0000_0000)
        #expect(a.low == 1)
        #expect(a.description == "2001:db8::1")
        #expect(IPAddress("2001:db8::zz") == nil)
        #expect(IPAddress("::ffff:198.18.0.1")?.description == "::ffff:198.18.0.1")
    }

    @Test func familiesNeverCompareEqual() {
        #expect(IPAddress(ipv4: 1) != IPAddress(ipv6High: 0, low: 1))
    }

    @Test func prefixMatching() throws {
        let net = try #require(AddressMatch("198.18.0.0/15"))
        #expect(net.matches(IPAddress("198.19.255.255")!))
        #expect(!net.matches(IPAddress("198.20.0.0")!))
        #expect(!net.matches(IPAddress("2001:db8::1")!))
        let v6 = try #require(AddressMatch("2001:db8:0:1::/64"))
        #expect(v6.matches(IPAddress("2001:db8:0:1::99")!))
        #expect(!v6.matches(IPAddress("2001:db8:0:2::1")!))
        let v6long = try #require(AddressMatch("2001:db8::1:0/112"))
        #expect(v6long.matches(IPAddress("2001:db8::1:ffff")!))
        #expect(!v6long.matches(IPAddress("2001:db8::2:0")!))
        #expect(AddressMatch("0.0.0.0/0")!.matches(IPAddress("1.2.3.4")!))
        #expect(AddressMatch("198.18.0.0/33") == nil)
        #expect(AddressMatch("2001:db8::/129") == nil)
        #expect(AddressMatch("198.18.0.0/x") == nil)
    }
}

@Suite struct NamesTests {
    @Test func protocols() {
        #expect(L4Protocol(name: "TCP") == .tcp)
        #expect(L4Protocol(name: "ipv6-icmp") == .icmpv6)
        #expect(L4Protocol(name: "47") == .gre)
        #expect(L4Protocol(name: "tcpp") == nil)
        #expect(L4Protocol(rawValue: 99).name == "unknown")
        #expect(L4Protocol.gre.hasPorts && !L4Protocol.icmp.hasPorts)
    }

    @Test func states() {
        #expect(TCPState(name: "established") == .established)
        #expect(TCPState(name: "LISTEN")?.rawValue == 9)
        #expect(TCPState(name: "BOGUS") == nil)
        #expect(TCPState(rawValue: 200).name == "NONE")
        #expect(SCTPState(name: "COOKIE_WAIT")?.rawValue == 2)
        #expect(DCCPState(name: "OPEN")?.rawValue == 4)
    }

    @Test func statusBits() {
        #expect(FlowStatus(list: "ASSURED,seen_reply") == [.assured, .seenReply])
        #expect(FlowStatus(list: "UNSET") == [])
        #expect(FlowStatus(list: "ASSURED,NOPE") == nil)
        #expect(FlowStatus([.seenReply, .assured, .confirmed]).names == ["SEEN_REPLY", "ASSURED", "CONFIRMED"])
        #expect(FlowStatus(rawValue: 1 << 20).names == ["BIT20"])
    }

    @Test func labels() {
        var l = FlowLabels(bits: [0, 63, 64, 127, 128, -1])
        #expect(l.bits == [0, 63, 64, 127])
        l.insert(5)
        #expect(l.contains(5) && !l.contains(6))
        #expect(FlowLabels().isEmpty)
    }

    @Test func eventTypes() {
        #expect(EventTypes(list: "new,DESTROY") == [.new, .destroy])
        #expect(EventTypes(list: "ALL") == .all)
        #expect(EventTypes(list: "created") == nil)
    }
}

@Suite struct FlowTests {
    @Test func natIsDerivedFromTuples() {
        let flows = Samples.all
        #expect(!flows[0].isNATed)
        let snat = flows[2]
        #expect(snat.sourceNAT == IPAddress("198.18.255.1"))
        #expect(snat.sourcePortNAT == 61000)
        #expect(snat.destinationNAT == nil && snat.destinationPortNAT == nil)
    }

    @Test func keyIgnoresVolatileFields() {
        var a = Samples.tcp()
        var b = a
        b.timeout = 5
        b.mark = 1
        #expect(a.key == b.key)
        #expect(!a.sameState(as: b))
        b.mark = a.mark
        b.id = 9
        b.counters = FlowCounters(originalPackets: 1, originalBytes: 2, replyPackets: 3, replyBytes: 4)
        #expect(a.sameState(as: b))
        a.zone = 1
        #expect(a.key != b.key)
    }

    /// The rare attributes live in a shared box: copies stay independent values, a flow
    /// without them carries no box, and equality and hashing see through it.
    @Test func rareAttributesAreValues() {
        #expect(MemoryLayout<Flow>.size <= 168)
        let plain = Samples.tcp()
        var a = plain
        a.helper = "ftp"
        a.labels.insert(3)
        var b = a
        b.helper = "sip"
        b.counters = FlowCounters(originalPackets: 1, originalBytes: 2, replyPackets: 3, replyBytes: 4)
        #expect(a.helper == "ftp" && a.counters == nil && a.labels.contains(3))
        #expect(b.helper == "sip" && b.counters?.replyBytes == 4 && b.labels.contains(3))
        b.counters?.replyBytes = 9
        #expect(b.counters?.replyBytes == 9)
        #expect(a != b)
        b.helper = "ftp"
        b.counters = nil
        #expect(a == b && a.hashValue == b.hashValue)
        // Clearing every rare attribute gives back a flow equal to one that never had any.
        b.helper = nil
        b.labels = FlowLabels()
        #expect(b == plain && Set([b, plain]).count == 1)
        var c = plain
        c.sctp = nil
        c.labels = FlowLabels()
        #expect(c == plain)
    }

    @Test func icmpReplyTypes() {
        #expect(ICMPInfo(type: 8, code: 0, id: 1).replyType(family: .ipv4) == 0)
        #expect(ICMPInfo(type: 13, code: 0, id: 1).replyType(family: .ipv4) == 14)
        #expect(ICMPInfo(type: 128, code: 0, id: 1).replyType(family: .ipv6) == 129)
        #expect(ICMPInfo(type: 3, code: 1, id: 1).replyType(family: .ipv4) == 3)
    }
}

/// `ctsync kernel insert --generate`'s flows: the same index gives the same flow, every flow
/// of a run is distinct, and all of them are inside the benchmarking range 198.18.0.0/15.
@Suite struct SyntheticFlowsTests {
    @Test func distinctDeterministicAndInRange() {
        let flows = SyntheticFlows(first: 59_990, count: 130_000, timeout: 77, mark: 5)
        var keys = Set<FlowKey>()
        for flow in flows {
            keys.insert(flow.key)
            #expect(flow.original.source.ipv4 >> 17 == 0xC612 >> 1)  // 198.18.0.0/15
            #expect(flow.original.destination == IPAddress("198.19.0.1")!)
            #expect(flow.timeout == 77 && flow.mark == 5 && flow.tcp?.state == .established)
            #expect(flow.status == [.seenReply, .assured] && flow.reply == flow.original.inverted)
        }
        #expect(keys.count == 130_000)
        #expect(SyntheticFlows(first: 60_000, count: 1)[0].key == flows[10].key)
        #expect(SyntheticFlows(count: 1)[0].original.source == IPAddress("198.18.0.1")!)
        #expect(SyntheticFlows(first: SyntheticFlows.maximumIndex, count: 1)[0].original.source == IPAddress("198.18.255.250")!)
    }
}
