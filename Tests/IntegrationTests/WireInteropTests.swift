import Conntrack
import Foundation
import SyncProtocol
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What this machine offers for talking to a real conntrackd.
enum InteropHost {
    static let missing: String? = {
        if !Host.isRoot { return "needs root: creates network namespaces and writes their conntrack tables" }
        for tool in ["ip", "nft", "conntrack", "conntrackd"] where !Host.has(tool) {
            return "needs \(tool) (Debian packages iproute2, nftables, conntrack, conntrackd)"
        }
        return nil
    }()
}

/// The real conntrackd 1.4.7 on both ends: what it sends decodes and re-encodes byte for byte
/// from the kernel's own flows, and what ctsync sends it commits to the kernel as intended.
@Suite(.serialized, .enabled(if: Host.runs(if: InteropHost.missing == nil), Comment(rawValue: InteropHost.missing ?? "")))
struct InteropTests {
    /// conntrackd in namespace A sends (NOTRACK, UDP) to a socket of ours in B. Every flow made in
    /// A arrives as a NEW message equal, byte for byte, to `SyncWire.encode` of the flow A's kernel
    /// reports.
    @Test func conntrackdMessagesAreWhatCtsyncEncodes() throws {
        let pair = try NamespacePair("snd")
        defer { pair.remove() }
        // Track A's own traffic (the kernel registers its hooks only for a ruleset that needs
        // them) and give flows label space (only once a rule uses labels).
        let rules = "table inet ctt {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n ct label 100 accept\n }\n}\n"
        try pair.nft(pair.a, rules)
        let receiver = try UDPSocket(namespace: pair.b, address: pair.addressB, port: 3780)
        defer { receiver.close() }
        let daemon = try pair.startConntrackd(in: pair.a, local: pair.addressA, peer: pair.addressB, port: 3780, interface: pair.vethA)
        defer { daemon.stop() }
        // NOTRACK sends an ALIVE each second: the first one says the daemon is up.
        try #require(receiver.receive(until: Date().addingTimeInterval(10)) != nil, "conntrackd sent nothing: \(daemon.log)")

        let insert = [
            "-p tcp -s 198.18.0.1 -d 198.18.0.2 --sport 40000 --dport 80 --state ESTABLISHED -t 300 -u ASSURED -m 7",
            "-p icmp -s 198.18.0.1 -d 198.18.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 258 -t 30",
            "-p tcp -s 198.18.0.1 -d 198.18.0.2 --sport 40001 --dport 80 --state ESTABLISHED -t 300 --src-nat 198.18.9.9:1234",
            "-p tcp -s 198.18.0.1 -d 198.18.0.2 --sport 40002 --dport 80 --state SYN_SENT -t 300 --dst-nat 198.18.7.7:8080",
            "-p udp -s 198.18.0.1 -d 198.18.0.2 --sport 40003 --dport 53 -t 30 -w 5",
            "-p sctp -s 198.18.0.1 -d 198.18.0.2 --sport 6000 --dport 7000 --state ESTABLISHED --orig-vtag 0x11223344 --reply-vtag 0x55667788 -t 100",
            "-p udp -s 2001:db8::1 -d 2001:db8::2 --sport 5000 --dport 53 -t 30",
            "-p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 5001 --dport 443 --state ESTABLISHED -t 100 --src-nat 2001:db8::99",
            "-p icmpv6 -s 2001:db8::1 -d 2001:db8::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 4660 -t 30",
        ]
        for arguments in insert {
            let r = try run(["ip", "netns", "exec", pair.a, "conntrack", "-I"] + arguments.split(separator: " ").map(String.init))
            try #require(r.status == 0, "conntrack -I \(arguments): \(r.output)")
        }
        // Labels, a helper and a sequence adjustment: written with ctsync's own kernel table.
        var labelled = Flow(
            proto: .udp, original: Tuple(source: ip("198.18.0.1"), destination: ip("198.18.0.2"), sourcePort: 1, destinationPort: 2),
            timeout: 100, mark: 3)
        labelled.labels = FlowLabels(bits: [0, 5, 100, 127])
        var ftp = Flow(
            proto: .tcp, original: Tuple(source: ip("198.18.0.1"), destination: ip("198.18.0.21"), sourcePort: 40005, destinationPort: 21),
            tcp: TCPInfo(state: .established), status: [.seenReply, .assured, .seqAdjust, .helper], timeout: 3000)
        ftp.helper = "ftp"
        ftp.sequenceAdjustment = NATSequenceAdjustment(
            original: SequenceAdjustment(correctionPosition: 1000, offsetBefore: 0, offsetAfter: 4),
            reply: SequenceAdjustment(correctionPosition: 2000, offsetBefore: 0, offsetAfter: 0))
        // Every attribute conntrackd sends, in one flow: the capture of its message is
        // GoldenTests.everyAttributeInConntrackdOrder's expectation.
        let every = GoldenFlows.everyAttribute
        try NetworkNamespace.run(pair.a) {
            let table = try KernelTable()
            try table.create(labelled)
            try table.create(ftp)
            try table.create(every)
        }
        // And one flow the kernel makes from traffic.
        let sender = try UDPSocket(namespace: pair.a, address: pair.addressA, port: 5555)
        try sender.send([1], to: pair.addressB, port: 5353)
        sender.close()

        let kernel = try NetworkNamespace.run(pair.a) { try KernelTable().dump() }
        let ours = kernel.filter { $0.original.source != pair.addressA || $0.original.sourcePort == 5555 }
        try #require(ours.count == insert.count + 4, "\(kernel.map { FlowTextFormat().line($0) })")

        // The first NEW message for each of those flows, as conntrackd sent it.
        var captured: [FlowKey: (bytes: [UInt8], message: SyncMessage)] = [:]
        let wanted = Set(ours.map(\.key))
        let deadline = Date().addingTimeInterval(15)
        while captured.count < ours.count, let datagram = receiver.receive(until: deadline) {
            let (frames, error) = datagram.withUnsafeBytes { SyncWire.decodeFrames($0) }
            #expect(error == nil, "\(hexString(datagram))")
            for frame in frames {
                let message: SyncMessage
                switch frame.message {
                case .success(let decoded): message = decoded
                case .failure(let failure):
                    Issue.record("conntrackd sent a message ctsync rejects (\(failure)): \(hexString(datagram))")
                    continue
                }
                guard case .flow(.new, let flow) = message.body, wanted.contains(flow.key), captured[flow.key] == nil else { continue }
                let bytes = Array(datagram[frame.offset..<(frame.offset + Int(frame.header.length))])
                captured[flow.key] = (bytes, message)
            }
        }

        var compared = 0
        for var flow in ours {
            guard let (bytes, message) = captured[flow.key] else {
                Issue.record("no NEW message for \(FlowTextFormat().line(flow))")
                continue
            }
            let decoded = try #require(message.flow)
            let fromTraffic = flow.original.sourcePort == 5555
            // Made over ctnetlink: the kernel reported the mark even when zero, and a synproxy
            // extension. From traffic: neither, and the NEW event came before CONFIRMED was set.
            var options = fromTraffic ? EncodeOptions() : EncodeOptions(includeZeroMark: true, includeEmptySynproxy: true)
            options.includeWindowScale = true  // TCPWindowTracking on
            // The timeout counts down between the event and our dump.
            flow.timeout = decoded.timeout
            if fromTraffic { flow.status = decoded.status }
            #expect(decoded == SyncWire.asReceived(flow, options: options), "\(hexString(bytes))")
            let ours = SyncWire.encode(SyncMessage(sequence: message.sequence, body: .flow(.new, flow)), options: options)
            #expect(hexString(ours) == hexString(bytes), "\(FlowTextFormat().line(flow))")
            if flow.key == every.key { print("every attribute, as conntrackd 1.4.7 sent it: \(hexString(bytes))") }
            compared += 1
        }
        #expect(compared == ours.count)
    }

