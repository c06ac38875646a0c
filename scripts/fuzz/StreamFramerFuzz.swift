// libFuzzer harness for the TCP link's framing (SyncProtocol's StreamFramer), both framings:
// conntrackd's messages and authenticated frames (scripts/fuzz/run.sh builds and runs it).
//
// Input: [mode][split seed][stream...]. mode bit 0: frames (else messages). The stream is fed
// three ways: whole, one byte at a time, and in chunks whose sizes come from the seed. Checks
// (a violation traps): all three hand over the same units and fail (or not) at the same point;
// the units handed over, joined, are exactly the start of the stream; each unit is whole (a
// frame's length is its header's, a run of messages is whole messages); what stays buffered
// is less than one unit.
// With CTSYNC_FUZZ_STRICT set (the seed check) the stream must be framed whole, without error.

import Glibc
import SyncProtocol

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil
let frames = StreamFramer.Framing.frames(headerSize: 32, lengthOffset: 28, trailer: 16, prefix: [0x63, 0x74, 0x73, 0x41])

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("StreamFramerFuzz: \(what())") }
}

struct Outcome: Equatable {
    var units: [[UInt8]] = []
    var failed = false
    var buffered = 0
}

func feed(_ stream: UnsafeRawBufferPointer, framing: StreamFramer.Framing, chunks: (Int) -> Int) -> Outcome {
    var framer = StreamFramer(framing)
    var outcome = Outcome()
    var offset = 0
    var index = 0
    while offset < stream.count {
        let n = max(1, min(stream.count - offset, chunks(index)))
        index += 1
        let ok = framer.append(UnsafeRawBufferPointer(rebasing: stream[offset..<(offset + n)])) { outcome.units.append(Array($0)) }
        offset += n
        if !ok {
            outcome.failed = true
            break
        }
    }
    outcome.buffered = framer.buffered
    return outcome
}

@_cdecl("LLVMFuzzerTestOneInput")
public func streamFramerFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 2 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let framing: StreamFramer.Framing = input[0] & 1 == 1 ? frames : .messages
    var seed = UInt32(input[1]) | 1
    let stream = UnsafeRawBufferPointer(rebasing: input[2...])
    let whole = feed(stream, framing: framing) { _ in stream.count }
    let bytewise = stream.count <= 4096 ? feed(stream, framing: framing) { _ in 1 } : whole
    let chunked = feed(stream, framing: framing) { _ in
        seed ^= seed << 13
        seed ^= seed >> 17
        seed ^= seed << 5
        return Int(seed % 700) + 1
    }
    // Units may be grouped differently (a run of messages depends on what had arrived); the
    // bytes and the failure may not.
    for other in [bytewise, chunked] {
        require(other.units.joined().elementsEqual(whole.units.joined()), "the split changed what was handed over")
        require(other.failed == whole.failed, "the split changed whether framing failed")
    }
    let joined = Array(whole.units.joined())
    require(joined.elementsEqual(stream.prefix(joined.count)), "handed over bytes that are not the stream's start")
    for unit in whole.units + chunked.units {
        switch framing {
        case .messages:
            var at = 0
            while at < unit.count {
                require(unit.count - at >= 8, "a partial message header in a run")
                let length = Int(unit[at + 2]) << 8 | Int(unit[at + 3])
                require(length >= 8 && at + length <= unit.count, "a run cut inside a message")
                at += length
            }
        case .frames(let headerSize, let lengthOffset, let trailer, let prefix):
            require(unit.count >= headerSize && unit.starts(with: prefix), "a frame without its header")
            require(unit.count == headerSize + (Int(unit[lengthOffset]) << 8 | Int(unit[lengthOffset + 1])) + trailer, "a frame of the wrong length")
        }
    }
    if !whole.failed { require(whole.buffered == stream.count - joined.count && whole.buffered < 65_535 + 32 + 16 + 1, "buffered \(whole.buffered)") }
    if strict { require(!whole.failed && whole.buffered == 0 && !whole.units.isEmpty, "strict: not a whole stream") }
    return 0
}
