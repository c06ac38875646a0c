import Conntrack
import Foundation
@_exported import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension TestNamespace {
    /// Runs `body` with a kernel table opened inside the namespace.
    func table<T>(_ body: (KernelTable) throws -> T) throws -> T {
        let table = try NetworkNamespace.run(name) { try KernelTable() }
        return try body(table)
    }
}

/// One `conntrack -L` line split into its parts: protocol, number, timeout, state, and
/// key=value pairs per direction (the first src= starts the original tuple, the second the reply).
struct ConntrackLine: Equatable {
    var proto: String
    var timeout: Int
    var state: String?
    var original: [String: String] = [:]
    var reply: [String: String] = [:]
    var other: [String: String] = [:]
    var flags: Set<String> = []

    init?(_ line: String) {
        var tokens = line.split(separator: " ").map(String.init)
        if tokens.first?.hasPrefix("ipv") == true { tokens.removeFirst(2) }
        guard tokens.count > 3, UInt8(tokens[1]) != nil else { return nil }
        proto = tokens[0]
        // conntrackd's cache dumps (-i, -e) leave the timeout out.
        let timeout = Int(tokens[2])
        self.timeout = timeout ?? -1
        var rest = tokens.dropFirst(timeout == nil ? 2 : 3)
        if let first = rest.first, !first.contains("=") {
            state = first
            rest = rest.dropFirst()
        }
        var sources = 0
        var seenMark = false
        for token in rest {
            if token.hasPrefix("[") {
                flags.insert(token)
                continue
            }
            let kv = token.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "src" { sources += 1 }
            if kv[0] == "mark" { seenMark = true }
            // ICMP tuples carry an id= too; the flow's own id= comes after mark=.
            let flowWide = ["mark", "zone", "use", "helper", "labels"].contains(kv[0]) || (kv[0] == "id" && seenMark)
            switch (sources, kv[0]) {
            case (_, _) where flowWide: other[kv[0]] = kv[1]
            case (1, _): original[kv[0]] = kv[1]
            default: reply[kv[0]] = kv[1]
            }
        }
    }

    /// The same line with the timeout (which counts down between two reads) set aside.
    var withoutTimeout: ConntrackLine {
        var c = self
        c.timeout = 0
        return c
    }
}

let requiresNamespaces = Testing.ConditionTrait.enabled(
    if: Host.runs(if: Host.canUseNamespaces), "needs root and iproute2: creates network namespaces and writes the kernel conntrack table")
let requiresConntrackTool = Testing.ConditionTrait.enabled(
    if: Host.runs(if: Host.hasConntrackTool), "needs root and the conntrack tool (Debian package conntrack) to compare against")

/// A ruleset that makes the namespace track and NAT (loads nf_nat, enables connlabels).
let trackingRuleset = """
    table inet cttcommit {
        chain input {
            type filter hook input priority 0;
            ct state established accept
            meta mark 0x7fff ct label set 127
        }
    }
    table ip cttnat {
        chain post {
            type nat hook postrouting priority 100;
            meta mark 0x7fff masquerade
        }
    }
    table ip6 cttnat6 {
        chain post {
            type nat hook postrouting priority 100;
            meta mark 0x7fff masquerade
        }
    }
    """

/// What a committed flow must keep of the original: identity, NAT (reply tuple), state,
/// mark, zone, labels and the NAT status bits. Timeouts and counters are not compared.
func essentials(_ flow: Flow) -> String {
    let nat = flow.status.intersection([.srcNAT, .dstNAT, .seenReply, .assured])
    return "\(flow.key) reply=\(flow.reply) tcp=\(flow.tcp?.state.rawValue ?? 0) mark=\(flow.mark) zone=\(flow.zone) "
        + "labels=\(flow.labels.bits) status=\(nat.rawValue)"
}

