import ArgumentParser
import Conntrack
import Foundation
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
            "kernel", "list", "--orig-src", "2001:db8::1", "--reply-dst", "2001:db8::2", "-o", "extended,id",
        ])
        let list = try #require(command as? KernelList)
        #expect(list.filter.filter.source == AddressMatch("2001:db8::1"))
        #expect(list.filter.filter.replyDestination == AddressMatch("2001:db8::2"))
        #expect(list.output.format.extended && list.output.format.showID && list.output.format.style == .text)
    }

    @Test(arguments: [
        (["kernel", "list", "-s", "198.18.0.300"], "The value '198.18.0.300' is invalid for '-s <src>': expected an IPv4 or IPv6 address"),
        (["kernel", "list", "-d", "198.18.0.0/40"], "The value '198.18.0.0/40' is invalid for '-d <dst>'"),
        (["kernel", "list", "-p", "tcpx"], "The value 'tcpx' is invalid for '-p <proto>': unknown protocol: expected tcp"),
        (["kernel", "list", "--state", "OPENED"], "unknown tcp state 'OPENED' for --state"),
        (["kernel", "list", "-p", "udp", "--state", "ESTABLISHED"], "udp flows have no state"),
        (["kernel", "list", "-p", "icmp", "--sport", "5"], "--sport/--dport need a protocol with ports; icmp has none"),
        (["kernel", "list", "--dport", "70000"], "The value '70000' is invalid for '--dport <dport>': expected a port number 0-65535"),
        (["kernel", "list", "-m", "x"], "The value 'x' is invalid for '-m <mark>'"),
        (["kernel", "list", "-u", "ASSURD"], "The value 'ASSURD' is invalid for '-u <status>': unknown status"),
        (["kernel", "list", "-f", "ipv5"], "The value 'ipv5' is invalid for '-f <family>': unknown family: expected ipv4 or ipv6"),
        (["kernel", "list", "-f", "ipv6", "-s", "198.18.0.1"], "mismatched address family: -s 198.18.0.1 is ipv4, -f ipv6"),
        // Contradictory filters are refused as conntrack refuses them (`-L -s v4 -d ::1`), not an empty result.
        (
            ["kernel", "list", "--orig-src", "2001:db8::1", "--reply-dst", "198.18.0.1"],
            "mismatched address family: -q 198.18.0.1 is ipv4, -s 2001:db8::1 is ipv6"
        ),
        (["kernel", "delete", "-s", "198.18.0.1", "-d", "::1"], "mismatched address family: -d ::1 is ipv6, -s 198.18.0.1 is ipv4"),
        (["kernel", "update", "-f", "ipv4", "-r", "2001:db8::1", "-m", "1"], "mismatched address family: -r 2001:db8::1 is ipv6, -f ipv4"),
        // --expect: only the filters conntrack applies to the expect table.
        (["kernel", "list", "--expect", "-s", "198.18.0.1"], "--expect: Illegal option `--src' with this command"),
        (["kernel", "list", "--expect", "--sport", "5"], "--expect: Illegal option `--sport' with this command"),
        (["kernel", "count", "--expect", "-m", "1"], "--expect: Illegal option `--mark' with this command"),
        (["kernel", "flush", "--expect", "-p", "tcp"], "--expect: Illegal option `--protonum' with this command"),
        (["kernel", "events", "--expect", "--label", "3"], "--expect: Illegal option `--label' with this command"),
        (
            ["kernel", "insert", "--expect", "-p", "udp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1", "--dport", "2", "-t", "9"],
            "--expect: You need to supply the `--tuple-src' option for this command"
        ),
        (["kernel", "insert", "--tuple-src", "198.18.0.1"], "--tuple-* and --mask-* describe an expectation: they need --expect"),
        (["kernel", "delete", "--expect", "-s", "198.18.0.1", "-d", "198.18.0.2"], "--expect: You need to supply the `--protonum' option"),
        (["kernel", "delete", "--expect", "-p", "udp", "-s", "198.18.0.1", "-d", "198.18.0.2", "-m", "1"], "--expect: Illegal option `--mark'"),
        (["kernel", "update", "-p", "udp", "--label-add", "1", "--label-del", "2"], "cannot use --label-add and --label-del at the same time"),
        (["kernel", "list", "-w", "65536"], "The value '65536' is invalid for '-w <zone>': expected a number 0-65535"),
        (["kernel", "list", "-o", "yaml"], "yaml"),
        (["kernel", "list", "--label", "128"], "The value '128' is invalid for '--label <label>': expected a bit number 0-127"),
        (["kernel", "delete"], "delete needs at least one filter"),
        (["kernel", "events", "-e", "CREATED"], "bad event mask 'CREATED'"),
        (["kernel", "events", "--count", "0"], "--count must be positive"),
        (["kernel", "update", "-p", "tcp"], "nothing to change"),
        (["kernel", "frobnicate"], "frobnicate"),
    ])
    func badArgumentsAreNamed(_ arguments: [String], _ expected: String) throws {
        let message = try #require(parseError(arguments))
        #expect(message.contains(expected), "\(message)")
        // Said once: the rejected value appears a single time in the message.
        if let value = expected.split(separator: "'").dropFirst().first, expected.hasPrefix("The value") {
            #expect(message.components(separatedBy: "'\(value)'").count == 2, "\(message)")
        }
    }
}

