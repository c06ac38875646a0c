// libFuzzer harness for authenticated frames (`Auth`): verification, then decoding of what
// verifies, through SyncProtocol's FrameEnvelope (scripts/fuzz/run.sh builds and runs it).
//
// The cryptography itself (swift-crypto) is not what is fuzzed: it is swapped for a 4-byte
// FNV-1a tag that libFuzzer can learn, so every path after the tag check (the replay window,
// epochs, the per-sender table, the decoder on the opened payload) is reached. Algorithm code 1
// leaves the payload in place (as HMAC-SHA256 does), code 2 "decrypts" it (XOR, as the AEAD
// hands over a new buffer).
//
// Input: records of [length: 2 bytes big-endian][frame], up to 65,507 bytes a frame, all
// opened by one receiver in order. Checks (a violation traps): a frame accepted once is refused
// when opened again; a frame whose tag is wrong is never accepted; an accepted frame's payload
// is handed over whole and goes to the wire decoder; counters add up.
// With CTSYNC_FUZZ_STRICT set (the seed check) every record must be accepted and decode.

import FlowModel
import Glibc
import SyncProtocol

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil

struct FuzzProtection: FrameProtection {
    let algorithmCode: UInt8
    var tagSize: Int { 4 }
    var sealingKeyId: UInt8 { 1 }
    func holds(keyId: UInt8) -> Bool { keyId == 1 || keyId == 2 }

    static func tag(_ parts: [UnsafeRawBufferPointer], keyId: UInt8) -> UInt32 {
        var hash: UInt32 = 2_166_136_261 ^ UInt32(keyId)
        for part in parts { for byte in part { hash = (hash ^ UInt32(byte)) &* 16_777_619 } }
        return hash
    }

    mutating func seal(_ payload: UnsafeRawBufferPointer, counter: UInt64, headerStart: Int, into frame: inout [UInt8]) {
        let body = algorithmCode == 2 ? payload.map { $0 ^ 0x5a } : Array(payload)
        frame.append(contentsOf: body)
        let tag = frame[headerStart...].withUnsafeBytes { Self.tag([$0], keyId: 1) }
        withUnsafeBytes(of: tag.bigEndian) { frame.append(contentsOf: $0) }
    }

    mutating func open(
        header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer, keyId: UInt8, sender: UInt32, epoch: UInt64,
        counter: UInt64
    ) -> OpenedPayload {
        require(tag.count == 4, "tag of \(tag.count) bytes")
        let expected = Self.tag([header, payload], keyId: keyId)
        let given = UInt32(tag[0]) << 24 | UInt32(tag[1]) << 16 | UInt32(tag[2]) << 8 | UInt32(tag[3])
        guard expected == given else { return .invalid }
        return algorithmCode == 2 ? .decrypted(payload.map { $0 ^ 0x5a }) : .inPlace
    }
}

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("SyncFrameFuzz: \(what())") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func syncFrameFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    // The algorithm from the first record's frame (byte 5), else in place.
    var receivers = [
        FrameEnvelope(protection: FuzzProtection(algorithmCode: 1), nodeId: 0xfeed, epoch: 1),
        FrameEnvelope(protection: FuzzProtection(algorithmCode: 2), nodeId: 0xfeed, epoch: 1),
    ]
    var offset = 0
    var records = 0
    while input.count - offset >= 2, records < 4096 {
        let length = Int(input[offset]) << 8 | Int(input[offset + 1])
        offset += 2
        let frame = UnsafeRawBufferPointer(rebasing: input[offset..<min(input.count, offset + length)])
        offset += frame.count
        records += 1
        let which = frame.count > 5 && frame[5] == 2 ? 1 : 0
        let before = receivers[which].counters
        var handed: [UInt8]?
        let result = receivers[which].open(frame) { handed = Array($0) }
        let after = receivers[which].counters
        switch result {
        case .success:
            require(handed != nil, "accepted without a payload")
            require(handed!.count == frame.count - 32 - 4, "payload of \(handed!.count) bytes from a frame of \(frame.count)")
            require(after.accepted == before.accepted &+ 1 && after.refused == before.refused, "counters on success")
            let (messages, error) = handed!.withUnsafeBytes { SyncWire.decodeDatagram($0) }
            if strict { require(error == nil && !messages.isEmpty, "strict: the payload does not decode") }
            // The same bytes again: a replay.
            let again = receivers[which].open(frame) { _ in require(false, "a replay handed over its payload") }
            require(again == .failure(.replayed), "a frame accepted twice: \(again)")
        case .failure(let failure):
            require(handed == nil, "a refused frame (\(failure)) handed over its payload")
            require(after.accepted == before.accepted, "counted as accepted")
            require(strict == false, "strict: record \(records) refused: \(failure)")
        }
    }
    if strict { require(records > 0 && offset == input.count, "strict: trailing bytes") }
    return 0
}

