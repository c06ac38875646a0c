import FlowModel

/// What conntrackd's configuration (or the origin of a flow) changes in the bytes it sends.
/// The defaults give what conntrackd 1.4.7 sends with its default configuration for a flow the
/// kernel created from traffic.
public struct EncodeOptions: Sendable, Equatable {
    /// conntrackd omits NTA_TIMEOUT when CommitTimeout is configured.
    public var includeTimeout = true
    /// conntrackd sends NTA_TCP_WSCALE_* only with TCPWindowTracking on.
    public var includeWindowScale = false
    /// Send NTA_MARK when the mark is zero. conntrackd sends the mark whenever the kernel reported
    /// one: always for flows created over ctnetlink (`conntrack -I`, a commit) and in dumps, but
    /// for flows created by traffic only when it is not zero.
    public var includeZeroMark = false
    /// Send an all-zero NTA_SYNPROXY. The kernel gives every flow created over ctnetlink a
    /// synproxy extension, so conntrackd sends one for them; ctsync keeps no synproxy state and
    /// never needs to.
    public var includeEmptySynproxy = false

    public init(
        includeTimeout: Bool = true, includeWindowScale: Bool = false, includeZeroMark: Bool = false,
        includeEmptySynproxy: Bool = false
    ) {
        self.includeTimeout = includeTimeout
        self.includeWindowScale = includeWindowScale
        self.includeZeroMark = includeZeroMark
        self.includeEmptySynproxy = includeEmptySynproxy
    }
}

/// A message header as it arrived: the fields are raw (the version may be wrong, the type
/// unknown, the flags anything), so a receiver can account for a message whose payload it rejects.
public struct MessageHeader: Sendable, Equatable {
    public var version: UInt8
    public var type: UInt8
    public var flags: MessageFlags
    /// The whole message's length, header included (not necessarily a multiple of 4).
    public var length: UInt16
    public var sequence: UInt32

    public init(version: UInt8, type: UInt8, flags: MessageFlags, length: UInt16, sequence: UInt32) {
        self.version = version
        self.type = type
        self.flags = flags
        self.length = length
        self.sequence = sequence
    }
}

/// One message of a datagram split the way conntrackd's receive loop splits it: where it starts,
/// its header, and the message or why it is malformed.
public struct WireFrame: Sendable, Equatable {
    public var offset: Int
    public var header: MessageHeader
    public var message: Result<SyncMessage, WireError>

    public init(offset: Int, header: MessageHeader, message: Result<SyncMessage, WireError>) {
        self.offset = offset
        self.header = header
        self.message = message
    }
}

/// conntrackd 1.4.x's network message format, byte for byte (docs/protocol.md).
///
/// Encoding writes exactly what conntrackd writes for the same flow, in its order; decoding
/// applies conntrackd's receiver rules plus the consistency checks ctsync's flow model needs, and
/// never traps: every malformed input gives a `WireError`.
public enum SyncWire {
    // MARK: Encoding

    /// Appends one message's bytes (header + attributes, 4-byte aligned) to `buffer`.
    public static func encode(_ message: SyncMessage, into buffer: inout [UInt8], options: EncodeOptions = .init()) {
        let start = buffer.count
        let hello = message.hello.rawValue & Wire.helloFlags
        switch message.body {
        case .flow(let kind, let flow):
            putHeader(&buffer, type: kind.type.rawValue, flags: hello, sequence: message.sequence)
            FlowEncoder.put(flow, into: &buffer, options: options)
        case .expectation(let expectation):
            putHeader(&buffer, type: expectation.kind.expectationType.rawValue, flags: hello, sequence: message.sequence)
            putExpectation(expectation, into: &buffer, start: start)
        case .ack(let from, let to):
            putControl(&buffer, flags: MessageFlags.ack.rawValue | hello, sequence: message.sequence, from: from, to: to)
        case .nack(let from, let to):
            putControl(&buffer, flags: MessageFlags.nack.rawValue | hello, sequence: message.sequence, from: from, to: to)
        case .resync:
            putControl(&buffer, flags: MessageFlags.resync.rawValue | hello, sequence: message.sequence, from: 0, to: 0)
        case .alive:
            putHeader(&buffer, type: MessageType.control.rawValue, flags: MessageFlags.alive.rawValue | hello, sequence: message.sequence)
        }
        // Expectation attributes that would not fit are left out, so this always fits 16 bits.
        let length = UInt16(truncatingIfNeeded: buffer.count - start)
        buffer[start + 2] = UInt8(truncatingIfNeeded: length >> 8)
        buffer[start + 3] = UInt8(truncatingIfNeeded: length)
    }

