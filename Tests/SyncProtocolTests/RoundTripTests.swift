import FlowModel
import SyncProtocol
import TestSupport
import Testing

/// encode → decode over generated flows, and exactly what survives the trip.
@Suite struct RoundTripTests {
    static let optionSets: [EncodeOptions] = [
        EncodeOptions(),
        EncodeOptions(includeTimeout: false),
        EncodeOptions(includeWindowScale: true),
        EncodeOptions(includeTimeout: false, includeWindowScale: true, includeZeroMark: true, includeEmptySynproxy: true),
    ]

    @Test(arguments: 0..<4) func generatedMessagesRoundTrip(_ optionIndex: Int) throws {
        let options = Self.optionSets[optionIndex]
        var rng = SeededGenerator(seed: 0x5eed_0000 + UInt64(optionIndex))
        for _ in 0..<2_500 {
            let message = FlowGenerator.message(&rng)
            let bytes = SyncWire.encode(message, options: options)
            #expect(bytes.count % 4 == 0)
            #expect(Int(bytes[2]) << 8 | Int(bytes[3]) == bytes.count)
            #expect(bytes.count <= SyncProtocol.maximumMessageSize)
            let (decoded, length) = try SyncWire.decodeMessage(bytes)
            #expect(length == bytes.count)
            #expect(decoded.sequence == message.sequence && decoded.hello == message.hello)
            switch (message.body, decoded.body) {
            case (.flow(let kind, let flow), .flow(let decodedKind, let decodedFlow)):
                #expect(kind == decodedKind)
                // The oracle is the receiver model below, written from conntrackd's rules, not
                // the encoder's own projection (which must agree with it too).
                let expected = ConntrackdReceiver.received(flow, options: options)
                #expect(decodedFlow == expected, "\(FlowJSON.encode(decodedFlow))\n  vs \(FlowJSON.encode(expected))")
                #expect(SyncWire.asReceived(flow, options: options) == expected)
                // What survives is a fixed point: it travels unchanged and encodes to the same bytes.
                #expect(SyncWire.asReceived(expected, options: options) == expected)
                #expect(
                    SyncWire.encode(SyncMessage(sequence: message.sequence, hello: message.hello, body: .flow(kind, expected)), options: options)
                        == bytes)
            default:
                #expect(decoded == message)
            }
        }
    }

    @Test func datagramsOfPackedMessagesDecodeInOrder() throws {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<200 {
            let messages = (0..<Int.random(in: 1...20, using: &rng)).map { _ in FlowGenerator.message(&rng) }
            var datagram: [UInt8] = []
            for message in messages { SyncWire.encode(message, into: &datagram) }
            let (decoded, error) = SyncWire.decodeDatagram(datagram)
            #expect(error == nil)
            #expect(decoded.count == messages.count)
            let frames = datagram.withUnsafeBytes { SyncWire.decodeFrames($0) }
            #expect(frames.error == nil && frames.frames.count == messages.count)
            for (frame, message) in zip(frames.frames, messages) {
                #expect(frame.header.sequence == message.sequence)
                #expect((try? frame.message.get()) != nil)
            }
            for (a, b) in zip(decoded, messages) {
                if case .flow(_, let flow) = b.body {
                    #expect(a.flow == ConntrackdReceiver.received(flow, options: EncodeOptions()))
                } else {
                    #expect(a == b)
                }
            }
        }
    }

    /// The reference's bulk resync over a 1500-byte link: 25 messages of 84 bytes went out as
    /// 1428 bytes (17 messages) and 672 bytes (8).
    @Test func datagramsArePackedAsConntrackdPacksThem() throws {
        let flow = Flow(
            proto: .tcp, original: Tuple(source: a, destination: b, sourcePort: 40000, destinationPort: 80),
            tcp: TCPInfo(state: .established), status: [.assured, .confirmed], timeout: 300, mark: 7)
        let messages = (0..<25).map { SyncMessage(sequence: UInt32($0), body: .flow(.new, flow)) }
        let options = EncodeOptions(includeEmptySynproxy: true)
        let datagrams = SyncWire.datagrams(messages, bufferSize: 1500 - 28, options: options)
        #expect(datagrams.map(\.count) == [1428, 672])
        #expect(datagrams.flatMap { SyncWire.decodeDatagram($0).messages }.map(\.sequence) == (0..<25).map { UInt32($0) })
        // Strictly below the buffer size: 84 × 17 = 1428 does not fit a 1428-byte buffer.
        #expect(SyncWire.datagrams(messages, bufferSize: 1428, options: options).map(\.count) == [1344, 756])
        // A message that fits nothing still goes, alone.
        #expect(SyncWire.datagrams(Array(messages[0..<2]), bufferSize: 50, options: options).map(\.count) == [84, 84])
    }

    // MARK: What survives, rule by rule

    let a = ip("198.18.0.1")
    let b = ip("198.18.0.2")
    var base: Flow {
        Flow(
            proto: .tcp, original: Tuple(source: a, destination: b, sourcePort: 1000, destinationPort: 80),
            tcp: TCPInfo(state: .established), status: [.confirmed, .assured, .seenReply], timeout: 120, mark: 5)
    }

    func trip(_ flow: Flow, _ options: EncodeOptions = .init()) throws -> Flow {
        let (message, _) = try SyncWire.decodeMessage(SyncWire.encode(SyncMessage(sequence: 1, body: .flow(.new, flow)), options: options))
        return try #require(message.flow)
    }

    @Test func aKernelLikeFlowSurvivesWhole() throws {
        var flow = base
        flow.labels = FlowLabels(bits: [1, 127])
        flow.zone = 3
        flow.helper = "ftp"
        flow.status.formUnion([.srcNAT, .srcNATDone, .dstNAT, .dstNATDone])
        flow.reply = Tuple(source: ip("198.18.7.7"), destination: ip("198.18.9.9"), sourcePort: 8080, destinationPort: 1234)
        #expect(try trip(flow) == flow)
        #expect(SyncWire.asReceived(flow) == flow)
    }

    @Test func natTravelsOnlyWithItsStatusBit() throws {
        var flow = base
        flow.reply = Tuple(source: ip("198.18.7.7"), destination: ip("198.18.9.9"), sourcePort: 8080, destinationPort: 1234)
        // No NAT status bits: conntrackd (libnetfilter_conntrack's IS_SNAT/IS_DNAT) sends no NAT.
        #expect(try trip(flow).reply == flow.original.inverted)
        flow.status.insert(.srcNATDone)
        var expected = flow.original.inverted
        expected.destination = ip("198.18.9.9")
        expected.destinationPort = 1234
        #expect(try trip(flow).reply == expected)
        flow.status.insert(.dstNATDone)
        #expect(try trip(flow).reply == flow.reply)
    }

    @Test func optionsDecideTimeoutAndWindowScale() throws {
        var flow = base
        flow.tcp = TCPInfo(state: .established, originalFlags: 3, replyFlags: 4, originalWindowScale: 7, replyWindowScale: 8)
        #expect(try trip(flow).tcp == TCPInfo(state: .established))
        #expect(
            try trip(flow, EncodeOptions(includeWindowScale: true)).tcp == TCPInfo(state: .established, originalWindowScale: 7, replyWindowScale: 8))
        #expect(try trip(flow).timeout == 120)
        #expect(try trip(flow, EncodeOptions(includeTimeout: false)).timeout == nil)
    }

    @Test func fieldsThatNeverTravel() throws {
        var flow = base
        flow.counters = FlowCounters(originalPackets: 1, originalBytes: 2, replyPackets: 3, replyBytes: 4)
        flow.use = 2
        flow.id = 77
        flow.icmp = ICMPInfo(type: 8, code: 0, id: 1)  // ICMP fields on a TCP flow
        flow.sctp = SCTPInfo(state: SCTPState(rawValue: 4))
        let back = try trip(flow)
        #expect(back.counters == nil && back.use == nil && back.id == nil && back.icmp == nil && back.sctp == nil)
        #expect(back == base)

        var dccp = Flow(proto: .dccp, original: Tuple(source: a, destination: b, sourcePort: 1, destinationPort: 2))
        dccp.dccp = DCCPInfo(state: DCCPState(rawValue: 4), role: 1, handshakeSequence: 12345)
        #expect(try trip(dccp).dccp == DCCPInfo(state: DCCPState(rawValue: 4), role: 1))
    }

    @Test func helperNamesPeersWouldRejectAreLeftOut() throws {
        var flow = base
        for (name, expected) in [
            ("ftp", "ftp"), ("elevenchars", "elevenchars"), ("twelve-chars", nil), ("fifteen-chars15", nil), ("", nil),
            ("sip\0junk", "sip"),
        ] as [(String, String?)] {
            flow.helper = name
            #expect(try trip(flow).helper == expected, "\(name)")
        }
    }

    /// conntrackd has no port builder for UDPLite and GRE; ctsync sends their ports (and GRE
    /// keys), which conntrackd receivers accept.
    @Test func portsOfUDPLiteAndGRETravel() throws {
        for proto in [L4Protocol.udplite, .gre] {
            let flow = Flow(proto: proto, original: Tuple(source: a, destination: b, sourcePort: 0x11, destinationPort: 0x22), timeout: 9)
            #expect(try trip(flow) == flow)
        }
        // A protocol without ports keeps none, whatever the tuple held.
        let esp = Flow(proto: L4Protocol(rawValue: 50), original: Tuple(source: a, destination: b, sourcePort: 1, destinationPort: 2))
        #expect(try trip(esp).original.sourcePort == 0)
    }

    @Test func labelsUpToBit127() throws {
        var flow = base
        for bits in [[0], [31], [32], [63, 64], [95, 96], [127], Array(0...127)] {
            flow.labels = FlowLabels(bits: bits)
            #expect(try trip(flow).labels.bits == bits)
        }
    }
}

