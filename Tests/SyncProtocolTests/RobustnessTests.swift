import FlowModel
import SyncProtocol
import TestSupport
import Testing

/// Throws over a million broken inputs at the decoder: mutated valid messages, attribute soups,
/// random buffers, every truncation, odd addresses. Nothing may trap; every answer must be
/// consistent (lengths within the input, frames tiling the datagram, decoded flows re-encodable).
@Suite struct RobustnessTests {
    /// Valid messages to mutate: generated ones of every kind plus the conntrackd captures.
    static let corpus: [[UInt8]] = {
        var rng = SeededGenerator(seed: 0xC0FFEE)
        var out = (0..<400).map { _ in
            SyncWire.encode(FlowGenerator.message(&rng), options: EncodeOptions(includeWindowScale: true, includeEmptySynproxy: true))
        }
        out.append(GoldenTests.referenceCapture)
        return out
    }()

    /// Four strategies of this many inputs each: over a million in all.
    static let perStrategy = 260_000

    enum Strategy: String, CaseIterable, Sendable {
        case mutatedMessages, attributeSoup, randomBuffers, truncationsAndOddAddresses
    }

    struct Tally {
        var inputs = 0
        var accepted = 0
        var errors: [NetworkErrorCounter: Int] = [:]
    }

    @Test(arguments: Strategy.allCases) func decoderNeverTrapsAndStaysConsistent(_ strategy: Strategy) throws {
        let clock = ContinuousClock()
        let start = clock.now
        var tally = Tally()
        var rng = SeededGenerator(seed: 0xBAD_5EED &+ UInt64(strategy.rawValue.utf8.count))
        switch strategy {
        case .mutatedMessages:
            for _ in 0..<Self.perStrategy {
                var bytes = Self.corpus.randomElement(using: &rng)!
                Self.mutate(&bytes, &rng)
                check(bytes, &tally)
            }
        case .attributeSoup:
            for _ in 0..<Self.perStrategy { check(Self.soup(&rng), &tally) }
        case .randomBuffers:
            for _ in 0..<Self.perStrategy {
                var bytes: [UInt8] = []
                let count = Int(rng.next() % 41)
                bytes.reserveCapacity(count)
                while bytes.count < count {
                    let word = rng.next()
                    for shift in stride(from: 0, to: min(64, (count - bytes.count) * 8), by: 8) {
                        bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
                    }
                }
                // Mostly version 1 and a length within the buffer, so the decoder gets past the header.
                if bytes.count >= 4 && Int.random(in: 0..<4, using: &rng) != 0 {
                    bytes[0] = 0x10 | bytes[0] & 0x0f
                    bytes[2] = 0
                    bytes[3] = UInt8(Int.random(in: 0...bytes.count, using: &rng))
                }
                check(bytes, &tally)
            }
        case .truncationsAndOddAddresses:
            // Every prefix of every corpus message, then the whole corpus packed into datagrams
            // decoded from an odd address.
            for message in Self.corpus {
                for length in 0...message.count { check(Array(message[0..<length]), &tally, oddAddress: length % 2 == 1) }
            }
            while tally.inputs < Self.perStrategy {
                var datagram: [UInt8] = []
                for _ in 0..<Int.random(in: 1...4, using: &rng) { datagram += Self.corpus.randomElement(using: &rng)! }
                if Bool.random(using: &rng) { Self.mutate(&datagram, &rng) }
                check(datagram, &tally, oddAddress: true)
            }
        }
        let elapsed = clock.now - start
        print(
            "\(strategy.rawValue): \(tally.inputs) inputs in \(elapsed), \(tally.accepted) whole datagrams accepted, errors \(tally.errors.map { "\($0.key.rawValue): \($0.value)" }.sorted())"
        )
        #expect(tally.inputs >= Self.perStrategy)
    }