    /// One message's bytes.
    public static func encode(_ message: SyncMessage, options: EncodeOptions = .init()) -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(128)
        encode(message, into: &buffer, options: options)
        return buffer
    }

    /// Packs messages into datagrams as conntrackd's buffered channels do: a message joins the
    /// current datagram while the datagram stays strictly below `bufferSize` (the link's MTU
    /// minus 28 for UDP and multicast, minus 40 for TCP), otherwise the datagram is sent and a
    /// new one started. A message that fits no datagram goes alone (conntrackd would retry it
    /// forever).
    public static func datagrams(_ messages: [SyncMessage], bufferSize: Int, options: EncodeOptions = .init()) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var current: [UInt8] = []
        var message: [UInt8] = []
        for item in messages {
            message.removeAll(keepingCapacity: true)
            encode(item, into: &message, options: options)
            if !current.isEmpty && current.count + message.count >= bufferSize {
                out.append(current)
                current.removeAll(keepingCapacity: true)
            }
            current += message
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// The flow a peer decodes from the message `encode` writes for `flow`: exactly what survives
    /// the trip. `SyncWire.decodeMessage(encode(m)).flow == asReceived(m.flow)` for every flow.
    ///
    /// - The reply tuple is rebuilt: the original inverted, then the NAT attributes applied. NAT
    ///   travels only with its status bit (`srcNATDone`, `dstNATDone`), as conntrackd decides it.
    /// - Ports only for protocols with ports; ICMP fields only for ICMP/ICMPv6; TCP, SCTP, DCCP
    ///   state only for that protocol.
    /// - TCP window-tracking flags, DCCP handshake sequence, counters, use and id never travel;
    ///   window scales only with `includeWindowScale`, the timeout only with `includeTimeout`.
    /// - A helper name travels only if it is 1...11 bytes (up to its first NUL, if any).
    public static func asReceived(_ flow: Flow, options: EncodeOptions = .init()) -> Flow {
        let wire = FlowEncoder.WireFlow(flow)
        var original = Tuple(source: wire.originalSource, destination: wire.originalDestination)
        if wire.hasPorts {
            original.sourcePort = flow.original.sourcePort
            original.destinationPort = flow.original.destinationPort
        }
        var reply = original.inverted
        if let snat = wire.sourceNAT { reply.destination = snat }
        if let dnat = wire.destinationNAT { reply.source = dnat }
        if let spat = wire.sourcePortNAT { reply.destinationPort = spat }
        if let dpat = wire.destinationPortNAT { reply.sourcePort = dpat }
        var received = Flow(
            proto: flow.proto, original: original, reply: reply, icmp: flow.proto.isICMP ? flow.icmp : nil,
            status: flow.status, timeout: options.includeTimeout ? flow.timeout : nil, mark: flow.mark, zone: flow.zone)
        received.family = flow.family
        if flow.proto == .tcp, let tcp = flow.tcp {
            received.tcp =
                options.includeWindowScale
                ? TCPInfo(state: tcp.state, originalWindowScale: tcp.originalWindowScale, replyWindowScale: tcp.replyWindowScale)
                : TCPInfo(state: tcp.state)
        }
        if flow.proto == .sctp { received.sctp = flow.sctp }
        if flow.proto == .dccp, let dccp = flow.dccp { received.dccp = DCCPInfo(state: dccp.state, role: dccp.role) }
        received.labels = flow.labels
        received.helper = FlowEncoder.helperBytes(flow.helper).map { String(decoding: $0, as: UTF8.self) }
        received.sequenceAdjustment = flow.sequenceAdjustment
        return received
    }

    // MARK: Decoding

    /// Decodes every message in one datagram (messages are packed back to back). Stops at the
    /// first malformed one: returns what decoded before it and the error.
    ///
    /// conntrackd itself stops only at a framing error (`WireError.isFraming`) and skips a single
    /// message whose header or payload is bad; `decodeFrames` gives that behaviour.
    public static func decodeDatagram(_ bytes: UnsafeRawBufferPointer) -> (messages: [SyncMessage], error: WireError?) {
        var messages: [SyncMessage] = []
        var offset = 0
        while offset < bytes.count {
            do throws(WireError) {
                let (message, length) = try decodeMessage(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                messages.append(message)
                offset += length
            } catch {
                return (messages, error)
            }
        }
        return (messages, nil)
    }

    /// `decodeDatagram` over an array.
    public static func decodeDatagram(_ bytes: [UInt8]) -> (messages: [SyncMessage], error: WireError?) {
        bytes.withUnsafeBytes { decodeDatagram($0) }
    }

    /// Decodes one message at the start of `bytes`; returns it and its length on the wire (the
    /// header's length field, which is where the next message of a datagram starts).
    public static func decodeMessage(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> (SyncMessage, Int) {
        let header = try decodeHeader(bytes)
        let message = try decodeBody(header, UnsafeRawBufferPointer(rebasing: bytes[0..<Int(header.length)]))
        return (message, Int(header.length))
    }

    /// `decodeMessage` over an array.
    public static func decodeMessage(_ bytes: [UInt8]) throws(WireError) -> (SyncMessage, Int) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(WireError) in try decodeMessage(raw) } }
        return try result.get()
    }

    /// Splits a datagram exactly as conntrackd's receive loop does: a framing error (too few
    /// bytes, a length that is zero, too short for its kind or past the end) ends the datagram and
    /// is returned; any other error concerns its own message only, which is still framed, so
    /// its header (sequence number, flags) is known, and the next message is decoded.
    public static func decodeFrames(_ bytes: UnsafeRawBufferPointer) -> (frames: [WireFrame], error: WireError?) {
        var frames: [WireFrame] = []
        let error = forEachFrame(bytes) { offset, header, message in
            frames.append(WireFrame(offset: offset, header: header, message: message))
        }
        return (frames, error)
    }

    /// `decodeFrames` without the array: each frame (its offset, header and decoded message or
    /// error) is handed to `body` as it is read, and the framing error that ended the reading,
    /// if any, is returned. The receive path's form: a message is decoded straight into the
    /// value the node digests, not copied through an array.
    @discardableResult
    public static func forEachFrame(
        _ bytes: UnsafeRawBufferPointer, _ body: (Int, MessageHeader, Result<SyncMessage, WireError>) -> Void
    ) -> WireError? {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            let header: MessageHeader
            do throws(WireError) {
                header = try decodeHeader(rest)
            } catch {
                return error
            }
            do throws(WireError) {
                body(offset, header, .success(try decodeBody(header, UnsafeRawBufferPointer(rebasing: rest[0..<Int(header.length)]))))
            } catch {
                body(offset, header, .failure(error))
            }
            offset += Int(header.length)
        }
        return nil
    }

    /// Reads and frames the header at the start of `bytes`, with conntrackd's checks in its order:
    /// 8 bytes present, length not zero and within the bytes, and at least 16 bytes (present and
    /// in the length) for ACK, NACK and RESYNC, 8 for anything else.
    public static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> MessageHeader {
        let count = bytes.count
        guard count >= SyncProtocol.headerSize else { throw .truncated(need: SyncProtocol.headerSize, have: count) }
        let header = MessageHeader(
            version: bytes[0] >> 4, type: bytes[0] & 0x0f, flags: MessageFlags(rawValue: bytes[1]),
            length: Wire.be16(bytes, 2), sequence: Wire.be32(bytes, 4))
        let length = Int(header.length)
        guard length != 0, length <= count else { throw .badLength(length: header.length, available: count) }
        let ackSized = header.type == MessageType.control.rawValue && header.flags.rawValue & Wire.ackSizedFlags != 0
        if ackSized {
            guard count >= SyncProtocol.controlSize else { throw .truncated(need: SyncProtocol.controlSize, have: count) }
            guard length >= SyncProtocol.controlSize else { throw .badLength(length: header.length, available: count) }
        } else {
            guard length >= SyncProtocol.headerSize else { throw .badLength(length: header.length, available: count) }
        }
        return header
    }

    // MARK: - Private

    private static func decodeBody(_ header: MessageHeader, _ message: UnsafeRawBufferPointer) throws(WireError) -> SyncMessage {
        guard header.version == SyncProtocol.version else { throw .badVersion(header.version) }
        let flags = header.flags.rawValue
        let hello = MessageFlags(rawValue: flags & Wire.helloFlags)
        guard let type = MessageType(rawValue: header.type) else { throw .badType(header.type) }
        switch type {
        case .flowNew, .flowUpdate, .flowDestroy:
            guard flags & ~Wire.helloFlags == 0 else { throw .badFlags(type: header.type, flags: flags) }
            let flow = try FlowDecoder.decode(message)
            let kind: FlowMessageKind = type == .flowNew ? .new : type == .flowUpdate ? .update : .destroy
            return SyncMessage(sequence: header.sequence, hello: hello, body: .flow(kind, flow))
        case .expectationNew, .expectationUpdate, .expectationDestroy:
            guard flags & ~Wire.helloFlags == 0 else { throw .badFlags(type: header.type, flags: flags) }
            let kind: FlowMessageKind = type == .expectationNew ? .new : type == .expectationUpdate ? .update : .destroy
            let attributes = try decodeExpectationAttributes(message)
            return SyncMessage(sequence: header.sequence, hello: hello, body: .expectation(ExpectationMessage(kind: kind, attributes: attributes)))
        case .control:
            let control = flags & Wire.controlFlags
            guard flags & ~(Wire.controlFlags | Wire.helloFlags) == 0, control.nonzeroBitCount == 1 else {
                throw .badFlags(type: header.type, flags: flags)
            }
            let body: SyncMessage.Body
            switch MessageFlags(rawValue: control) {
            case .ack: body = .ack(from: Wire.be32(message, 8), to: Wire.be32(message, 12))
            case .nack: body = .nack(from: Wire.be32(message, 8), to: Wire.be32(message, 12))
            case .resync: body = .resync
            default: body = .alive
            }
            return SyncMessage(sequence: header.sequence, hello: hello, body: body)
        }
    }

    private static func decodeExpectationAttributes(_ message: UnsafeRawBufferPointer) throws(WireError) -> [(UInt16, [UInt8])] {
        var attributes: [(UInt16, [UInt8])] = []
        var offset = SyncProtocol.headerSize
        var remaining = message.count - offset
        // conntrackd's msg2exp checks the id before the minimum length (msg2ct the other way round).
        while remaining > Wire.attributeHeaderSize {
            let length = Int(Wire.be16(message, offset))
            let id = Wire.be16(message, offset + 2)
            guard length <= remaining else { throw .attributeTruncated(id: id, length: UInt16(length), remaining: remaining) }
            guard let attribute = ExpectationAttribute(rawValue: id) else { throw .unknownAttribute(id: id) }
            guard length >= Wire.attributeHeaderSize else { throw .badAttributeLength(id: id, length: UInt16(length)) }
            if let fixed = attribute.fixedLength, length != fixed { throw .badAttributeLength(id: id, length: UInt16(length)) }
            if let maximum = attribute.maximumLength, length > maximum { throw .badAttributeLength(id: id, length: UInt16(length)) }
            attributes.append((id, Array(message[(offset + Wire.attributeHeaderSize)..<(offset + length)])))
            let step = Wire.aligned(length)
            offset += step
            remaining -= step
        }
        return attributes
    }

    private static func putHeader(_ buffer: inout [UInt8], type: UInt8, flags: UInt8, sequence: UInt32) {
        buffer.append(SyncProtocol.version << 4 | type & 0x0f)
        buffer.append(flags)
        Wire.putBE16(&buffer, 0)
        Wire.putBE32(&buffer, sequence)
    }

    private static func putControl(_ buffer: inout [UInt8], flags: UInt8, sequence: UInt32, from: UInt32, to: UInt32) {
        putHeader(&buffer, type: MessageType.control.rawValue, flags: flags, sequence: sequence)
        Wire.putBE32(&buffer, from)
        Wire.putBE32(&buffer, to)
    }

    private static func putExpectation(_ expectation: ExpectationMessage, into buffer: inout [UInt8], start: Int) {
        for (id, payload) in expectation.attributes {
            let length = Wire.attributeHeaderSize + payload.count
            // The header's length is 16 bits: an attribute that cannot be counted in it is left out
            // (no receiver accepts one anywhere near that size).
            guard length <= Int(UInt16.max), buffer.count - start + Wire.aligned(length) <= Int(UInt16.max) else { continue }
            Wire.putAttribute(&buffer, id: id, payloadLength: payload.count) { $0.append(contentsOf: payload) }
        }
    }
}

