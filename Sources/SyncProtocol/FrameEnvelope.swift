/// What protects a frame's payload: a MAC, or an AEAD that also encrypts it. SyncAuth provides
/// the real one (swift-crypto); the envelope around it (header, replay window, counters) is
/// here, pure, so that it can be fuzzed without the cryptography.
public protocol FrameProtection {
    /// The algorithm's code in the header (byte 5).
    var algorithmCode: UInt8 { get }
    var tagSize: Int { get }
    /// The key id that seals (byte 6).
    var sealingKeyId: UInt8 { get }
    func holds(keyId: UInt8) -> Bool
    /// Appends the protected payload and its tag to `frame`, whose header starts at `headerStart`.
    mutating func seal(_ payload: UnsafeRawBufferPointer, counter: UInt64, headerStart: Int, into frame: inout [UInt8])
    /// Verifies a frame's tag under key `keyId` for the sender's run (`sender`, `epoch`).
    mutating func open(
        header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer, keyId: UInt8, sender: UInt32, epoch: UInt64,
        counter: UInt64
    ) -> OpenedPayload
}

/// What verification made of a payload.
public enum OpenedPayload {
    /// The tag does not verify.
    case invalid
    /// Authentic, and the payload was sent in the clear (a MAC).
    case inPlace
    /// Authentic, and this is the decrypted payload (an AEAD).
    case decrypted([UInt8])
}

/// Why a received frame was dropped before anything decoded it.
public enum AuthFailure: Error, Sendable, Equatable {
    /// Too short, not a ctsync frame (a conntrackd peer without `Auth`), unknown version,
    /// a length that disagrees with the datagram.
    case malformed
    /// Protected with another algorithm than ours.
    case wrongAlgorithm
    /// A key id we do not hold.
    case unknownKey
    /// The tag does not verify: forged, corrupted, or another key under the same id.
    case badTag
    /// Our own node id: a looped-back frame, or two nodes configured with one `NodeId`.
    case ownNodeId
    /// A frame of this run already accepted, or older than the replay window.
    case replayed
    /// A frame of an earlier run (epoch) of a peer whose later run we already heard.
    case staleEpoch
    /// More distinct senders than `maximumPeers` hold the key.
    case tooManyPeers
}

/// What verification did, for the statistics.
public struct AuthCounters: Sendable, Equatable {
    public var accepted: UInt64 = 0
    public var malformed: UInt64 = 0
    public var badTag: UInt64 = 0
    public var unknownKey: UInt64 = 0
    public var replayed: UInt64 = 0
    public var staleEpoch: UInt64 = 0
    public var ownNodeId: UInt64 = 0
    /// New runs (epochs) of peers heard: a peer's restart as authentication sees it.
    public var peerEpochs: UInt64 = 0
    public var lastFailure: AuthFailure?
    public init() {}
    /// All frames refused, whatever the reason.
    public var refused: UInt64 { malformed &+ badTag &+ unknownKey &+ replayed &+ staleEpoch &+ ownNodeId }

    mutating func count(_ failure: AuthFailure) {
        lastFailure = failure
        switch failure {
        case .malformed, .wrongAlgorithm, .tooManyPeers: malformed &+= 1
        case .unknownKey: unknownKey &+= 1
        case .badTag: badTag &+= 1
        case .ownNodeId: ownNodeId &+= 1
        case .replayed: replayed &+= 1
        case .staleEpoch: staleEpoch &+= 1
        }
    }
}