    /// Decodes `bytes` as one message and as a datagram, both ways, and checks the answers agree.
    func check(_ bytes: [UInt8], _ tally: inout Tally, oddAddress: Bool = false) {
        tally.inputs += 1
        if oddAddress {
            // One byte of padding in front puts the message at an odd address.
            let padded = [0xee] + bytes
            padded.withUnsafeBytes { raw in check(UnsafeRawBufferPointer(rebasing: raw[1...]), &tally) }
        } else {
            bytes.withUnsafeBytes { check($0, &tally) }
        }
    }

    func check(_ raw: UnsafeRawBufferPointer, _ tally: inout Tally) {
        // Plain comparisons, recorded only when they fail: a million #expect calls would cost
        // more than the decoding under test.
        func require(_ condition: Bool, _ what: @autoclosure () -> String) {
            if !condition { Issue.record("\(what()) for \(hexString(Array(raw)))") }
        }
        let single: (SyncMessage, Int)?
        do throws(WireError) {
            single = try SyncWire.decodeMessage(raw)
        } catch {
            single = nil
        }
        if let (_, length) = single {
            require(length >= SyncProtocol.headerSize && length <= raw.count, "length \(length)")
        }

        let (frames, framingError) = SyncWire.decodeFrames(raw)
        var offset = 0
        var good: [SyncMessage] = []
        var allGood = true
        for frame in frames {
            require(frame.offset == offset, "frame at \(frame.offset), expected \(offset)")
            offset += Int(frame.header.length)
            if case .success(let message) = frame.message {
                if allGood { good.append(message) }
            } else {
                allGood = false
            }
        }
        require(offset <= raw.count, "frames end at \(offset)")
        require((framingError == nil) == (offset == raw.count), "framing error \(String(describing: framingError)) at \(offset)")
        if let framingError { require(framingError.isFraming, "\(framingError) is not a framing error") }
        if let first = frames.first {
            // The first frame and decodeMessage agree.
            switch first.message {
            case .success(let message): require(single?.0 == message, "first frame differs")
            case .failure: require(single == nil, "first frame failed, decodeMessage did not")
            }
        } else {
            require(single == nil, "no frame, but decodeMessage succeeded")
        }

        let (messages, error) = SyncWire.decodeDatagram(raw)
        // decodeDatagram stops at the first bad frame; until then both agree message by message.
        require(messages == good, "decodeDatagram and decodeFrames differ")
        if let error {
            tally.errors[error.statsCategory, default: 0] += 1
            if tally.inputs % 97 == 0 { require(!error.description.isEmpty, "empty description") }
        } else {
            tally.accepted += 1
            require(allGood && framingError == nil, "decodeDatagram accepted what decodeFrames did not")
        }

        // Whatever was accepted can be sent on: it encodes, decodes, and stays what it was (the
        // flow as it survives a trip).
        if let (message, _) = single, tally.inputs % 4 == 0 {
            let again = SyncWire.encode(message)
            let back = try? SyncWire.decodeMessage(again).0
            require(back != nil, "re-encoded message does not decode")
            if case .flow(let kind, let flow) = message.body {
                require(back?.body == .flow(kind, SyncWire.asReceived(flow)), "re-encoded flow differs")
            } else if case .expectation(var expectation) = message.body {
                // An empty attribute in a message's last 4 bytes is ignored on receipt (as by
                // conntrackd), so one that ends up there is not seen again.
                if expectation.attributes.last?.1.isEmpty == true { expectation.attributes.removeLast() }
                require(back == SyncMessage(sequence: message.sequence, hello: message.hello, body: .expectation(expectation)), "expectation differs")
            } else {
                require(back == message, "control message differs")
            }
        }
    }