extension FlowMessageKind {
    /// The message type of an expectation message of this kind.
    public var expectationType: MessageType {
        switch self {
        case .new: return .expectationNew
        case .update: return .expectationUpdate
        case .destroy: return .expectationDestroy
        }
    }
}

/// Byte-level helpers: big-endian reads and writes at any alignment, attribute framing.
enum Wire {
    static let attributeHeaderSize = 4
    /// ACK, NACK, RESYNC: the control flags whose messages carry from/to (16 bytes).
    static let ackSizedFlags: UInt8 = MessageFlags([.ack, .nack, .resync]).rawValue
    static let controlFlags: UInt8 = MessageFlags([.ack, .nack, .resync, .alive]).rawValue
    static let helloFlags: UInt8 = MessageFlags([.hello, .helloBack]).rawValue

    @inline(__always) static func aligned(_ length: Int) -> Int { (length + 3) & ~3 }

    @inline(__always) static func be16(_ p: UnsafeRawBufferPointer, _ i: Int) -> UInt16 {
        UInt16(p[i]) << 8 | UInt16(p[i + 1])
    }

    /// conntrackd writes ICMP ids and NAT ports with `htons` over a value libnetfilter_conntrack
    /// already keeps in network order, so they travel in the sender's host order: little-endian on
    /// every platform conntrackd is deployed on.
    @inline(__always) static func le16(_ p: UnsafeRawBufferPointer, _ i: Int) -> UInt16 {
        UInt16(p[i]) | UInt16(p[i + 1]) << 8
    }