/// A varied set: plain TCP, SNAT, DNAT, SNAT with a port change, UDP, ICMP, zone, mark,
/// labels, IPv6 (also NATed). `offset` moves every port and id (a second, disjoint set).
func variedFlows(offset: Int = 0) -> [Flow] {
    var flows: [Flow] = []
    for i in 0..<200 {
        var f = testFlow(20_000 + offset + i, mark: UInt32(i % 5))
        if i % 7 == 0 { f.zone = 7 }
        if i % 11 == 0 { f.labels = FlowLabels(bits: [1, 64, 127]) }
        // TCP in the states a firewall pair carries besides ESTABLISHED.
        let states: [TCPState] = [.established, .synRecv, .finWait, .closeWait, .lastAck, .timeWait]
        f.tcp = TCPInfo(state: states[i % states.count])
        flows.append(f)
    }
    var snat = testFlow(30_001 + offset, src: "198.18.10.1", dst: "198.19.0.80")
    snat.reply = Tuple(
        source: IPAddress("198.19.0.80")!, destination: IPAddress("198.18.99.1")!, sourcePort: 80, destinationPort: UInt16(30_001 + offset))
    var snatPort = testFlow(30_002 + offset, src: "198.18.10.1", dst: "198.19.0.80")
    snatPort.reply = Tuple(
        source: IPAddress("198.19.0.80")!, destination: IPAddress("198.18.99.1")!, sourcePort: 80, destinationPort: UInt16(61_000 + offset))
    var dnat = testFlow(30_003 + offset, src: "198.19.5.5", dst: "198.18.99.1")
    dnat.reply = Tuple(
        source: IPAddress("198.18.10.20")!, destination: IPAddress("198.19.5.5")!, sourcePort: 8080, destinationPort: UInt16(30_003 + offset))
    var udp = testFlow(30_004 + offset, proto: .udp, src: "198.18.10.2", dst: "198.19.0.53")
    udp.reply.destination = IPAddress("198.18.99.2")!
    var icmp = Flow(
        proto: .icmp, original: Tuple(source: IPAddress("198.18.10.3")!, destination: IPAddress("198.19.0.1")!),
        icmp: ICMPInfo(type: 8, code: 0, id: UInt16(4242 + offset)), status: [.seenReply], timeout: 30)
    icmp.mark = 9
    var v6 = testFlow(30_005 + offset, src: "2001:db8::1", dst: "2001:db8:1::80")
    v6.reply.destination = IPAddress("2001:db8:99::1")!
    flows += [snat, snatPort, dnat, udp, icmp, v6, testFlow(30_006 + offset, src: "2001:db8::2", dst: "2001:db8:1::80")]
    return flows
}

/// What two daemons' dumps in conntrack's line layout must agree on for one flow: both tuples
/// (so NAT), the protocol state, the ASSURED and UNREPLIED status, mark, zone and labels. Parsed
/// from the text, so the same parser reads
/// conntrackd's dumps and ctsync's own rendering of kernel flows.
struct LineEssentials: Hashable, CustomStringConvertible {
    var proto: String
    var state: String?
    var original: [String: String]
    var reply: [String: String]
    var mark: String
    var zone: String
    var status: Set<String>
    var labels: String

    init(_ line: ConntrackLine) {
        proto = line.proto
        state = line.state
        original = line.original.filter { ["src", "dst", "sport", "dport", "type", "code", "id"].contains($0.key) }
        reply = line.reply.filter { ["src", "dst", "sport", "dport", "type", "code", "id"].contains($0.key) }
        mark = line.other["mark"] ?? "0"
        zone = line.other["zone"] ?? "0"
        status = line.flags.intersection(["[ASSURED]", "[UNREPLIED]"])
        labels = line.other["labels"] ?? ""
    }

    /// A kernel flow as conntrack prints it, parsed back.
    init(_ flow: Flow) {
        var f = flow
        f.timeout = nil
        self.init(ConntrackLine(FlowTextFormat().line(f))!)
    }

    var description: String {
        "\(proto) \(state ?? "-") \(original) \(reply) \(status.sorted().joined(separator: " ")) mark=\(mark) zone=\(zone) labels=\(labels)"
    }

    /// What conntrackd's cache dump (`-e`) shows: the original tuple only (its NAT shows when
    /// it commits; WireInteropTests checks that), and no labels (it prints them only with a
    /// label map, which it does not load; the labels it receives travel: the other direction
    /// compares them).
    var withoutReply: LineEssentials {
        var e = self
        e.reply = [:]
        e.labels = ""
        return e
    }

