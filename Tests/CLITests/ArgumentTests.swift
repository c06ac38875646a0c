import ArgumentParser
import Conntrack
import Testing

@testable import CtsyncCLI

/// The message ctsync would print for these arguments, or nil if they parse.
func parseError(_ arguments: [String]) -> String? {
    do {
        _ = try CtsyncCommand.parseAsRoot(arguments)
        return nil
    } catch {
        return CtsyncCommand.message(for: error)
    }
}

@Suite struct ListArgumentTests {
    @Test func filtersUseConntrackNames() throws {
        let command = try CtsyncCommand.parseAsRoot([
            "kernel", "list", "-p", "tcp", "-s", "198.18.0.0/15", "--dport", "443", "--state", "established",
            "-m", "0x10/0xf0", "-w", "3", "-f", "ipv4", "-u", "ASSURED", "--label", "4", "-o", "json",
        ])
        let list = try #require(command as? KernelList)
        let f = list.filter.filter
        #expect(f.proto == .tcp)
        #expect(f.source == AddressMatch("198.18.0.0/15"))
        #expect(f.destinationPort == 443)
        #expect(f.state == "ESTABLISHED")
        #expect(f.mark == MarkMatch(value: 0x10, mask: 0xf0))
        #expect(f.zone == 3 && f.family == .ipv4 && f.status == [.assured])
        #expect(f.labels == FlowLabels(bits: [4]))
        #expect(list.output.format.style == .json)
    }

    @Test func aliasesAndOutputCombinations() throws {
        let command = try CtsyncCommand.parseAsRoot([
            "kernel", "list", "--orig-src", "2001:db8::1", "--reply-dst", "198.18.0.1", "-o", "extended,id",
        ])
        let list = try #require(command as? KernelList)
        #expect(list.filter.filter.source == AddressMatch("2001:db8::1"))
        #expect(list.filter.filter.replyDestination == AddressMatch("198.18.0.1"))
        #expect(list.output.format.extended && list.output.format.showID && list.output.format.style == .text)
    }

    @Test(arguments: [
        (["kernel", "list", "-s", "198.18.0.300"], "bad address '198.18.0.300' for -s/--src"),
        (["kernel", "list", "-d", "198.18.0.0/40"], "bad address '198.18.0.0/40' for -d/--dst"),
        (["kernel", "list", "-p", "tcpx"], "unknown protocol 'tcpx' for -p/--proto"),
        (["kernel", "list", "--state", "OPENED"], "unknown tcp state 'OPENED' for --state"),
        (["kernel", "list", "-p", "udp", "--state", "ESTABLISHED"], "udp flows have no state"),
        (["kernel", "list", "-p", "icmp", "--sport", "5"], "--sport/--dport need a protocol with ports; icmp has none"),
        (["kernel", "list", "--dport", "70000"], "bad port '70000' for --dport"),
        (["kernel", "list", "-m", "x"], "bad mark 'x' for -m/--mark"),
        (["kernel", "list", "-u", "ASSURD"], "unknown status 'ASSURD' for -u/--status"),
        (["kernel", "list", "-f", "ipv5"], "unknown family 'ipv5' for -f/--family"),
        (["kernel", "list", "-f", "ipv6", "-s", "198.18.0.1"], "-s 198.18.0.1 is not an ipv6 address"),
        (["kernel", "list", "-w", "65536"], "bad zone '65536' for -w/--zone"),
        (["kernel", "list", "-o", "yaml"], "yaml"),
        (["kernel", "list", "--label", "128"], "bad label '128' for --label"),
        (["kernel", "delete"], "delete needs at least one filter"),
        (["kernel", "events", "-e", "CREATED"], "bad event mask 'CREATED'"),
        (["kernel", "events", "--count", "0"], "--count must be positive"),
        (["kernel", "update", "-p", "tcp"], "nothing to change"),
        (["kernel", "frobnicate"], "frobnicate"),
    ])
    func badArgumentsAreNamed(_ arguments: [String], _ expected: String) throws {
        let message = try #require(parseError(arguments))
        #expect(message.contains(expected), "\(message)")
    }
}