    @inline(__always) static func be32(_ p: UnsafeRawBufferPointer, _ i: Int) -> UInt32 {
        UInt32(p[i]) << 24 | UInt32(p[i + 1]) << 16 | UInt32(p[i + 2]) << 8 | UInt32(p[i + 3])
    }

    static func putBE16(_ buffer: inout [UInt8], _ value: UInt16) {
        buffer.append(UInt8(truncatingIfNeeded: value >> 8))
        buffer.append(UInt8(truncatingIfNeeded: value))
    }

    static func putLE16(_ buffer: inout [UInt8], _ value: UInt16) {
        buffer.append(UInt8(truncatingIfNeeded: value))
        buffer.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    static func putBE32(_ buffer: inout [UInt8], _ value: UInt32) {
        buffer.append(UInt8(truncatingIfNeeded: value >> 24))
        buffer.append(UInt8(truncatingIfNeeded: value >> 16))
        buffer.append(UInt8(truncatingIfNeeded: value >> 8))
        buffer.append(UInt8(truncatingIfNeeded: value))
    }

    /// Writes `nta_len` (header + payload, unpadded) and the id, the payload, then zeros up to the
    /// next multiple of 4.
    static func putAttribute(_ buffer: inout [UInt8], id: UInt16, payloadLength: Int, _ payload: (inout [UInt8]) -> Void) {
        let length = attributeHeaderSize + payloadLength
        putBE16(&buffer, UInt16(truncatingIfNeeded: length))
        putBE16(&buffer, id)
        payload(&buffer)
        for _ in length..<aligned(length) { buffer.append(0) }
    }
}