    /// 1 to 4 changes: a random byte, a flipped bit, an interesting value in a length field, a
    /// cut, or a few random bytes appended.
    static func mutate(_ bytes: inout [UInt8], _ rng: inout SeededGenerator) {
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            guard !bytes.isEmpty else { return }
            let at = Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<7, using: &rng) {
            case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 1: bytes[at] ^= 1 << UInt8.random(in: 0...7, using: &rng)
            case 2, 3:
                // Attribute and message lengths sit at 4-byte boundaries (offset 0 of an attribute,
                // offset 2 of the header): aim there with values around the edges.
                let slot = at & ~3 + (at < 8 ? 2 : 0)
                let value = [0, 1, 3, 4, 5, 6, 7, 8, 12, 15, 16, 17, 20, 36, 255, 1028, 1029, 4096, 0xffff].randomElement(using: &rng)!
                if slot + 1 < bytes.count {
                    bytes[slot] = UInt8(value >> 8)
                    bytes[slot + 1] = UInt8(value & 0xff)
                }
            case 4:
                // An attribute id at or above the limit, or a neighbour's.
                let slot = (at & ~3) + 2
                if slot + 1 < bytes.count { bytes[slot + 1] = UInt8.random(in: 0...40, using: &rng) }
            case 5: bytes.removeLast(Int.random(in: 0...min(bytes.count, 12), using: &rng))
            default: bytes += (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
    }

    /// A valid header followed by attributes with ids around the defined range and lengths that
    /// are mostly right: the decoder's payload rules get exercised, not just its header checks.
    static func soup(_ rng: inout SeededGenerator) -> [UInt8] {
        let type: UInt8 = [0, 1, 2, 3, 4, 5, 10, 6].randomElement(using: &rng)!
        var bytes: [UInt8] = [0x10 | type, [0, 0x20, 0x40, 0x08, 0x10, 0x01].randomElement(using: &rng)!, 0, 0, 0, 0, 0, 1]
        for _ in 0..<Int.random(in: 0...9, using: &rng) {
            let limit = type >= 3 && type <= 5 ? ExpectationAttribute.limit : FlowAttribute.limit
            let id = UInt16(Int.random(in: 0..<(Int(limit) + 3), using: &rng))
            let fixed = type >= 3 && type <= 5 ? ExpectationAttribute(rawValue: id)?.fixedLength : FlowAttribute(rawValue: id)?.fixedLength
            let length =
                Int.random(in: 0..<8, using: &rng) == 0 ? Int.random(in: 0...24, using: &rng) : (fixed ?? Int.random(in: 4...20, using: &rng))
            bytes += [UInt8(length >> 8), UInt8(length & 0xff), UInt8(id >> 8), UInt8(id & 0xff)]
            var payload = (0..<max(0, length - 4)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if id == FlowAttribute.l4proto.rawValue, !payload.isEmpty {
                payload[0] = [6, 17, 1, 58, 132, 33, 47, 136, 50].randomElement(using: &rng)!
            }
            bytes += payload
            while bytes.count % 4 != 0 { bytes.append(0) }
        }
        let length = Int.random(in: 0..<10, using: &rng) == 0 ? Int.random(in: 0...bytes.count + 4, using: &rng) : bytes.count
        bytes[2] = UInt8(truncatingIfNeeded: length >> 8)
        bytes[3] = UInt8(truncatingIfNeeded: length)
        return bytes
    }

    /// Each rule of the decoder, one typed error each.
    @Test func eachMalformationHasItsError() throws {
        func decode(_ text: String) -> WireError? {
            do throws(WireError) {
                _ = try SyncWire.decodeMessage(hex(text))
                return nil
            } catch {
                return error
            }
        }
        let ipv4 = "000c0000c6120001c6120002"
        let status = "0008000500000008"
        let tcp = "0005000206000000"
        let udp = "0005000211000000"
        let icmp = "0005000201000000"
        let ports = "0008000300010002"
        func flow(_ attributes: String...) -> String {
            let body = attributes.joined().filter { !$0.isWhitespace }
            let length = 8 + body.count / 2
            return "1000" + String(format4(length)) + "00000001" + body
        }
        let cases: [(String, WireError)] = [
            ("", .truncated(need: 8, have: 0)),
            ("1000 00", .truncated(need: 8, have: 3)),
            ("1000 0000 00000001", .badLength(length: 0, available: 8)),
            ("1000 0010 00000001", .badLength(length: 16, available: 8)),
            ("1000 0004 00000001", .badLength(length: 4, available: 8)),
            ("1a08 000c 00000001 00000001", .truncated(need: 16, have: 12)),
            ("1a08 0010 00000001 00000001", .badLength(length: 16, available: 12)),
            ("1a08 000c 00000001 00000001 00000002", .badLength(length: 12, available: 16)),
            ("2000 0008 00000001", .badVersion(2)),
            ("0a08 0010 00000001 00000001 00000002", .badVersion(0)),
            ("1600 0008 00000001", .badType(6)),
            ("1f00 0008 00000001", .badType(15)),
            ("1008 0008 00000001", .badFlags(type: 0, flags: 0x08)),
            ("1001 0008 00000001", .badFlags(type: 0, flags: 0x01)),
            ("1a00 0008 00000001", .badFlags(type: 10, flags: 0)),
            ("1a0c 0010 00000001 00000001 00000002", .badFlags(type: 10, flags: 0x0c)),
            ("1a90 0008 00000001", .badFlags(type: 10, flags: 0x90)),
            (flow(ipv4, "0010000500000008"), .attributeTruncated(id: 5, length: 16, remaining: 8)),
            (flow(ipv4, "0003000500000008"), .badAttributeLength(id: 5, length: 3)),
            (flow(ipv4, "0009000500000008 00000000"), .badAttributeLength(id: 5, length: 9)),
            (flow(ipv4, "0008002100000008"), .unknownAttribute(id: 33)),
            (flow(ipv4, "0008ffff00000008"), .unknownAttribute(id: 0xffff)),
            (flow(ipv4, status, status, tcp, ports), .duplicateAttribute(id: 5)),
            (flow(status, tcp, ports), .missingAttribute("NTA_IPV4 or NTA_IPV6")),
            (flow(ipv4, status, ports), .missingAttribute("NTA_L4PROTO")),
            (flow(ipv4, status, tcp), .missingAttribute("NTA_PORT")),
            (flow(ipv4, "00240001" + String(repeating: "00", count: 32), tcp, ports), .contradictory("both NTA_IPV4 and NTA_IPV6")),
            (flow(ipv4, icmp, ports), .contradictory("NTA_PORT on protocol 1")),
            (flow(ipv4, udp, ports, "0005000403000000"), .contradictory("TCP attributes on protocol 17")),
            (flow(ipv4, tcp, ports, "0005001903000000"), .contradictory("TCP window scale without a TCP state")),
            (flow(ipv4, tcp, ports, "0005001608000000"), .contradictory("ICMP attributes on protocol 6")),
            (flow(ipv4, icmp, "0005001700000000"), .contradictory("ICMP code or id without a type")),
            (flow(ipv4, tcp, ports, "0005001104000000"), .contradictory("SCTP attributes on protocol 6")),
            (flow(ipv4, tcp, ports, "0005001404000000"), .contradictory("DCCP attributes on protocol 6")),
            (flow(ipv4, "0005000232000000", "0006000e01000000"), .contradictory("NAT port on protocol 50")),
            (flow(ipv4, tcp, ports, "0014001d20010db8000000000000000000000099"), .contradictory("ipv4 flow with an ipv6 source NAT address")),
            // Helper names: 11 characters pass, 12 are rejected as conntrackd does.
            (flow(ipv4, tcp, ports, "0011001b 616263646566676869 6a6b6c00 00000000"), .badAttributeLength(id: 27, length: 17)),
            (flow(ipv4, tcp, ports, "0008001b ff000000"), .badHelperName),
            // Labels: words of 32 bits, at most 1024 bytes, no bit above 127.
            (flow(ipv4, tcp, ports, "0006001c 01000000"), .badAttributeLength(id: 28, length: 6)),
            (flow(ipv4, tcp, ports, "0018001c 00000000 00000000 00000000 00000000 00000002"), .labelOutOfRange(bit: 129)),
            (flow(ipv4, tcp, ports, "0405001c" + String(repeating: "00", count: 1025 + 3)), .badAttributeLength(id: 28, length: 1029)),
            // Expectations: ids below 21, checked before the length.
            ("1300 0010 00000001 00080015 00000000", .unknownAttribute(id: 21)),
            ("1300 0010 00000001 00020002 00000000", .badAttributeLength(id: 2, length: 2)),
            ("1300 0010 00000001 00060002 00000000", .badAttributeLength(id: 2, length: 6)),
            ("1300 001c 00000001 00110013 00000000 00000000 00000000 00000000", .badAttributeLength(id: 19, length: 17)),
        ]
        for (text, expected) in cases {
            #expect(decode(text) == expected, "\(text)")
        }
        #expect(WireError.truncated(need: 8, have: 0).statsCategory == .truncated)
        #expect(WireError.badLength(length: 0, available: 8).statsCategory == .badSize)
        #expect(WireError.badVersion(2).statsCategory == .wrongVersion)
        #expect(WireError.badType(6).statsCategory == .badType)
        #expect(WireError.badFlags(type: 0, flags: 8).statsCategory == .malformedHeader)
        #expect(WireError.labelOutOfRange(bit: 200).statsCategory == .malformedPayload)
        #expect(
            NetworkErrorCounter.allCases.map(\.rawValue) == [
                "Wrong protocol version", "Malformed header", "Malformed payload", "Bad message type", "Truncated message", "Bad message size",
            ])
    }

    /// What conntrackd tolerates, ctsync tolerates too.
    @Test func conntrackdsLeniencies() throws {
        // An 11-character helper name is the longest accepted.
        let flow = "000c0000c6120001c6120002 0005000206000000 0008000300010002"
        let eleven = try SyncWire.decodeMessage(hex("1000 0034 00000001 " + flow + "0010001b 6162636465666768696a6b00"))
        #expect(eleven.0.flow?.helper == "abcdefghijk")
        // Up to 4 trailing bytes after the last attribute are ignored, and the last attribute's
        // padding may be missing (the length need not be a multiple of 4).
        let unpadded = try SyncWire.decodeMessage(hex("1000 0029 00000001 " + flow + "00050004 03"))
        #expect(unpadded.1 == 0x29 && unpadded.0.flow?.tcp?.state == .established)
        let ignored = try SyncWire.decodeMessage(hex("1000 0028 00000001 " + flow + "ffffffff"))
        #expect(ignored.0.flow?.proto == .tcp)
        // A longer ACK or ALIVE than needed: the extra bytes belong to the message and are skipped.
        let (frames, error) = hex("1a08 0014 00000001 00000001 00000002 ffffffff 1a10 0008 00000002").withUnsafeBytes { SyncWire.decodeFrames($0) }
        #expect(error == nil && frames.count == 2 && frames[1].offset == 20)
        // Master tuple and synproxy attributes are valid and skipped.
        let master = try SyncWire.decodeMessage(
            hex("1000 0050 00000001 " + flow + "000c0008c6120001c6120002 0005000a06000000 0008000b00010002 0010001f000000000000000000000000"))
        #expect(master.0.flow?.original.destination == ip("198.18.0.2"))
        // A reversed ACK range is the state machine's business (conntrackd's FTFW digest), not the codec's.
        #expect(try SyncWire.decodeMessage(hex("1a08 0010 00000001 00000009 00000002")).0.body == .ack(from: 9, to: 2))
    }

    /// A payload error spoils one message; a framing error ends the datagram (conntrackd's loop).
    @Test func framesContinueAfterAPayloadError() throws {
        let good = SyncWire.encode(SyncMessage(sequence: 1, body: .alive))
        let bad = hex("1000 0010 00000002 0008002100000000")  // attribute id 33
        let badVersion = hex("2000 0008 00000003")
        let datagram = good + bad + badVersion + good + hex("1000 0040 0000")
        let (frames, error) = datagram.withUnsafeBytes { SyncWire.decodeFrames($0) }
        #expect(frames.count == 4)
        #expect(frames.map(\.header.sequence) == [1, 2, 3, 1])
        #expect(frames[1].message == .failure(.unknownAttribute(id: 33)))
        #expect(frames[2].message == .failure(.badVersion(2)))
        #expect(error == .truncated(need: 8, have: 6))
        let (messages, stop) = SyncWire.decodeDatagram(datagram)
        #expect(messages.count == 1 && stop == .unknownAttribute(id: 33))
    }
}

private func format4(_ value: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
