import TestSupport
import Testing

@testable import FlowModel

@Suite struct TextFormatTests {
    // Expected lines are conntrack 1.4.7's own output for the same flows.
    @Test func tcpLineMatchesConntrack() {
        var f = Samples.tcp("198.18.0.1", "198.18.0.2", sport: 1000, dport: 80)
        f.timeout = 119
        #expect(
            FlowTextFormat().line(f)
                == "tcp      6 119 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=1000 dport=80 src=198.18.0.2 dst=198.18.0.1 sport=80 dport=1000 [ASSURED] mark=7 use=1"
        )
        #expect(
            FlowTextFormat(extended: true, showID: true).line(f)
                == "ipv4     2 tcp      6 119 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=1000 dport=80 src=198.18.0.2 dst=198.18.0.1 sport=80 dport=1000 [ASSURED] mark=7 use=1 id=42"
        )
    }

    @Test func unrepliedUDPWithZone() {
        var f = Flow(
            proto: .udp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1000, destinationPort: 53),
            timeout: 29, zone: 5)
        f.use = 1
        #expect(
            FlowTextFormat().line(f)
                == "udp      17 29 src=198.18.0.1 dst=198.18.0.2 sport=1000 dport=53 [UNREPLIED] src=198.18.0.2 dst=198.18.0.1 sport=53 dport=1000 mark=0 zone=5 use=1"
        )
    }

    @Test func icmpShowsReplyType() {
        var f = Samples.all[5]
        f.use = 1
        #expect(
            FlowTextFormat().line(f)
                == "icmp     1 29 src=198.18.0.1 dst=198.18.0.2 type=8 code=0 id=77 [UNREPLIED] src=198.18.0.2 dst=198.18.0.1 type=0 code=0 id=77 mark=0 use=1"
        )
    }

    @Test func eventPrefixAndNATedReply() {
        var f = Samples.all[2]
        f.use = nil
        f.timeout = 5
        let line = FlowTextFormat().line(f, event: "NEW")
        #expect(line.hasPrefix("    [NEW] tcp      6 5 ESTABLISHED src=198.18.1.10 dst=198.19.0.80 sport=5555 dport=443 "))
        #expect(line.contains("src=198.19.0.80 dst=198.18.255.1 sport=443 dport=61000 [ASSURED] mark=7"))
        #expect(FlowTextFormat().line(f, event: "DESTROY").hasPrefix("[DESTROY] tcp"))
    }

    @Test func greKeysAndLabels() {
        var f = Samples.all[9]
        f.labels = FlowLabels(bits: [3, 100])
        let line = FlowTextFormat().line(f)
        #expect(line.contains("srckey=0x10 dstkey=0x20"))
        #expect(line.hasSuffix("labels=3,100"))
    }
}

@Suite struct JSONTests {
    @Test(arguments: Samples.all)
    func roundTrips(_ flow: Flow) throws {
        let text = FlowJSON.encode(flow)
        let back = try FlowJSON.decode(text)
        var expected = flow
        expected.use = nil  // kernel-owned, not read back
        #expect(back == expected, "\(text)")
    }

    /// A protocol conntrack has no name for (IGMP, say) prints as "unknown" with its number,
    /// and reads back by that number (a multicast link's own IGMP flow once broke cache dumps).
    @Test func unnamedProtocolsRoundTripByNumber() throws {
        let igmp = Flow(
            proto: L4Protocol(rawValue: 2), original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("224.0.0.22")!), timeout: 30)
        let text = FlowJSON.encode(igmp)
        #expect(text.contains("\"proto\":\"unknown\""))
        #expect(try FlowJSON.decode(text) == igmp)
    }

    @Test func stableFieldNames() {
        let text = FlowJSON.encode(Samples.all[2], extra: [("event", "\"new\"")])
        #expect(
            text.hasPrefix(
                "{\"event\":\"new\",\"family\":\"ipv4\",\"proto\":\"tcp\",\"protonum\":6,\"state\":\"ESTABLISHED\",\"timeout\":431999,\"original\":{\"src\":\"198.18.1.10\""
            ))
        #expect(text.contains("\"nat\":{\"snat\":\"198.18.255.1\",\"snat_port\":61000}"))
        #expect(text.contains("\"status\":[\"SEEN_REPLY\",\"ASSURED\",\"CONFIRMED\",\"SRC_NAT\",\"SRC_NAT_DONE\"]"))
    }

    @Test func minimalObjectDefaultsTheReplyTuple() throws {
        let f = try FlowJSON.decode(
            #"{"proto":"udp","timeout":30,"original":{"src":"198.18.0.1","dst":"198.18.0.2","sport":1,"dport":2}}"#)
        #expect(f.reply == f.original.inverted)
        #expect(f.timeout == 30 && f.mark == 0 && f.status == [])
    }

    @Test(arguments: [
        (#"[1,2]"#, "(line)"),
        (#"{"original":{"src":"198.18.0.1","dst":"198.18.0.2"}}"#, "proto"),
        (#"{"proto":"tcpx","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "proto"),
        (#"{"proto":"tcp"}"#, "original"),
        (#"{"proto":"tcp","original":{"src":"1.1.1.300","dst":"1.1.1.2"}}"#, "original.src"),
        (#"{"proto":"tcp","original":{"src":"1.1.1.1","dst":"2001:db8::1"}}"#, "original"),
        (#"{"proto":"tcp","original":{"src":"1.1.1.1","dst":"1.1.1.2","sport":70000}}"#, "original.sport"),
        (#"{"proto":"tcp","state":"BOGUS","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "state"),
        (#"{"proto":"udp","state":"ESTABLISHED","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "state"),
        (#"{"proto":"icmp","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "icmp"),
        (#"{"proto":"udp","status":["NOPE"],"original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "status"),
        (#"{"proto":"udp","mark":-1,"original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "mark"),
        (#"{"proto":"udp","timeout":1.5,"original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "timeout"),
        (#"{"proto":"udp","labels":[200],"original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "labels"),
        (#"{"proto":"udp","family":"ipv6","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "family"),
        (#"{"proto":"udp","helper":"a-very-long-helper-name","original":{"src":"1.1.1.1","dst":"1.1.1.2"}}"#, "helper"),
    ])
    func rejectsBadInputNamingTheField(_ input: String, _ field: String) {
        #expect(throws: FlowJSON.DecodeError.self) { try FlowJSON.decode(input) }
        do {
            _ = try FlowJSON.decode(input)
        } catch let error as FlowJSON.DecodeError {
            #expect(error.field == field, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func quotesStrings() {
        #expect(jsonQuoted("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
    }
}