/// Seals outgoing sync payloads into authenticated frames and verifies incoming ones before a
/// byte of their payload is decoded (`Auth` in the Sync section; docs/security.md).
///
/// A frame (big-endian):
///
///     0   magic "ctsA"            4
///     4   version (1)             1
///     5   algorithm               1   1 HMAC-SHA256, 2 ChaCha20-Poly1305
///     6   key id                  1
///     7   flags (0)               1
///     8   node id                 4
///     12  epoch                   8   the sender's run: its start time in ms since 1970
///     20  counter                 8   1, 2, 3 ... within the run
///     28  payload length          2
///     30  reserved (0)            2
///     32  payload                 n   conntrackd's messages, as sent without Auth
///     32+n tag                    32 (HMAC-SHA256) or 16 (ChaCha20-Poly1305)
///
/// Replays: per sender node id, the latest epoch and a window of the last 1024 counters; a
/// frame of an older epoch, or one already seen, or one older than the window is refused.
/// Nothing unauthenticated touches that state: the tag is checked first.
public struct FrameEnvelope<Protection: FrameProtection> {
    public static var headerSize: Int { 32 }
    public static var magic: [UInt8] { [0x63, 0x74, 0x73, 0x41] }
    public static var version: UInt8 { 1 }
    public static var lengthOffset: Int { 28 }
    /// Counters remembered per sender: a frame up to this far behind the newest is accepted once.
    public static var replayWindow: UInt64 { 1024 }
    /// Distinct authenticated senders remembered (a cluster is a handful of nodes).
    public static var maximumPeers: Int { 64 }
    /// The largest payload a frame can carry (its length field).
    public static var maximumPayload: Int { Int(UInt16.max) }

    public private(set) var protection: Protection
    public let nodeId: UInt32
    public let epoch: UInt64
    public private(set) var counters = AuthCounters()
    private var sent: UInt64 = 0
    private var peers: [UInt32: ReplayState] = [:]

    /// Bytes a frame adds to its payload.
    public var overhead: Int { Self.headerSize + protection.tagSize }

    public init(protection: Protection, nodeId: UInt32, epoch: UInt64) {
        self.protection = protection
        self.nodeId = nodeId
        self.epoch = epoch
    }