    /// ctsync sends to conntrackd in namespace B, which commits to B's kernel: NAT (addresses and
    /// ports), ICMP ids, labels, zones, marks, IPv6 arrive as ctsync meant them.
    @Test func conntrackdCommitsWhatCtsyncSends() throws {
        let pair = try NamespacePair("rcv")
        defer { pair.remove() }
        try pair.nft(pair.b, "table inet ctt {\n chain in {\n type filter hook input priority 0;\n ct label 100 accept\n }\n}\n")
        let daemon = try pair.startConntrackd(in: pair.b, local: pair.addressB, peer: pair.addressA, port: 3781, interface: pair.vethB)
        defer { daemon.stop() }
        // The daemon is up once its control socket answers.
        let up = Date().addingTimeInterval(10)
        while Date() < up, (try? run(pair.conntrackdClient(in: pair.b, "-s"), timeout: 5).status) != 0 { usleep(100_000) }

        let a = ip("198.18.0.1")
        let b = ip("198.18.0.2")
        var flows: [Flow] = []
        flows.append(
            Flow(
                proto: .tcp, original: Tuple(source: a, destination: b, sourcePort: 40000, destinationPort: 80),
                tcp: TCPInfo(state: .established), status: [.assured, .seenReply, .confirmed], timeout: 300, mark: 7))
        var snat = Flow(
            proto: .tcp, original: Tuple(source: a, destination: b, sourcePort: 40001, destinationPort: 80), tcp: TCPInfo(state: .established),
            status: [.confirmed, .srcNAT, .srcNATDone], timeout: 300)
        snat.reply.destination = ip("198.18.9.9")
        snat.reply.destinationPort = 1234
        flows.append(snat)
        var dnat = Flow(
            proto: .udp, original: Tuple(source: a, destination: b, sourcePort: 40002, destinationPort: 53),
            status: [.confirmed, .dstNAT, .dstNATDone], timeout: 60)
        dnat.reply.source = ip("198.18.7.7")
        dnat.reply.sourcePort = 8053
        flows.append(dnat)
        flows.append(
            Flow(
                proto: .icmp, original: Tuple(source: a, destination: b), icmp: ICMPInfo(type: 8, code: 0, id: 0x0102),
                status: [.confirmed],
                timeout: 30))
        var zoned = Flow(proto: .udp, original: Tuple(source: a, destination: b, sourcePort: 40003, destinationPort: 53), timeout: 60, zone: 5)
        zoned.labels = FlowLabels(bits: [1, 100, 127])
        flows.append(zoned)
        var v6 = Flow(
            proto: .tcp,
            original: Tuple(source: ip("2001:db8::1"), destination: ip("2001:db8::2"), sourcePort: 5001, destinationPort: 443),
            tcp: TCPInfo(state: .established), status: [.confirmed, .srcNAT, .srcNATDone], timeout: 100)
        v6.reply.destination = ip("2001:db8::99")
        flows.append(v6)

        var datagram: [UInt8] = []
        for (index, flow) in flows.enumerated() {
            SyncWire.encode(SyncMessage(sequence: UInt32(index + 1), body: .flow(.new, flow)), into: &datagram)
        }
        let sender = try UDPSocket(namespace: pair.a, address: pair.addressA, port: 3781)
        try sender.send(datagram, to: pair.addressB, port: 3781)
        sender.close()

        // Wait until the external cache holds them, then commit (synchronous) and read B's kernel.
        let deadline = Date().addingTimeInterval(10)
        var external = ""
        while Date() < deadline {
            external = (try? run(pair.conntrackdClient(in: pair.b, "-e"), timeout: 5).output) ?? ""
            if external.split(separator: "\n").count >= flows.count { break }
            usleep(100_000)
        }
        try #require(external.split(separator: "\n").count >= flows.count, "external cache: \(external)\n\(daemon.log)")
        let commit = try run(pair.conntrackdClient(in: pair.b, "-c"), timeout: 20)
        try #require(commit.status == 0, "commit: \(commit.output)")
        // B tracks its own traffic too (the label rule registers the hooks): only ours count.
        let keys = Set(flows.map(\.key))
        let committed = try NetworkNamespace.run(pair.b) { try KernelTable().dump() }.filter { keys.contains($0.key) }
        #expect(committed.count == flows.count, "\(committed.map { FlowTextFormat().line($0) })")

        for flow in flows {
            let expected = SyncWire.asReceived(flow)
            guard let back = committed.first(where: { $0.key == flow.key }) else {
                Issue.record("not committed: \(FlowTextFormat().line(flow))\n\(committed.map { FlowTextFormat().line($0) })")
                continue
            }
            #expect(back.reply == expected.reply, "\(FlowTextFormat().line(back))")
            #expect(back.icmp == expected.icmp && back.tcp?.state == expected.tcp?.state)
            #expect(back.mark == expected.mark && back.zone == expected.zone && back.labels == expected.labels)
            // The kernel sets the NAT bits itself when it sets up the NAT conntrackd asks for.
            #expect(back.status.isSuperset(of: expected.status.subtracting([.expected])), "\(back.status) vs \(expected.status)")
        }
    }
}

