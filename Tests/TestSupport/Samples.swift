import FlowModel

/// Flows of every shape the tests use.
public enum Samples {
    public static func tcp(
        _ src: String = "198.18.0.1", _ dst: String = "198.18.0.2", sport: UInt16 = 40000, dport: UInt16 = 80
    ) -> Flow {
        var f = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress(src)!, destination: IPAddress(dst)!, sourcePort: sport, destinationPort: dport),
            tcp: TCPInfo(state: .established, originalFlags: 0x23, replyFlags: 0x03, originalWindowScale: 7, replyWindowScale: 9),
            status: [.seenReply, .assured, .confirmed], timeout: 431_999, mark: 7)
        f.id = 42
        f.use = 1
        return f
    }

    public static var all: [Flow] {
        var flows: [Flow] = [tcp()]
        var zoned = tcp("198.18.0.3", "198.18.0.4", sport: 1, dport: 2)
        zoned.zone = 9
        zoned.labels = FlowLabels(bits: [1, 70])
        zoned.helper = "ftp"
        zoned.sequenceAdjustment = NATSequenceAdjustment(
            original: SequenceAdjustment(correctionPosition: 1, offsetBefore: 2, offsetAfter: 3),
            reply: SequenceAdjustment(correctionPosition: 4, offsetBefore: 5, offsetAfter: 6))
        flows.append(zoned)
        var snat = tcp("198.18.1.10", "198.19.0.80", sport: 5555, dport: 443)
        snat.reply = Tuple(
            source: IPAddress("198.19.0.80")!, destination: IPAddress("198.18.255.1")!, sourcePort: 443, destinationPort: 61000)
        snat.status.formUnion([.srcNAT, .srcNATDone])
        flows.append(snat)
        flows.append(tcp("2001:db8::1", "2001:db8::2", sport: 1234, dport: 22))
        var udp = Flow(
            proto: .udp,
            original: Tuple(source: IPAddress("198.18.0.5")!, destination: IPAddress("198.18.0.53")!, sourcePort: 5353, destinationPort: 53),
            timeout: 30)
        udp.mark = 0xffff_ffff
        flows.append(udp)
        flows.append(
            Flow(
                proto: .icmp, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!),
                icmp: ICMPInfo(type: 8, code: 0, id: 77), timeout: 29))
        flows.append(
            Flow(
                proto: .icmpv6, original: Tuple(source: IPAddress("2001:db8::1")!, destination: IPAddress("2001:db8::2")!),
                icmp: ICMPInfo(type: 128, code: 0, id: 3), timeout: 29))
        var sctp = Flow(
            proto: .sctp, original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 7, destinationPort: 8),
            timeout: 100)
        sctp.sctp = SCTPInfo(state: SCTPState(name: "ESTABLISHED")!, originalVerificationTag: 0xdead_beef, replyVerificationTag: 5)
        flows.append(sctp)
        var dccp = Flow(
            proto: .dccp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 9, destinationPort: 10),
            timeout: 100)
        dccp.dccp = DCCPInfo(state: DCCPState(name: "OPEN")!, role: 1, handshakeSequence: 1 << 40)
        flows.append(dccp)
        flows.append(
            Flow(
                proto: .gre,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 0x10, destinationPort: 0x20),
                timeout: 100))
        flows.append(
            Flow(
                proto: .udplite,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1, destinationPort: 2),
                timeout: 100))
        return flows
    }
}

/// Flows whose wire form is pinned by a capture of conntrackd 1.4.7.
public enum GoldenFlows {
    /// A TCP flow with every attribute conntrackd sends (made in a kernel, synced by conntrackd
    /// with TCPWindowTracking on, its message captured): SNAT with a port, mark, zone, helper,
    /// labels, sequence adjustment, window scales.
    public static var everyAttribute: Flow {
        var flow = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.40")!, sourcePort: 40009, destinationPort: 21),
            tcp: TCPInfo(state: .established, originalWindowScale: 7, replyWindowScale: 9),
            status: [.seenReply, .assured, .seqAdjust, .helper], timeout: 3000, mark: 1, zone: 0x0102)
        flow.reply = Tuple(source: IPAddress("198.18.0.40")!, destination: IPAddress("198.18.9.9")!, sourcePort: 21, destinationPort: 0x0a0b)
        flow.helper = "ftp"
        flow.labels = FlowLabels(bits: [0, 33, 64, 127])
        flow.sequenceAdjustment = NATSequenceAdjustment(
            original: SequenceAdjustment(correctionPosition: 1000, offsetBefore: 0, offsetAfter: 4),
            reply: SequenceAdjustment(correctionPosition: 2000, offsetBefore: 0, offsetAfter: 0))
        return flow
    }
}
