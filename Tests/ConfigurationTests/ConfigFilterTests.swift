import FlowModel
import Testing

@testable import Configuration

/// `FlowAcceptance.accepts` against conntrackd's src/filter.c semantics, with filters written
/// the way an operator writes them.
@Suite struct ConfigFilterTests {
    func filter(_ body: String) throws -> FlowAcceptance {
        try ConfigFixtures.parse("General {\n Filter {\n\(body)\n }\n}\n").general.filter
    }

    func ip(_ text: String) -> IPAddress { IPAddress(text)! }

    func tcp(_ src: String, _ dst: String, _ state: TCPState = .established, reply: Tuple? = nil) -> Flow {
        Flow(
            proto: .tcp, original: Tuple(source: ip(src), destination: ip(dst), sourcePort: 40000, destinationPort: 80), reply: reply,
            tcp: TCPInfo(state: state))
    }

    func udp(_ src: String, _ dst: String) -> Flow {
        Flow(proto: .udp, original: Tuple(source: ip(src), destination: ip(dst), sourcePort: 5000, destinationPort: 53))
    }

    func icmp(_ src: String, _ dst: String) -> Flow {
        Flow(proto: ip(src).family == .ipv4 ? .icmp : .icmpv6, original: Tuple(source: ip(src), destination: ip(dst)))
    }

    @Test func emptyFilterAcceptsEverything() throws {
        for f in [FlowAcceptance(), try filter("")] {
            #expect(f.isEmpty)
            #expect(f.accepts(tcp("198.18.0.1", "198.18.0.2")))
            #expect(f.accepts(udp("2001:db8::1", "2001:db8::2")))
            #expect(f.accepts(icmp("127.0.0.1", "127.0.0.1")))
        }
    }

    @Test func protocolPolicies() throws {
        let accept = try filter("Protocol Accept { TCP SCTP }")
        #expect(!accept.isEmpty)
        #expect(accept.accepts(tcp("198.18.0.1", "198.18.0.2")))
        #expect(!accept.accepts(udp("198.18.0.1", "198.18.0.2")))
        #expect(!accept.accepts(icmp("198.18.0.1", "198.18.0.2")))

        let ignore = try filter("Protocol Ignore { UDP ICMP IPv6-ICMP }")
        #expect(ignore.accepts(tcp("198.18.0.1", "198.18.0.2")))
        #expect(!ignore.accepts(udp("198.18.0.1", "198.18.0.2")))
        #expect(!ignore.accepts(icmp("198.18.0.1", "198.18.0.2")))
        #expect(!ignore.accepts(icmp("2001:db8::1", "2001:db8::2")))

        // A list that is present decides even when empty, as in conntrackd.
        let acceptNothing = try filter("Protocol Accept { }")
        #expect(!acceptNothing.isEmpty)
        #expect(!acceptNothing.accepts(tcp("198.18.0.1", "198.18.0.2")))
        #expect(try filter("Protocol Ignore { }").accepts(tcp("198.18.0.1", "198.18.0.2")))
    }

    @Test func ipv4AddressesAndPrefixes() throws {
        let ignore = try filter("Address Ignore { IPv4_address 198.18.0.1 IPv4_address 198.19.0.0/16 }")
        #expect(!ignore.accepts(tcp("198.18.0.1", "203.0.113.5")), "original source listed")
        #expect(!ignore.accepts(tcp("203.0.113.5", "198.18.0.1")), "destination (reply source) listed")
        #expect(!ignore.accepts(udp("198.19.200.7", "203.0.113.5")), "inside the /16")
        #expect(ignore.accepts(tcp("198.18.0.2", "203.0.113.5")))
        #expect(ignore.accepts(udp("2001:db8::1", "2001:db8::2")), "no IPv6 entry: IPv6 flows never match")

        let accept = try filter("Address Accept { IPv4_address 198.18.0.0/15 }")
        #expect(accept.accepts(tcp("198.19.255.255", "10.0.0.1")))
        #expect(accept.accepts(tcp("10.0.0.1", "198.18.0.7")))
        #expect(!accept.accepts(tcp("10.0.0.1", "10.0.0.2")))
        #expect(!accept.accepts(tcp("198.20.0.1", "10.0.0.2")))
        #expect(!accept.accepts(udp("2001:db8::1", "2001:db8::2")), "Accept with IPv4 entries only drops every IPv6 flow")

        let everything = try filter("Address Accept { IPv4_address 0.0.0.0/0 }")
        #expect(everything.accepts(tcp("203.0.113.1", "192.0.2.1")))
        #expect(!everything.accepts(tcp("2001:db8::1", "2001:db8::2")))
    }

    @Test func ipv6AddressesAndPrefixes() throws {
        let accept = try filter("Address Accept { IPv6_address 2001:db8::/32 IPv6_address fd00::1 }")
        #expect(accept.accepts(tcp("2001:db8:1::1", "2001:ffff::1")))
        #expect(accept.accepts(tcp("2001:ffff::1", "2001:db8:ab::9")))
        #expect(accept.accepts(udp("fd00::1", "2001:ffff::1")))
        #expect(!accept.accepts(udp("fd00::2", "2001:ffff::1")))
        #expect(!accept.accepts(tcp("2001:db9::1", "2001:ffff::1")))
        #expect(!accept.accepts(tcp("198.18.0.1", "198.18.0.2")), "no IPv4 entry")

        let ignore = try filter("Address Ignore { IPv6_address ::1 IPv6_address fe80::/10 }")
        #expect(!ignore.accepts(tcp("::1", "::1")))
        #expect(!ignore.accepts(icmp("fe80::1234", "ff02::1")))
        #expect(ignore.accepts(tcp("2001:db8::1", "2001:db8::2")))
        #expect(ignore.accepts(tcp("127.0.0.1", "127.0.0.1")))
    }