// MARK: - Namespaces, processes, sockets

/// Two namespaces joined by a veth pair (198.18.201.1/24 ↔ 198.18.201.2/24), removed by `remove()`.
final class NamespacePair {
    let a: String
    let b: String
    let vethA: String
    let vethB: String
    let addressA = ip("198.18.201.1")
    let addressB = ip("198.18.201.2")
    let directory: URL

    init(_ tag: String) throws {
        let pid = getpid()
        a = "ctt_\(tag)a_\(pid)"
        b = "ctt_\(tag)b_\(pid)"
        vethA = "ctta\(pid)"
        vethB = "cttb\(pid)"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("ctt-\(tag)-\(pid)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in [a, b] {
            _ = try? run(["ip", "netns", "del", name])
            try check(run(["ip", "netns", "add", name]))
            try check(run(["ip", "-n", name, "link", "set", "lo", "up"]))
        }
        try check(run(["ip", "link", "add", vethA, "netns", a, "type", "veth", "peer", "name", vethB, "netns", b]))
        for (ns, veth, address) in [(a, vethA, addressA), (b, vethB, addressB)] {
            try check(run(["ip", "-n", ns, "addr", "add", "\(address)/24", "dev", veth]))
            try check(run(["ip", "-n", ns, "link", "set", veth, "up"]))
        }
    }