/// What a conntrackd 1.4.7 receiver reconstructs from a flow message, modelled from
/// conntrackd's build.c and parse.c (docs/protocol.md), independently of ctsync's encoder: the
/// oracle of the round trips.
enum ConntrackdReceiver {
    /// Protocols whose ports travel (conntrackd: TCP, UDP, SCTP, DCCP; ctsync adds UDPLite and
    /// GRE, which conntrackd receivers accept).
    static let protocolsWithPorts: Set<UInt8> = [6, 17, 33, 47, 132, 136]

    static func received(_ sent: Flow, options: EncodeOptions) -> Flow {
        // Addresses travel in their family's width only.
        func inFamily(_ address: IPAddress) -> IPAddress {
            sent.family == .ipv4 ? IPAddress(ipv4: address.ipv4) : IPAddress(ipv6High: address.high, low: address.low)
        }
        let ports = protocolsWithPorts.contains(sent.proto.rawValue)
        let source = inFamily(sent.original.source)
        let destination = inFamily(sent.original.destination)
        let sourcePort = ports ? sent.original.sourcePort : 0
        let destinationPort = ports ? sent.original.destinationPort : 0
        // No reply tuple travels: the receiver inverts the original, then applies the NAT
        // attributes, which go only with their "done" status bit and only where the reply
        // differs from the inverted original.
        var replySource = destination
        var replyDestination = source
        var replySourcePort = destinationPort
        var replyDestinationPort = sourcePort
        if sent.status.contains(.srcNATDone) {
            if inFamily(sent.reply.destination) != source { replyDestination = inFamily(sent.reply.destination) }
            if ports && sent.reply.destinationPort != sent.original.sourcePort { replyDestinationPort = sent.reply.destinationPort }
        }
        if sent.status.contains(.dstNATDone) {
            if inFamily(sent.reply.source) != destination { replySource = inFamily(sent.reply.source) }
            if ports && sent.reply.sourcePort != sent.original.destinationPort { replySourcePort = sent.reply.sourcePort }
        }
        var flow = Flow(
            proto: sent.proto,
            original: Tuple(source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort),
            reply: Tuple(source: replySource, destination: replyDestination, sourcePort: replySourcePort, destinationPort: replyDestinationPort),
            status: sent.status, timeout: options.includeTimeout ? sent.timeout : nil, mark: sent.mark, zone: sent.zone)
        flow.family = sent.family
        if sent.proto == .icmp || sent.proto == .icmpv6 { flow.icmp = sent.icmp }
        // Protocol state only for its own protocol; TCP window flags and DCCP's handshake
        // sequence never travel, window scales only with TCPWindowTracking.
        if sent.proto == .tcp, let tcp = sent.tcp {
            flow.tcp = TCPInfo(state: tcp.state)
            if options.includeWindowScale {
                flow.tcp!.originalWindowScale = tcp.originalWindowScale
                flow.tcp!.replyWindowScale = tcp.replyWindowScale
            }
        }
        if sent.proto == .sctp { flow.sctp = sent.sctp }
        if sent.proto == .dccp, let dccp = sent.dccp { flow.dccp = DCCPInfo(state: dccp.state, role: dccp.role) }
        flow.labels = sent.labels
        // A helper name of 1 to 11 bytes (up to a NUL) travels; a longer one is refused by the
        // receiver's size check, so it is not sent.
        if let helper = sent.helper {
            let name = helper.split(separator: "\0", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            flow.helper = (1...11).contains(name.utf8.count) ? name : nil
        }
        flow.sequenceAdjustment = sent.sequenceAdjustment
        return flow
    }
}
