import Conntrack
import Foundation
import Testing

/// ctsync against the real conntrack tool, both directions, in namespaces of their own.
@Suite(.serialized, requiresConntrackTool) struct ConntrackToolComparisonTests {
    /// Flows created with conntrack -I; both tools must list the same lines, field by field.
    @Test func conntrackInsertedFlowsListTheSameInBothTools() throws {
        let ns = try TestNamespace("cmp")
        defer { ns.remove() }
        let inserts: [[String]] = [
            [
                "-p", "tcp", "-s", "198.18.0.1", "-d", "198.18.0.2", "--sport", "1000", "--dport", "80", "-u", "SEEN_REPLY,ASSURED", "--state",
                "ESTABLISHED", "-t", "300", "--mark", "7",
            ],
            [
                "-p", "tcp", "-s", "198.18.0.3", "-d", "198.18.0.4", "--sport", "1001", "--dport", "443", "--state", "SYN_SENT", "-t", "120", "-w",
                "5",
            ],
            ["-p", "udp", "-s", "198.18.0.5", "-d", "198.18.0.53", "--sport", "5353", "--dport", "53", "-t", "30"],
            ["-p", "icmp", "-s", "198.18.0.1", "-d", "198.18.0.9", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "77", "-t", "30"],
            ["-p", "tcp", "-s", "2001:db8::1", "-d", "2001:db8::2", "--sport", "22", "--dport", "2222", "--state", "ESTABLISHED", "-t", "300"],
            ["-p", "udp", "-s", "2001:db8::1", "-d", "2001:db8::53", "--sport", "53", "--dport", "53", "-t", "60", "--mark", "42"],
            [
                "-p", "tcp", "-s", "198.18.1.1", "-d", "198.18.1.2", "--sport", "5000", "--dport", "80", "-r", "198.18.9.9", "-q", "198.18.1.1",
                "--reply-port-src", "8080", "--reply-port-dst", "5000", "--state", "ESTABLISHED", "-t", "300",
            ],
        ]
        for args in inserts {
            let r = try ns.exec(["conntrack", "-I"] + args)
            #expect(r.status == 0, "conntrack -I \(args): \(r.stderr)")
        }
        let ours = try ns.ctsync(["kernel", "list"])
        #expect(ours.status == 0, "\(ours.stderr)")
        #expect(ours.stderr.contains("\(inserts.count) flow entries have been shown."))
        let v4 = try ns.exec(["conntrack", "-L"])
        let v6 = try ns.exec(["conntrack", "-L", "-f", "ipv6"])
        // Depending on the version, plain -L lists IPv4 only or every family: take the union.
        let theirs = Array(Set(v4.lines + v6.lines)).compactMap(ConntrackLine.init)
        let mine = ours.lines.compactMap(ConntrackLine.init)
        #expect(theirs.count == inserts.count)
        #expect(mine.count == inserts.count)
        for line in theirs {
            let twin = mine.first { $0.withoutTimeout == line.withoutTimeout }
            #expect(twin != nil, "conntrack listed \(line), ctsync did not")
            if let twin { #expect(abs(twin.timeout - line.timeout) <= 2) }
        }

        // The JSON form carries the same facts, by name.
        let json = try ns.ctsync(["kernel", "list", "-o", "json", "-p", "tcp", "--dport", "80", "-s", "198.18.1.1"])
        let flow = try FlowJSON.decode(try #require(json.lines.first))
        #expect(json.lines.count == 1)
        #expect(flow.destinationNAT == IPAddress("198.18.9.9") && flow.destinationPortNAT == 8080)
        #expect(flow.tcp?.state == .established)
        let zoned = try ns.ctsync(["kernel", "list", "-o", "json", "-w", "5"])
        #expect(try zoned.lines.map(FlowJSON.decode).map(\.original.sourcePort) == [1001])
        let marked = try ns.ctsync(["kernel", "list", "-o", "json", "-m", "42"])
        #expect(try marked.lines.map(FlowJSON.decode).map(\.family) == [.ipv6])
    }

    /// Flows created with ctsync kernel insert; conntrack must read back exactly what was asked for.
    @Test func ctsyncInsertedFlowsReadBackByConntrack() throws {
        let ns = try TestNamespace("ins")
        defer { ns.remove() }
        struct Case {
            var args: [String]
            var family: String
            var expect: [String: String]
            var state: String?
            var other: [String: String]
        }
        let cases = [
            Case(
                args: [
                    "-p", "tcp", "-s", "198.18.2.1", "-d", "198.18.2.2", "--sport", "40000", "--dport", "443", "--state", "ESTABLISHED", "-t", "500",
                    "-u", "SEEN_REPLY,ASSURED", "-m", "9", "-w", "4",
                ],
                family: "ipv4", expect: ["src": "198.18.2.1", "dst": "198.18.2.2", "sport": "40000", "dport": "443"], state: "ESTABLISHED",
                other: ["mark": "9", "zone": "4"]),
            Case(
                args: ["-p", "udp", "-s", "198.18.2.3", "-d", "198.18.2.4", "--sport", "1234", "--dport", "53", "-t", "77"],
                family: "ipv4", expect: ["src": "198.18.2.3", "dst": "198.18.2.4", "sport": "1234", "dport": "53"], state: nil,
                other: ["mark": "0"]),
            Case(
                args: ["-p", "icmp", "-s", "198.18.2.5", "-d", "198.18.2.6", "--icmp-type", "8", "--icmp-id", "991", "-t", "25"],
                family: "ipv4", expect: ["src": "198.18.2.5", "dst": "198.18.2.6", "type": "8", "code": "0", "id": "991"], state: nil,
                other: [:]),
            Case(
                args: ["-p", "udp", "-s", "2001:db8::10", "-d", "2001:db8::20", "--sport", "1", "--dport", "2", "-t", "90", "-m", "0x10"],
                family: "ipv6", expect: ["src": "2001:db8::10", "dst": "2001:db8::20", "sport": "1", "dport": "2"], state: nil,
                other: ["mark": "16"]),
            Case(
                args: ["-p", "icmpv6", "-s", "2001:db8::10", "-d", "2001:db8::20", "--icmp-type", "128", "--icmp-id", "5", "-t", "25"],
                family: "ipv6", expect: ["src": "2001:db8::10", "dst": "2001:db8::20", "type": "128", "id": "5"], state: nil,
                other: [:]),
            Case(
                args: [
                    "-p", "tcp", "-s", "198.18.3.1", "-d", "198.18.3.2", "--sport", "7", "--dport", "8", "--reply-dst", "198.18.200.1",
                    "--reply-port-dst", "60000", "--state", "SYN_SENT", "-t", "200",
                ],
                family: "ipv4", expect: ["src": "198.18.3.1", "dst": "198.18.3.2", "sport": "7", "dport": "8"], state: "SYN_SENT",
                other: [:]),
        ]
        for c in cases {
            let r = try ns.ctsync(["kernel", "insert"] + c.args)
            #expect(r.status == 0 && r.stderr.contains("1 flow entries have been created."), "\(c.args): \(r.stderr)")
            let timeout = Int(c.args[c.args.firstIndex(of: "-t")! + 1])!
            var filter = ["-s", c.expect["src"]!]
            if let p = c.expect["sport"] { filter += ["--sport", p] }
            let listed = try ns.exec(["conntrack", "-L", "-f", c.family, "-p", c.args[1]] + filter)
            let lines = listed.lines.compactMap(ConntrackLine.init)
            #expect(lines.count == 1, "\(c.args): \(listed.stdout)")
            guard let line = lines.first else { continue }
            for (k, v) in c.expect { #expect(line.original[k] == v, "\(k) of \(c.args)") }
            for (k, v) in c.other { #expect(line.other[k] == v, "\(k) of \(c.args)") }
            #expect(line.state == c.state)
            #expect(line.timeout <= timeout && line.timeout >= timeout - 3)
        }
        // The SNAT'ed one kept its reply tuple.
        let nat = try ns.exec(["conntrack", "-L", "-s", "198.18.3.1"]).lines.compactMap(ConntrackLine.init)
        #expect(nat.first?.reply["dst"] == "198.18.200.1" && nat.first?.reply["dport"] == "60000")
        // ASSURED came through for the first flow.
        let assured = try ns.exec(["conntrack", "-L", "-s", "198.18.2.1"]).lines.compactMap(ConntrackLine.init)
        #expect(assured.first?.flags.contains("[ASSURED]") == true)
    }

    /// Labels through the CLI, beside conntrack: `--label-add` and `--label-del` on update and
    /// `--label` on list, in two namespaces that use labels, both tools reading label names from
    /// a connlabel.conf (conntrack 1.4.7 takes names only) laid over /etc in a mount namespace.
    @Test func labelsThroughTheCLIAsConntrack() throws {
        guard Host.runs(if: Host.has("nft") && Host.has("unshare")) else { return }
        let theirs = try TestNamespace("clb_a")
        defer { theirs.remove() }
        let ours = try TestNamespace("clb_b")
        defer { ours.remove() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ctt_labels_\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/upper/xtables", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/work", withIntermediateDirectories: true)
        try "0 zero\n5 five\n100 hundred\n".write(toFile: dir + "/upper/xtables/connlabel.conf", atomically: true, encoding: .utf8)
        let overlay = "mount -t overlay overlay -o lowerdir=/etc,upperdir=\(dir)/upper,workdir=\(dir)/work /etc && exec \"$@\""
        func labelled(_ ns: TestNamespace, _ argv: [String]) throws -> CommandResult {
            try ns.exec(["unshare", "-m", "--propagation", "private", "sh", "-c", overlay, "sh"] + argv)
        }
        let rules = "table inet ctt {\n chain c {\n type filter hook input priority 0;\n ct label 100 accept\n }\n}\n"
        for ns in [theirs, ours] {
            let nft = try ns.exec(["nft", "-f", "-"], input: rules)
            try #require(nft.status == 0, "nft: \(nft.stderr)")
            for (port, label) in [(1, "0"), (2, "5"), (3, "100")] {
                let r = try ns.ctsync(
                    [
                        "kernel", "insert", "-p", "udp", "-s", "198.18.11.1", "-d", "198.18.11.2", "--sport", "\(port)", "--dport", "9", "-t", "300",
                        "--label", label,
                    ])
                try #require(r.status == 0, "\(r.stderr)")
            }
        }
        func labels(_ ns: TestNamespace) throws -> [UInt16: [Int]] {
            var byPort: [UInt16: [Int]] = [:]
            for flow in try ns.ctsync(["kernel", "list", "-o", "json"]).lines.map(FlowJSON.decode) {
                byPort[flow.original.sourcePort] = flow.labels.bits
            }
            return byPort
        }
        #expect(try labels(ours) == [1: [0], 2: [5], 3: [100]])
        let steps: [([String], [String])] = [
            (
                ["-U", "-s", "198.18.11.1", "-p", "udp", "--sport", "1", "--label-add", "five"],
                ["kernel", "update", "-p", "udp", "--sport", "1", "--label-add", "five"]
            ),
            (["-U", "-s", "198.18.11.1", "--label-add", "hundred"], ["kernel", "update", "-s", "198.18.11.1", "--label-add", "hundred"]),
            // Already there everywhere: nothing changes, nothing is counted, exit 1.
            (["-U", "-s", "198.18.11.1", "--label-add", "hundred"], ["kernel", "update", "-s", "198.18.11.1", "--label-add", "hundred"]),
            (
                ["-U", "-s", "198.18.11.1", "-p", "udp", "--sport", "2", "--label-del", "five"],
                ["kernel", "update", "-p", "udp", "--sport", "2", "--label-del", "five"]
            ),
            (["-U", "-s", "198.18.11.1", "--label-del", "zero"], ["kernel", "update", "-s", "198.18.11.1", "--label-del", "zero"]),
        ]
        for (c, s) in steps {
            let a = try labelled(theirs, ["conntrack"] + c)
            let b = try labelled(ours, [Host.ctsync] + s)
            #expect(a.status == b.status, "\(s): conntrack \(a.status) \(a.stderr) | ctsync \(b.status) \(b.stderr)")
            #expect(try labels(theirs) == labels(ours), "after \(s)")
        }
        #expect(try labels(ours) == [1: [5, 100], 2: [100], 3: [100]])
        // --label selects the flows with every label named, by name or by number.
        for (c, s) in [
            (["--label", "five"], ["--label", "five"]), (["--label", "hundred"], ["--label", "100"]), (["--label", "zero"], ["--label", "0"]),
        ] {
            let a = try labelled(theirs, ["conntrack", "-L"] + c)
            let b = try labelled(ours, [Host.ctsync, "kernel", "list"] + s)
            let ports = { (r: CommandResult) in Set(r.lines.compactMap(ConntrackLine.init).compactMap { $0.original["sport"] }) }
            #expect(a.status == 0 && b.status == 0 && ports(a) == ports(b), "\(s): conntrack \(a.stdout) | ctsync \(b.stdout)")
        }
        // Labelled flows listed with the label map, line for line as conntrack (label names with
        // -o labels; none in the other formats).
        for format in ["labels", "extended,labels", "xml,labels", "save", "extended"] {
            let a = try labelled(theirs, ["conntrack", "-L", "-o", format])
            let b = try labelled(ours, [Host.ctsync, "-L", "-o", format])
            let (al, bl) = (
                ConntrackCommandLineTests.masked(a.stdout, ids: true).sorted(), ConntrackCommandLineTests.masked(b.stdout, ids: true).sorted()
            )
            #expect(a.status == b.status && al == bl, "-o \(format):\nconntrack: \(al)\nctsync:    \(bl)")
            if format == "labels" { #expect(al.contains { $0.contains("labels=five,hundred") }, "\(al)") }
        }
    }
}
