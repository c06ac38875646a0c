import TestSupport
import Testing

@testable import FlowModel

@Suite struct FilterTests {
    let flows = Samples.all

    func matching(_ configure: (inout FlowFilter) -> Void) -> [Flow] {
        var f = FlowFilter()
        configure(&f)
        return flows.filter { f.matches($0) }
    }

    @Test func emptyFilterMatchesAll() {
        #expect(FlowFilter().isEmpty)
        #expect(matching { _ in }.count == flows.count)
    }

    @Test func byFamilyAndProtocol() {
        #expect(matching { $0.family = .ipv6 }.count == 2)
        #expect(matching { $0.proto = .tcp }.count == 4)
        #expect(
            matching {
                $0.proto = .tcp
                $0.family = .ipv6
            }.count == 1)
        #expect(matching { $0.proto = .gre }.count == 1)
    }

    @Test func byAddressAndPrefix() {
        #expect(matching { $0.source = AddressMatch("198.18.1.10") }.count == 1)
        #expect(matching { $0.destination = AddressMatch("198.19.0.0/16") }.count == 1)
        #expect(matching { $0.replyDestination = AddressMatch("198.18.255.1") }.count == 1)
        #expect(matching { $0.replySource = AddressMatch("2001:db8::/32") }.count == 2)
    }

    @Test func byPorts() {
        #expect(matching { $0.destinationPort = 80 }.count == 1)
        #expect(matching { $0.sourcePort = 1 }.count == 2)  // tcp zoned and udplite
        #expect(matching { $0.replyDestinationPort = 61000 }.count == 1)
        // ICMP flows have no ports, so a port criterion never matches them.
        #expect(
            matching {
                $0.proto = .icmp
                $0.sourcePort = 0
            }.isEmpty)
    }

    @Test func byStateMarkZoneStatusLabels() {
        #expect(matching { $0.state = "ESTABLISHED" }.count == 5)  // 4 tcp + sctp
        #expect(
            matching {
                $0.proto = .tcp
                $0.state = "SYN_SENT"
            }.isEmpty)
        #expect(matching { $0.mark = MarkMatch(value: 7) }.count == 4)
        #expect(matching { $0.mark = MarkMatch("0xff00/0xff00") }.count == 1)  // the 0xffffffff udp flow
        #expect(matching { $0.zone = 9 }.count == 1)
        #expect(matching { $0.status = [.assured] }.count == 4)
        #expect(matching { $0.status = [.assured, .srcNAT] }.count == 1)
        #expect(matching { $0.labels = FlowLabels(bits: [70]) }.count == 1)
        #expect(matching { $0.labels = FlowLabels(bits: [70, 71]) }.isEmpty)
    }

    @Test func byICMP() {
        #expect(matching { $0.icmpType = 8 }.count == 1)
        #expect(
            matching {
                $0.icmpType = 128
                $0.icmpID = 3
            }.count == 1)
        #expect(matching { $0.icmpID = 4 }.isEmpty)
    }

    @Test func markParsing() {
        #expect(MarkMatch("7") == MarkMatch(value: 7))
        #expect(MarkMatch("0x10/0xf0") == MarkMatch(value: 16, mask: 0xf0))
        #expect(MarkMatch("4294967296") == nil)
        #expect(MarkMatch("1/") == nil)
    }
}
