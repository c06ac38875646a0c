// libFuzzer harness for the SyncProtocol wire codec (scripts/fuzz/run.sh builds and runs it).
//
// Every input goes through each decoding entry point, at the address libFuzzer gives and one byte
// further (an odd address). Besides ASan's and Swift's own checks, the answers must agree with
// each other and whatever decodes must re-encode into bytes that decode to the same thing; a
// violation traps, which libFuzzer reports as a crash with the input saved.
//
// Inputs are datagrams, up to the 65,507 bytes a UDP datagram carries (run.sh: -max_len=65507).
// With CTSYNC_FUZZ_STRICT set (run.sh's seed check) an input must also be a valid datagram: one
// or more messages that all decode.

import FlowModel
import Glibc
import SyncProtocol

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil

@_cdecl("LLVMFuzzerTestOneInput")
public func syncWireFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if strict {
        let (messages, error) = SyncWire.decodeDatagram(bytes)
        require(error == nil && !messages.isEmpty, "strict: not a valid datagram: \(error.map { "\($0)" } ?? "empty")")
    }
    check(bytes)
    if size > 1 { check(UnsafeRawBufferPointer(rebasing: bytes[1...])) }
    return 0
}

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("SyncWireFuzz: \(what())") }
}

func check(_ raw: UnsafeRawBufferPointer) {
    var single: (SyncMessage, Int)?
    var singleError: WireError?
    do throws(WireError) {
        single = try SyncWire.decodeMessage(raw)
    } catch {
        singleError = error
        _ = error.description
        _ = error.statsCategory
    }
    if let (_, length) = single { require(length >= SyncProtocol.headerSize && length <= raw.count, "length \(length) of \(raw.count)") }

    let (frames, framingError) = SyncWire.decodeFrames(raw)
    var offset = 0
    var good: [SyncMessage] = []
    var allGood = true
    for frame in frames {
        require(frame.offset == offset, "frame offset")
        offset += Int(frame.header.length)
        switch frame.message {
        case .success(let message): if allGood { good.append(message) }
        case .failure(let error):
            allGood = false
            require(!error.isFraming, "framing error inside a frame")
        }
    }
    require(offset <= raw.count, "frames run past the input")
    require((framingError == nil) == (offset == raw.count), "frames do not tile the input")
    if let first = frames.first {
        switch first.message {
        case .success(let message): require(single?.0 == message, "first frame differs from decodeMessage")
        case .failure(let error): require(singleError == error, "first frame error differs from decodeMessage")
        }
    } else if raw.count > 0 {
        require(singleError == framingError, "framing errors differ")
    }

    let (messages, error) = SyncWire.decodeDatagram(raw)
    require(messages == good, "decodeDatagram differs from decodeFrames")
    require((error == nil) == (allGood && framingError == nil), "decodeDatagram error differs")

    // Whatever decodes can be sent on, and survives the trip as asReceived says.
    for message in messages {
        let encoded = SyncWire.encode(message)
        require(encoded.count % 4 == 0 && encoded.count <= Int(UInt16.max), "encoded length \(encoded.count)")
        let back: SyncMessage
        do throws(WireError) {
            back = try SyncWire.decodeMessage(encoded).0
        } catch {
            fatalError("SyncWireFuzz: re-encoded message does not decode: \(error)")
        }
        switch message.body {
        case .flow(let kind, let flow):
            require(back.body == .flow(kind, SyncWire.asReceived(flow)), "flow changes on a second trip")
            require(SyncWire.encode(back) == encoded, "encoding is not stable")
        case .expectation(var expectation):
            if expectation.attributes.last?.1.isEmpty == true { expectation.attributes.removeLast() }
            require(back.body == .expectation(expectation), "expectation changes on a second trip")
        default:
            require(back == message, "control message changes on a second trip")
        }
    }
}