@Suite struct InsertArgumentTests {
    @Test func describesAFlow() throws {
        let command = try CtsyncCommand.parseAsRoot([
            "kernel", "insert", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1000", "--dport", "80",
            "--state", "ESTABLISHED", "-t", "120", "-u", "SEEN_REPLY,ASSURED", "-m", "7", "-w", "2",
            "--reply-src", "198.18.9.9", "--reply-port-src", "8080", "--label", "1",
        ])
        let insert = try #require(command as? KernelInsert)
        let flow = try insert.spec.flow()
        #expect(flow.proto == .tcp && flow.tcp?.state == .established)
        #expect(
            flow.original == Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1000, destinationPort: 80))
        #expect(flow.reply.source == IPAddress("198.18.9.9") && flow.reply.sourcePort == 8080)
        #expect(flow.destinationNAT == IPAddress("198.18.9.9") && flow.destinationPortNAT == 8080)
        #expect(flow.timeout == 120 && flow.mark == 7 && flow.zone == 2)
        #expect(flow.status == [.seenReply, .assured])
        #expect(flow.labels.bits == [1])
    }

    @Test func icmpFlow() throws {
        let command = try CtsyncCommand.parseAsRoot([
            "kernel", "insert", "-p", "icmpv6", "-s", "2001:db8::1", "-d", "2001:db8::2", "--icmp-type", "128",
            "--icmp-id", "5", "-t", "30",
        ])
        let flow = try #require(command as? KernelInsert).spec.flow()
        #expect(flow.icmp == ICMPInfo(type: 128, code: 0, id: 5))
        #expect(flow.family == .ipv6)
    }

    @Test(arguments: [
        (["kernel", "insert", "-s", "198.18.0.1", "-d", "198.18.0.2", "-t", "5"], "missing -p/--proto"),
        (["kernel", "insert", "-p", "udp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1", "--dport", "2"], "missing -t/--timeout"),
        (["kernel", "insert", "-p", "udp", "-s", "198.18.0.1", "-d", "198.18.0.2", "-t", "5"], "udp needs --sport and --dport"),
        (
            ["kernel", "insert", "-p", "udp", "-s", "198.18.0.1", "-d", "2001:db8::1", "--sport", "1", "--dport", "2", "-t", "5"],
            "different families"
        ),
        (["kernel", "insert", "-p", "icmp", "-s", "198.18.0.1", "-d", "198.18.0.2", "-t", "5"], "icmp needs --icmp-type"),
        (
            ["kernel", "insert", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1", "--dport", "2", "-t", "5", "--state", "SYN"],
            "unknown tcp state 'SYN'"
        ),
        (["kernel", "insert", "-p", "tcp", "-s", "198.18.0.1/24", "-d", "198.18.0.2"], "bad address '198.18.0.1/24' for -s/--src"),
        (["kernel", "insert", "--file", "x", "-p", "tcp"], "either --file or the flow's options"),
        (["kernel", "insert", "--file", "x", "--batch-size", "0"], "--batch-size must be 1-65536"),
        (["kernel", "insert", "-p", "udp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1", "--dport", "2", "-t", "-5"], "-t <timeout>"),
        (["kernel", "insert", "--generate", "0"], "--generate N and --generate-first K"),
        (["kernel", "insert", "--generate", "10", "--generate-first", "3839999999"], "--generate N and --generate-first K"),
        (["kernel", "insert", "--generate-first", "5"], "--generate-first needs --generate"),
        (["kernel", "insert", "--generate", "10", "--file", "x"], "either --file or --generate"),
        (["kernel", "insert", "--generate", "10", "-p", "tcp"], "--generate takes only -t/--timeout and -m/--mark"),
        (["kernel", "insert", "--generate", "10", "--rate", "0"], "--rate must be a positive number"),
        (["kernel", "insert", "--generate", "10", "--rate", "nan"], "--rate must be a positive number"),
        (["kernel", "insert", "--generate", "10", "--burst", "5"], "--burst needs --rate"),
        (["kernel", "insert", "--generate", "10", "--rate", "100", "--burst", "0"], "--burst must be at least 1"),
    ])
    func badFlowsAreNamed(_ arguments: [String], _ expected: String) throws {
        let message = try #require(parseError(arguments))
        #expect(message.contains(expected), "\(message)")
    }
}

@Suite struct UpdateArgumentTests {
    @Test func markWithMaskChangesOnlyMaskedBits() throws {
        let command = try CtsyncCommand.parseAsRoot(["kernel", "update", "-p", "tcp", "-m", "0x5/0xf", "-t", "60"])
        let update = try #require(command as? KernelUpdate)
        #expect(update.mark == MarkMatch(value: 5, mask: 0xf))
        #expect(update.timeout == 60)
    }
}
