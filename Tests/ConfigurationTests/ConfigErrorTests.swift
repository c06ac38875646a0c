import Foundation
import Testing

@testable import Configuration

/// Broken files and the exact message each gives: `FILE:LINE:COLUMN: message`.
@Suite struct ConfigErrorTests {
    static let link = "UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }"

    static let cases: [(text: String, error: String)] = [
        // Unknown options and sections, wrong blocks, case.
        ("General {\n    Foo 1\n}\n", "test.conf:2:5: unknown option 'Foo' in General"),
        (
            "General {\n    Lockfile /run/x.lock\n}\n",
            "test.conf:2:5: unknown option 'Lockfile' in General; did you mean 'LockFile'? (names are case-sensitive)"
        ),
        ("General {\n    Port 3780\n}\n", "test.conf:2:5: unknown option 'Port' in General; Port belongs in Sync.UDP, Sync.TCP or Metrics"),
        ("Global {\n}\n", "test.conf:1:1: unknown section 'Global' (expected General, Sync, Stats, Metrics or Helper)"),
        (
            "HashSize 10\n",
            "test.conf:1:1: 'HashSize' outside any section (expected General, Sync, Stats, Metrics or Helper); HashSize belongs in General"
        ),
        (
            "Stats {\n    NetlinkEventsReliable no\n}\n",
            "test.conf:2:5: unknown option 'NetlinkEventsReliable' in Stats; NetlinkEventsReliable belongs in General"
        ),
        // Values of the wrong type or out of range.
        ("General {\n    HashSize abc\n}\n", "test.conf:2:14: HashSize in General expects a number, got 'abc'"),
        ("General {\n    HashSize -1\n}\n", "test.conf:2:14: HashSize in General expects a number, got '-1'"),
        ("General {\n    HashLimit 99999999999\n}\n", "test.conf:2:15: HashLimit in General expects a number up to 2147483647, got '99999999999'"),
        ("General {\n    HashSize 1.5\n}\n", "test.conf:2:14: HashSize in General expects a number, got '1.5'"),
        (
            "General {\n    PollSecs 0\n}\n",
            "test.conf:2:14: PollSecs in General expects a number of seconds greater than 0 (leave PollSecs out for event-driven mode), got '0'"
        ),
        ("General {\n    Nice 20\n}\n", "test.conf:2:10: Nice in General expects a nice value from -20 to 19, got '20'"),
        ("General {\n    Systemd maybe\n}\n", "test.conf:2:13: Systemd in General expects on or off (yes/no), got 'maybe'"),
        (
            "General {\n    Syslog local9\n}\n",
            "test.conf:2:12: Syslog in General expects on, off or a facility (daemon, local0 ... local7), got 'local9'"
        ),
        (
            "General {\n    LogFile conntrackd.log\n}\n",
            "test.conf:2:13: LogFile in General expects on, off or an absolute path, got 'conntrackd.log'"
        ),
        (
            "General {\n    LockFile \"/run/x.lock\"\n}\n",
            "test.conf:2:14: LockFile in General expects an absolute path, got '\"' (quoted strings are not part of conntrackd.conf's grammar: write the value without quotes)"
        ),
        (
            "General {\n    UNIX { Path /run/x.ctl}\n}\n",
            "test.conf:2:17: Path in General.UNIX: the path '/run/x.ctl}' runs into a brace; put a space before it"
        ),
        ("General {\n    Scheduler { Type BATCH }\n}\n", "test.conf:2:22: Type in General.Scheduler expects RR or FIFO, got 'BATCH'"),
        ("General {\n    Scheduler { Priority 0 }\n}\n", "test.conf:2:26: Priority in General.Scheduler expects a priority from 1 to 99, got '0'"),
        // Filter lists.
        (
            "General {\n    Filter { Protocol Accept { TCP FOO } }\n}\n",
            "test.conf:2:36: unknown protocol 'FOO' in General.Filter.Protocol Accept (names as in /etc/protocols: TCP, UDP, ICMP, IPv6-ICMP, SCTP, DCCP, GRE, ...)"
        ),
        (
            "General {\n    Filter { Protocol Accept { Sctp } }\n}\n",
            "test.conf:2:32: unknown protocol 'Sctp' in General.Filter.Protocol Accept; did you mean 'SCTP'? (names are case-sensitive)"
        ),
        (
            "General {\n    Filter { Address Ignore { IPv4_address 300.1.1.1 } }\n}\n",
            "test.conf:2:44: IPv4_address in General.Filter.Address Ignore expects an IPv4 address or network, got '300.1.1.1'"
        ),
        (
            "General {\n    Filter { Address Ignore { IPv4_address 10.0.0.0/33 } }\n}\n",
            "test.conf:2:44: IPv4_address in General.Filter.Address Ignore expects a prefix length from 0 to 32, got '10.0.0.0/33'"
        ),
        (
            "General {\n    Filter { Address Ignore { IPv4_address 192.168.010.1 } }\n}\n",
            "test.conf:2:44: IPv4_address in General.Filter.Address Ignore expects an IPv4 address or network, got '192.168.010.1' (a part with a leading zero is octal to conntrackd: write it without the zero)"
        ),
        (
            "General {\n    Filter { Address Accept { IPv6_address 1.2.3.4 } }\n}\n",
            "test.conf:2:44: IPv6_address in General.Filter.Address Accept expects an IPv6 address or network, got '1.2.3.4'"
        ),
        (
            "General {\n    Filter { State Accept { ESTABLISHED NONE for TCP } }\n}\n",
            "test.conf:2:41: unknown TCP state 'NONE' in General.Filter.State Accept (expected SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, CLOSED or LISTEN, followed by 'for TCP')"
        ),
        (
            "General {\n    Filter { State Accept { ESTABLISHED } }\n}\n",
            "test.conf:2:29: TCP states in General.Filter.State Accept must be followed by 'for TCP'"
        ),
        (
            "General {\n    Filter { State Accept { ESTABLISHED for UDP } }\n}\n",
            "test.conf:2:45: 'for' in General.Filter.State Accept must be followed by TCP (conntrackd filters TCP states only), got 'UDP'"
        ),
        (
            "General {\n    Filter {\n        Protocol Accept { TCP }\n        Protocol Ignore { UDP }\n    }\n}\n",
            "test.conf:4:18: Protocol Ignore in General.Filter conflicts with Protocol Accept at 3:18: one policy per list"
        ),
        (
            "General {\n    Filter From Anywhere { }\n}\n",
            "test.conf:2:17: Filter From in General expects Userspace or Kernelspace, got 'Anywhere'"
        ),
        // Braces and end of file.
        (
            "General {\n    HashSize 10\n",
            "test.conf:3:1: unexpected end of file in General: missing '}' to close the block opened at 1:1"
        ),
        ("General {\n    HashSize\n", "test.conf:3:1: HashSize in General expects a number, got end of file"),
        ("General\n    HashSize 10\n}\n", "test.conf:2:5: expected '{' after General, got 'HashSize'"),
        ("General {\n}\n}\n", "test.conf:3:1: unexpected '}' at the top level: no block is open"),
        (
            "General {\n    UNIX {\n        Path /run/x.ctl\n    \nSync {\n",
            "test.conf:5:1: section 'Sync' inside General.UNIX: sections go at the top level (is the '}' closing the block opened at 2:5 missing?)"
        ),
        // Sync: modes, channels.
        ("Sync {\n    \(link)\n}\n", "test.conf:1:1: Sync has no Mode block: add Mode FTFW { }, Mode NOTRACK { } or Mode ALARM { }"),
        ("Sync {\n    Mode FTFW { }\n}\n", "test.conf:1:1: Sync has no dedicated link: add a UDP, Multicast or TCP block"),
        (
            "Sync {\n    Mode FTFW { }\n    Mode NOTRACK { }\n    \(link)\n}\n",
            "test.conf:3:5: second Mode block in Sync (Mode FTFW at 2:5): choose one of FTFW, NOTRACK or ALARM"
        ),
        ("Sync {\n    Mode FAST { }\n}\n", "test.conf:2:10: Mode in Sync expects FTFW, NOTRACK or ALARM, got 'FAST'"),
        (
            "Sync {\n    Mode persistent { }\n}\n",
            "test.conf:2:10: Mode in Sync: 'persistent' is the old name of ALARM, and conntrackd 1.4.7 only knows it with a capital final T (PERSISTENT); write ALARM"
        ),
        (
            "Sync {\n    Mode FTFW {\n        RefreshTime 5\n    }\n}\n",
            "test.conf:3:9: unknown option 'RefreshTime' in Sync.Mode FTFW; RefreshTime belongs in Sync or Sync.Mode ALARM"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    \(link)\n    TCP { }\n}\n",
            "test.conf:4:5: TCP block in Sync cannot be combined with UDP blocks (first at 3:5): conntrackd uses one transport for all dedicated links"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    \(link)\n    \(link)\n    \(link)\n    \(link)\n    UDP { }\n}\n",
            "test.conf:7:5: too many dedicated links in Sync: at most 4 UDP, Multicast or TCP blocks"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP {\n        IPv4_address 198.18.0.1\n        Interface eth1\n    }\n}\n",
            "test.conf:3:5: UDP block in Sync is missing IPv4_Destination_Address or IPv6_Destination_Address, Port"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP {\n        IPv4_address 198.18.0.1\n        IPv6_Destination_Address 2001:db8::2\n        Port 3780\n        Interface eth1\n    }\n}\n",
            "test.conf:5:9: IPv6_Destination_Address in Sync.UDP does not match the family of IPv4_address at 4:9: a channel has one address family"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP {\n        IPv4_address 198.18.0.1/24\n    }\n}\n",
            "test.conf:4:22: IPv4_address in Sync.UDP expects an IPv4 address without a /prefix, got '198.18.0.1/24'"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP {\n        Port 70000\n    }\n}\n",
            "test.conf:4:14: Port in Sync.UDP expects a port number from 1 to 65535, got '70000'"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    Multicast {\n        IPv4_address 198.18.0.1\n    }\n}\n",
            "test.conf:4:22: IPv4_address in Sync.Multicast expects a multicast group address (224.0.0.0/4), got '198.18.0.1'"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP {\n        Interface abc\n    }\n}\n",
            "test.conf:4:19: Interface in Sync.UDP expects an interface name, got 'abc' (conntrackd's lexer reads 'abc' as an IPv6 address, so it cannot be used here)"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    UDP Default { }\n}\n",
            "test.conf:3:5: UDP block in Sync is missing IPv4_address or IPv6_address, IPv4_Destination_Address or IPv6_Destination_Address, Port, Interface"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    \(link.replacingOccurrences(of: "UDP", with: "UDP Default"))\n    \(link.replacingOccurrences(of: "UDP", with: "UDP Default"))\n}\n",
            "test.conf:4:9: second channel marked Default in Sync (the first at 3:5)"
        ),
        (
            "Sync {\n    Mode FTFW { }\n    Options {\n        ExpectationSync maybe\n    }\n}\n",
            "test.conf:4:25: ExpectationSync in Sync.Options expects on, off or a { list } of helper names, got 'maybe'"
        ),
        // Modes against each other, helpers.
        (
            "Stats {\n}\nSync {\n}\n",
            "test.conf:3:1: Sync cannot be used with Stats (at 1:1): conntrackd runs either as a synchronizer or as a statistics collector"
        ),
        (
            "Helper {\n    Type http inet tcp { }\n}\n",
            "test.conf:2:10: unknown helper 'http' in Helper (conntrack-tools 1.4.7 ships amanda, dhcpv6, ftp, mdns, rpc, sane, slp, ssdp, tftp or tns)"
        ),
        ("Helper {\n    Type ftp inet udp { }\n}\n", "test.conf:2:19: helper 'ftp' in Helper supports tcp, not udp"),
        (
            "Helper {\n    Type ftp inet tcp {\n        Policy ftp { }\n    }\n}\n",
            "test.conf:3:9: Policy ftp in Helper.Type is empty: set ExpectMax and ExpectTimeout"
        ),
        ("Helper {\n    QueueNum 1\n}\n", "test.conf:2:5: unknown option 'QueueNum' in Helper; QueueNum belongs in Helper.Type"),
        // Bytes outside the grammar.
        ("General {\n    HashSize 1;\n}\n", "test.conf:2:14: HashSize in General expects a number, got '1;'"),
        ("General {\n    \u{1}\n}\n", "test.conf:2:5: expected an option name in General, got byte 0x1"),
    ]

    @Test func brokenInputsGiveExactErrors() {
        #expect(Self.cases.count >= 20)
        for (text, expected) in Self.cases {
            #expect(ConfigFixtures.errorText(text) == expected, "for input:\n\(text)")
        }
    }

    @Test func errorFieldsAndDescription() {
        do {
            _ = try DaemonConfig.parse("General {\n    Foo 1\n}\n", path: "conntrackd.conf")
            Issue.record("expected an error")
        } catch {
            #expect(error == ConfigError(file: "conntrackd.conf", line: 2, column: 5, message: "unknown option 'Foo' in General"))
            #expect(error.description == "conntrackd.conf:2:5: unknown option 'Foo' in General")
        }
    }

    @Test func columnsCountCharacters() {
        // Columns count characters, not bytes, so a non-ASCII comment does not shift them.
        #expect(
            ConfigFixtures.errorText("# é ü\nGeneral { HashSize é }") == "test.conf:2:20: HashSize in General expects a number, got '\u{FFFD}'")
    }
}