    static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    static func read<T: FixedWidthInteger>(_ type: T.Type, _ bytes: UnsafeRawBufferPointer, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value = value << 8 | T(bytes[offset + index]) }
        return value
    }

    /// How a TCP link carrying these frames is cut into them.
    public var streamFraming: StreamFramer.Framing {
        .frames(headerSize: Self.headerSize, lengthOffset: Self.lengthOffset, trailer: protection.tagSize, prefix: Self.magic)
    }

    /// Seals one payload (at most 65,535 bytes) into a frame appended to `frame`.
    public mutating func seal(_ payload: UnsafeRawBufferPointer, into frame: inout [UInt8]) {
        precondition(payload.count <= Self.maximumPayload, "payload too large for a frame")
        sent &+= 1
        let start = frame.count
        frame.append(contentsOf: Self.magic)
        frame.append(contentsOf: [Self.version, protection.algorithmCode, protection.sealingKeyId, 0])
        Self.append(nodeId, to: &frame)
        Self.append(epoch, to: &frame)
        Self.append(sent, to: &frame)
        Self.append(UInt16(payload.count), to: &frame)
        frame.append(contentsOf: [0, 0])
        protection.seal(payload, counter: sent, headerStart: start, into: &frame)
    }

    /// Seals one payload into a new frame.
    public mutating func seal(_ payload: UnsafeRawBufferPointer) -> [UInt8] {
        var frame: [UInt8] = []
        frame.reserveCapacity(payload.count + overhead)
        seal(payload, into: &frame)
        return frame
    }

    /// Verifies one frame and, if it is authentic and new, hands its payload to `body` and
    /// returns the sender's node id. Nothing of the payload is read before its tag verifies.
    @discardableResult
    public mutating func open(_ frame: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) -> Result<UInt32, AuthFailure> {
        switch verify(frame, body) {
        case .success(let node):
            counters.accepted &+= 1
            return .success(node)
        case .failure(let failure):
            counters.count(failure)
            return .failure(failure)
        }
    }

    private mutating func verify(_ frame: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) -> Result<UInt32, AuthFailure> {
        let tagSize = protection.tagSize
        guard frame.count >= Self.headerSize + tagSize, frame.starts(with: Self.magic), frame[4] == Self.version, frame[7] == 0 else {
            return .failure(.malformed)
        }
        guard frame[5] == protection.algorithmCode else { return .failure(.wrongAlgorithm) }
        let length = Int(Self.read(UInt16.self, frame, at: Self.lengthOffset))
        guard frame.count == Self.headerSize + length + tagSize else { return .failure(.malformed) }
        let keyId = frame[6]
        guard protection.holds(keyId: keyId) else { return .failure(.unknownKey) }
        let sender = Self.read(UInt32.self, frame, at: 8)
        let runEpoch = Self.read(UInt64.self, frame, at: 12)
        let counter = Self.read(UInt64.self, frame, at: 20)
        guard counter > 0 else { return .failure(.malformed) }
        let header = UnsafeRawBufferPointer(rebasing: frame[0..<Self.headerSize])
        let payload = UnsafeRawBufferPointer(rebasing: frame[Self.headerSize..<(Self.headerSize + length)])
        let tag = UnsafeRawBufferPointer(rebasing: frame[(Self.headerSize + length)...])
        // The tag first: nothing unauthenticated touches the replay state.
        let opened = protection.open(header: header, payload: payload, tag: tag, keyId: keyId, sender: sender, epoch: runEpoch, counter: counter)
        if case .invalid = opened { return .failure(.badTag) }
        guard sender != nodeId else { return .failure(.ownNodeId) }
        var state: ReplayState
        if let known = peers[sender] {
            if runEpoch < known.epoch { return .failure(.staleEpoch) }
            if runEpoch > known.epoch {
                state = ReplayState(epoch: runEpoch)
                counters.peerEpochs &+= 1
            } else {
                state = known
            }
        } else {
            guard peers.count < Self.maximumPeers else { return .failure(.tooManyPeers) }
            state = ReplayState(epoch: runEpoch)
            counters.peerEpochs &+= 1
        }
        guard state.accept(counter) else { return .failure(.replayed) }
        peers[sender] = state
        switch opened {
        case .decrypted(let plaintext): plaintext.withUnsafeBytes(body)
        default: body(payload)
        }
        return .success(sender)
    }

    /// The epoch last accepted from a sender, if any.
    public func epoch(of sender: UInt32) -> UInt64? { peers[sender]?.epoch }
}

/// One sender's run and the counters of it seen lately.
struct ReplayState {
    static let size: UInt64 = 1024
    var epoch: UInt64
    var highest: UInt64 = 0
    /// Bit i: counter `highest - i` seen.
    var window = [UInt64](repeating: 0, count: Int(ReplayState.size / 64))
    init(epoch: UInt64) { self.epoch = epoch }

    /// Marks `counter` seen; false if it was, or if it is older than the window.
    mutating func accept(_ counter: UInt64) -> Bool {
        if counter > highest {
            let shift = counter - highest
            if shift >= Self.size {
                for index in window.indices { window[index] = 0 }
            } else {
                shiftWindow(by: Int(shift))
            }
            highest = counter
            window[0] |= 1
            return true
        }
        let behind = highest - counter
        guard behind < Self.size else { return false }
        let (word, bit) = (Int(behind / 64), UInt64(1) << (behind % 64))
        guard window[word] & bit == 0 else { return false }
        window[word] |= bit
        return true
    }

    /// Moves every bit `places` towards older counters (bit i → bit i + places).
    private mutating func shiftWindow(by places: Int) {
        let words = places / 64
        let bits = places % 64
        for index in stride(from: window.count - 1, through: 0, by: -1) {
            let source = index - words
            var value: UInt64 = source >= 0 ? window[source] << UInt64(bits) : 0
            if bits > 0, source - 1 >= 0 { value |= window[source - 1] >> UInt64(64 - bits) }
            window[index] = value
        }
    }
}
