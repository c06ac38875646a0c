// libFuzzer harness for the control socket's request decoding (scripts/fuzz/run.sh builds and
// runs it).
//
// Each input is what a client writes to ctsyncd's control socket. It goes where ControlServer
// sends it: the bytes before the first newline (all of them without one) to
// `ControlRequest.decode`, the first 4 bytes, as a native-endian Int32, to
// `ControlRequest(legacyCode:)`. Every request either gives must survive the trip a ctsync
// client makes: `encoded()` is one JSON object on one line ending in a newline, starting with
// `{` (so the server takes it for JSON, not a legacy code), and the server decodes that line
// into an equal request. Decoding errors are fine; their descriptions are built.
//
// With CTSYNC_FUZZ_STRICT set (run.sh's seed check) an input must also be a valid request: a
// JSON one if it starts with `{`, else a known 4-byte legacy code.

import ControlProtocol
import FlowModel
import Foundation

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("ControlRequestFuzz: \(what())") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func controlRequestFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)

    if size >= 4 {
        let code = UnsafeRawPointer(data).loadUnaligned(as: Int32.self)
        if let request = ControlRequest(legacyCode: code) {
            roundTrip(request)
        } else if strict && bytes.first != UInt8(ascii: "{") {
            fatalError("ControlRequestFuzz: strict: unknown legacy code \(code)")
        }
    } else if strict && bytes.first != UInt8(ascii: "{") {
        fatalError("ControlRequestFuzz: strict: \(size) bytes, neither JSON nor a 4-byte code")
    }

    let line = bytes.firstIndex(of: 10).map { UnsafeBufferPointer(rebasing: bytes[..<$0]) } ?? bytes
    do throws(ControlError) {
        roundTrip(try ControlRequest.decode(Data(buffer: line)))
    } catch {
        _ = error.description
        if strict && bytes.first == UInt8(ascii: "{") { fatalError("ControlRequestFuzz: strict: \(error)") }
    }
    return 0
}

func roundTrip(_ request: ControlRequest) {
    let encoded = request.encoded()
    require(encoded.first == UInt8(ascii: "{"), "encoded() does not start with '{': \(request)")
    require(encoded.last == 10, "encoded() does not end with a newline: \(request)")
    require(encoded.firstIndex(of: 10) == encoded.index(before: encoded.endIndex), "encoded() is more than one line: \(request)")
    let back: ControlRequest
    do throws(ControlError) {
        back = try ControlRequest.decode(Data(encoded.dropLast()))
    } catch {
        fatalError("ControlRequestFuzz: encoded() of \(request) does not decode: \(error)")
    }
    require(back == request, "\(request) comes back as \(back)")
}