    struct SetupError: Error { var message: String }

    private func check(_ result: CommandResult) throws {
        guard result.status == 0 else { throw SetupError(message: result.output) }
    }

    func nft(_ namespace: String, _ rules: String) throws {
        try check(run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input: rules, timeout: 30))
    }

    func config(_ namespace: String) -> URL { directory.appendingPathComponent("\(namespace).conf") }

    func conntrackdClient(in namespace: String, _ arguments: String...) -> [String] {
        ["ip", "netns", "exec", namespace, "conntrackd", "-C", config(namespace).path] + arguments
    }

    /// conntrackd in NOTRACK mode over UDP, in the foreground (so its PID is ours to stop).
    func startConntrackd(in namespace: String, local: IPAddress, peer: IPAddress, port: Int, interface: String) throws -> ConntrackdProcess {
        let dir = directory.path
        let text = """
            Sync {
                Mode NOTRACK { }
                Options { TCPWindowTracking On }
                UDP {
                    IPv4_address \(local)
                    IPv4_Destination_Address \(peer)
                    Port \(port)
                    Interface \(interface)
                    Checksum on
                }
            }
            General {
                HashSize 1024
                HashLimit 8192
                LogFile \(dir)/\(namespace).log
                Syslog off
                LockFile \(dir)/\(namespace).lock
                UNIX { Path \(dir)/\(namespace).ctl }
                NetlinkBufferSize 2097152
                NetlinkBufferSizeMaxGrowth 8388608
            }

            """
        try text.write(to: config(namespace), atomically: true, encoding: .utf8)
        return try ConntrackdProcess(namespace: namespace, configPath: config(namespace).path)
    }

    func remove() {
        for name in [a, b] { _ = try? run(["ip", "netns", "del", name]) }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A UDP socket opened inside a namespace (it stays there), with bounded receives.
final class UDPSocket {
    let fd: Int32

    init(namespace: String, address: IPAddress, port: UInt16) throws {
        fd = try NetworkNamespace.run(namespace) { socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0) }
        guard fd >= 0 else { throw NamespacePair.SetupError(message: "socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var local = Self.socketAddress(address, port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw NamespacePair.SetupError(message: "bind \(address):\(port): errno \(errno)")
        }
    }

    static func socketAddress(_ address: IPAddress, _ port: UInt16) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = address.ipv4.bigEndian
        return sa
    }

    func send(_ bytes: [UInt8], to address: IPAddress, port: UInt16) throws {
        var peer = Self.socketAddress(address, port)
        let sent = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard sent == bytes.count else { throw NamespacePair.SetupError(message: "sendto: errno \(errno)") }
    }

    /// The next datagram, or nil once `deadline` has passed.
    func receive(until deadline: Date) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 { return Array(buffer[0..<count]) }
        }
        return nil
    }

    func close() { Glibc.close(fd) }
}