    /// The flow's identity in this form (protocol and original tuple).
    var identity: String { proto + " " + original.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
}

extension Set where Element == LineEssentials {
    /// Only the flows among `flows` (a cache may also hold, say, the sync link's own flow).
    func among(_ flows: [Flow]) -> Set<LineEssentials> {
        let identities = Swift.Set<String>(flows.map { LineEssentials($0).identity })
        return filter { identities.contains($0.identity) }
    }
}

/// The error figures in a `-s network` answer (conntrackd's or ctsyncd's): every "Malformed",
/// "Wrong protocol", "Bad message", "Truncated" and "Packets lost" line, summed.
func networkErrors(_ text: String) -> Int {
    text.split(separator: "\n").filter { line in
        ["Malformed", "Wrong protocol", "Bad message", "Truncated", "Packets lost"].contains { line.contains($0) }
    }.compactMap { Int($0.split(separator: "\t").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "") }.reduce(0, +)
}

/// A `-s` answer with its figures and the sync link's device masked: the layout alone
/// (headings, fields, their order), to compare two daemons on the two ends of one link.
func statsLayout(_ text: String, device: String) -> String {
    text.replacingOccurrences(of: device, with: "DEVICE").replacingOccurrences(of: "[ ]*[0-9]+", with: "#", options: .regularExpression)
}

/// Polls (bounded) until `got()` equals `want()`; on failure says what differs.
func agree(within seconds: Double, _ got: () throws -> Set<LineEssentials>, _ want: () throws -> Set<LineEssentials>) -> (Bool, String) {
    var last: (Set<LineEssentials>, Set<LineEssentials>) = ([], [])
    let ok = eventually(within: seconds) {
        guard let g = try? got(), let w = try? want() else { return false }
        last = (g, w)
        return g == w
    }
    if ok { return (true, "") }
    let missing = last.1.subtracting(last.0).sorted { $0.description < $1.description }
    let extra = last.0.subtracting(last.1).sorted { $0.description < $1.description }
    return (false, "missing \(missing.count): \(missing.prefix(3))\nunexpected \(extra.count): \(extra.prefix(3))")
}

/// `agree`, as an expectation: records what differs where the call stands.
func expectAgreement(
    within seconds: Double, _ got: () throws -> Set<LineEssentials>, _ want: () throws -> Set<LineEssentials>,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let (ok, why) = agree(within: seconds, got, want)
    #expect(ok, "\(why)", sourceLocation: sourceLocation)
}

/// Flows of every protocol and field a firewall pair carries, for tests against the kernel:
/// zones, NAT, a helper with sequence adjustment, IPv6, UDP, UDP-Lite, ICMP, ICMPv6, SCTP, GRE.
enum KernelSamples {
    static var varied: [Flow] {
        var flows: [Flow] = []
        var tcp = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 40000, destinationPort: 80),
            tcp: TCPInfo(state: .established, originalFlags: 0x23, replyFlags: 0x03, originalWindowScale: 7, replyWindowScale: 9),
            status: [.seenReply, .assured], timeout: 3000, mark: 0xdead_beef, zone: 12)
        flows.append(tcp)
        tcp.original.sourcePort = 40001
        tcp.reply = Tuple(source: IPAddress("198.18.0.2")!, destination: IPAddress("198.18.100.1")!, sourcePort: 80, destinationPort: 50001)
        tcp.zone = 0
        flows.append(tcp)  // SNAT'ed: the reply goes to another address and port
        var ftp = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.21")!, sourcePort: 40002, destinationPort: 21),
            tcp: TCPInfo(state: .established), status: [.seenReply, .assured, .seqAdjust, .helper], timeout: 3000)
        ftp.helper = "ftp"
        ftp.sequenceAdjustment = NATSequenceAdjustment(
            original: SequenceAdjustment(correctionPosition: 1000, offsetBefore: 0, offsetAfter: 4),
            reply: SequenceAdjustment(correctionPosition: 2000, offsetBefore: 0, offsetAfter: 0))
        flows.append(ftp)  // a helper's flow, with the sequence adjustment of a NAT'ed FTP session
        flows.append(
            Flow(
                proto: .tcp,
                original: Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!, sourcePort: 1, destinationPort: 2),
                tcp: TCPInfo(state: .synSent), timeout: 100))
        flows.append(
            Flow(
                proto: .udp,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 53, destinationPort: 53),
                status: [.seenReply], timeout: 100, mark: 3))
        flows.append(
            Flow(
                proto: .udplite,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 5, destinationPort: 6),
                timeout: 100))
        flows.append(
            Flow(
                proto: .icmp, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!),
                icmp: ICMPInfo(type: 8, code: 0, id: 99), timeout: 20))
        flows.append(
            Flow(
                proto: .icmpv6, original: Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!),
                icmp: ICMPInfo(type: 128, code: 0, id: 7), timeout: 20))
        var sctp = Flow(
            proto: .sctp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 7, destinationPort: 8),
            timeout: 100)
        sctp.sctp = SCTPInfo(state: SCTPState(name: "ESTABLISHED")!, originalVerificationTag: 0x1234_5678, replyVerificationTag: 0x8765_4321)
        flows.append(sctp)
        // No DCCP here: Linux 6.16 removed DCCP tracking, so the kernel keeps such flows as
        // generic ones without ports or state (the netlink conversion is unit-tested instead).
        flows.append(
            Flow(
                proto: .gre,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 0x11, destinationPort: 0x22),
                timeout: 100))

        return flows
    }
}

/// A command left running in a namespace (an event watcher): its output goes to files, read
/// when it has ended; the files go with it.
final class BackgroundCommand {
    let process = Process()
    let out: URL
    let err: URL

    init(_ namespace: TestNamespace, _ arguments: [String], tag: String) throws {
        out = FileManager.default.temporaryDirectory.appendingPathComponent("ctt-\(tag)-\(getpid()).out")
        err = FileManager.default.temporaryDirectory.appendingPathComponent("ctt-\(tag)-\(getpid()).err")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ip", "netns", "exec", namespace.name] + arguments
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: err)
    }

    var stdout: String { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: err, encoding: .utf8)) ?? "" }

    /// Waits (bounded) until its stderr says `text` (e.g. that it has subscribed).
    func waitForStderr(containing text: String, within seconds: Double) -> Bool {
        eventually(within: seconds) { self.stderr.contains(text) }
    }

    /// Waits (bounded) for it to end.
    func waitForExit(within seconds: Double) -> Bool {
        eventually(within: seconds) { !self.process.isRunning }
    }
}