    /// conntrackd checks the original source and the reply source ("the real source and
    /// destination"), so after DNAT it sees the real server, never the address clients used.
    @Test func natUsesTheReplySource() throws {
        let clientToVIP = Tuple(source: ip("192.0.2.10"), destination: ip("203.0.113.80"), sourcePort: 40000, destinationPort: 80)
        let serverReply = Tuple(source: ip("198.18.5.5"), destination: ip("192.0.2.10"), sourcePort: 8080, destinationPort: 40000)
        let dnat = tcp("192.0.2.10", "203.0.113.80", reply: serverReply)
        #expect(dnat.original == clientToVIP)
        #expect(try filter("Address Accept { IPv4_address 198.18.0.0/15 }").accepts(dnat))
        #expect(try filter("Address Ignore { IPv4_address 203.0.113.80 }").accepts(dnat), "the original destination is not checked")
        #expect(try !filter("Address Ignore { IPv4_address 198.18.5.5 }").accepts(dnat))

        let snatReply = Tuple(source: ip("203.0.113.9"), destination: ip("198.51.100.1"), sourcePort: 443, destinationPort: 61000)
        let snat = tcp("10.0.0.5", "203.0.113.9", reply: snatReply)
        #expect(try filter("Address Ignore { IPv4_address 198.51.100.1 }").accepts(snat), "the reply destination is not checked")
        #expect(try !filter("Address Ignore { IPv4_address 10.0.0.5 }").accepts(snat))
    }

    @Test func tcpStatePolicies() throws {
        let accept = try filter("State Accept { ESTABLISHED CLOSED for TCP LISTEN for TCP }")
        #expect(accept.accepts(tcp("198.18.0.1", "198.18.0.2", .established)))
        #expect(accept.accepts(tcp("198.18.0.1", "198.18.0.2", .close)))
        #expect(accept.accepts(tcp("198.18.0.1", "198.18.0.2", TCPState(rawValue: 9))))
        #expect(!accept.accepts(tcp("198.18.0.1", "198.18.0.2", .synSent)))
        #expect(!accept.accepts(tcp("198.18.0.1", "198.18.0.2", .timeWait)))
        #expect(accept.accepts(udp("198.18.0.1", "198.18.0.2")), "states only filter TCP")
        let stateless = Flow(proto: .tcp, original: Tuple(source: ip("198.18.0.1"), destination: ip("198.18.0.2")))
        #expect(accept.accepts(stateless), "a TCP flow without a state is not judged")

        let ignore = try filter("State Ignore { SYN_SENT SYN_RECV for TCP }")
        #expect(!ignore.accepts(tcp("198.18.0.1", "198.18.0.2", .synSent)))
        #expect(!ignore.accepts(tcp("198.18.0.1", "198.18.0.2", .synRecv)))
        #expect(ignore.accepts(tcp("198.18.0.1", "198.18.0.2", .established)))

        #expect(!(try filter("State Accept { for TCP }").accepts(tcp("198.18.0.1", "198.18.0.2"))))
    }

    @Test func listsCombine() throws {
        let f = try filter(
            """
            Protocol Accept { TCP UDP }
            Address Ignore { IPv4_address 127.0.0.1 IPv6_address ::1 }
            State Accept { ESTABLISHED for TCP }
            """)
        #expect(f.accepts(tcp("198.18.0.1", "198.18.0.2", .established)))
        #expect(f.accepts(udp("198.18.0.1", "198.18.0.2")))
        #expect(!f.accepts(tcp("198.18.0.1", "198.18.0.2", .synSent)), "state")
        #expect(!f.accepts(tcp("127.0.0.1", "198.18.0.2", .established)), "address")
        #expect(!f.accepts(udp("::1", "::1")), "address")
        #expect(!f.accepts(icmp("198.18.0.1", "198.18.0.2")), "protocol")
    }

    @Test func builtByHand() {
        let f = FlowAcceptance(
            protocols: ProtocolFilter(policy: .ignore, protocols: [.udp]),
            addresses: AddressFilter(policy: .accept, networks: [IPNetwork(address: ip("198.18.0.0"), prefixLength: 15)]),
            tcpStates: TCPStateFilter(policy: .ignore, states: [.timeWait]))
        #expect(f.accepts(tcp("198.18.0.1", "192.0.2.1")))
        #expect(!f.accepts(tcp("198.18.0.1", "192.0.2.1", .timeWait)))
        #expect(!f.accepts(udp("198.18.0.1", "192.0.2.1")))
        #expect(!f.accepts(tcp("192.0.2.1", "192.0.2.2")))
        #expect(IPNetwork(address: ip("198.18.0.0"), prefixLength: 15).description == "198.18.0.0/15")
        #expect(IPNetwork(address: ip("2001:db8::1")).description == "2001:db8::1")
    }

    @Test func expectationHelperNames() {
        let list = ExpectationSync.helpers(["ftp", "SIP"])
        #expect(list.accepts(helperName: "ftp"))
        #expect(list.accepts(helperName: "sip-5060"), "a listed name matches as a prefix")
        #expect(list.accepts(helperName: "Sip"), "case is ignored")
        #expect(!list.accepts(helperName: "tftp"))
        #expect(!list.accepts(helperName: nil))
        #expect(ExpectationSync.all.accepts(helperName: nil))
        #expect(!ExpectationSync.off.accepts(helperName: "ftp"))
        #expect(!ExpectationSync.off.isEnabled)
    }
}