/// One `-o` vocabulary: flow listings take every value, reports text and json only, and
/// help shows values rather than a type.
@Suite struct OutputArgumentTests {
    @Test func flowListingsTakeEveryValue() throws {
        for value in ["text", "extended", "id", "extended,id", "json", "xml"] {
            for command in [["kernel", "list"], ["kernel", "events"], ["cache", "internal"]] {
                #expect(parseError(command + ["-o", value]) == nil, "\(command) -o \(value)")
            }
        }
        let list = try #require(try CtsyncCommand.parseAsRoot(["kernel", "list", "-o", "xml"]) as? KernelList)
        #expect(list.output.format.style == .xml)
        #expect(parseError(["kernel", "list", "-o", "xml,json"]) != nil)
        #expect(parseError(["kernel", "list", "-o", "json,id"]) != nil)
    }

    @Test(arguments: [
        ["commit"], ["stats"], ["kernel", "count"], ["kernel", "delete", "-p", "tcp"], ["flush", "internal"], ["resync"], ["bulk"],
        ["health"],
    ])
    func reportsTakeTextOrJSON(_ command: [String]) throws {
        #expect(parseError(command + ["-o", "json"]) == nil)
        #expect(parseError(command + ["-o", "text"]) == nil)
        for value in ["id", "xml", "extended"] {
            let message = try #require(parseError(command + ["-o", value]), "\(command) -o \(value) accepted")
            #expect(message.contains("'text' and 'json'"), "\(message)")
        }
    }

    @Test func helpShowsValuesNotTypes() {
        func words(_ text: String) -> String { text.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        let list = words(KernelList.helpMessage(columns: 200))
        #expect(list.contains("values: text, extended, id, json, xml; default: text") && !list.contains("OutputFormat("), "\(list)")
        let commit = words(CommitCommand.helpMessage(columns: 200))
        #expect(commit.contains("values: text, json; default: text") && !commit.contains("Format("), "\(commit)")
    }
}

/// A mistyped subcommand gets a suggestion; errors are one line.
@Suite struct CommandPathTests {
    @Test func suggestsTheClosestSubcommand() {
        #expect(
            CommandPath.unknownSubcommand(in: ["kernel", "lis"])?.hasPrefix("unknown subcommand 'lis' for 'ctsync kernel'; did you mean 'list'?")
                == true)
        #expect(CommandPath.unknownSubcommand(in: ["comit"])?.contains("did you mean 'commit'?") == true)
        #expect(CommandPath.unknownSubcommand(in: ["kernl", "list"])?.contains("did you mean 'kernel'?") == true)
        #expect(CommandPath.unknownSubcommand(in: ["zzzzzz"])?.contains("did you mean") == false)
        #expect(CommandPath.unknownSubcommand(in: ["kernel", "list", "-p", "tcp"]) == nil)
        #expect(CommandPath.unknownSubcommand(in: ["flush", "internal"]) == nil)
        #expect(CommandPath.unknownSubcommand(in: ["help", "kernel"]) == nil)
        #expect(CommandPath.of(["kernel", "list", "-s", "x"]) == "ctsync kernel list")
    }

    @Test func errorsAreOneLine() throws {
        do {
            _ = try CtsyncCommand.parseAsRoot(["kernel", "list", "-p", "tpc"])
            Issue.record("parsed")
        } catch {
            let line = CtsyncCommand.oneLineMessage(for: error)
            #expect(!line.contains("\n") && !line.hasPrefix("Error:") && line.contains("'tpc'"), "\(line)")
        }
    }

    @Test func topRefusesBadTimings() {
        #expect(parseError(["top", "-i", "0"])?.contains("--interval must be between 0.2 and 60 seconds") == true)
        #expect(parseError(["top", "-i", "1e9"])?.contains("--interval must be between 0.2 and 60 seconds") == true)
        #expect(parseError(["top", "-n", "0"])?.contains("--iterations must be at least 1") == true)
        #expect(parseError(["top", "-n", "3", "-i", "0.5"]) == nil)
    }

    @Test func flushNeedsToBeToldWhat() throws {
        let message = try #require(parseError(["flush"]))
        #expect(message.contains("flush needs to be told what: internal, external, all (both caches) or kernel"), "\(message)")
        #expect(parseError(["flush", "all"]) == nil)
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
        (
            ["kernel", "insert", "-p", "tcp", "-s", "198.18.0.1/24", "-d", "198.18.0.2"],
            "The value '198.18.0.1/24' is invalid for '-s <src>': expected an IPv4 or IPv6 address"
        ),
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

/// The manuals name every subcommand and every action flag there is (they are written, not
/// generated: a command added without its manual entry fails here).
@Suite struct ManualTests {
    static var root: String {
        URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    @Test func ctsyncManualNamesEverySubcommand() throws {
        let manual = try String(contentsOfFile: Self.root + "/docs/man/ctsync.8", encoding: .utf8)
        var names = CtsyncCommand.configuration.subcommands.compactMap { $0.configuration.commandName }
        names += KernelCommand.configuration.subcommands.compactMap { $0.configuration.commandName }.map { "kernel \($0)" }
        for name in names {
            #expect(manual.contains(".B \(name)") || manual.contains(".BR \(name) "), "docs/man/ctsync.8 does not describe '\(name)'")
        }
    }
}
