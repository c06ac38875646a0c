// libFuzzer harness for the configuration parser (scripts/fuzz/run.sh builds and runs it).
//
// Each input is a conntrackd.conf file's bytes, given to `DaemonConfig.parse(bytes:path:)` as
// `ctsyncd -C` reads it. A `ConfigError` is a fine answer; a trap is not. Checked besides ASan's
// and Swift's own checks: an error or warning points into the file (line 0, meaning the whole
// file, or a line no further than its last, column not negative), and its message is not empty.
//
// With CTSYNC_FUZZ_STRICT set (run.sh's seed check) an input must also parse without error.

import Configuration
import FlowModel
import Glibc

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("ConfigFuzz: \(what())") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func configFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let lines = bytes.reduce(1) { $0 + ($1 == 10 ? 1 : 0) }
    do throws(ConfigError) {
        let config = try DaemonConfig.parse(bytes: bytes, path: "fuzz.conf")
        for warning in config.warnings {
            require(warning.line >= 0 && warning.line <= lines && warning.column >= 0, "warning at \(warning.line):\(warning.column) of \(lines) lines")
            require(!warning.message.isEmpty, "warning without a message")
            _ = warning.description
        }
        _ = config.settings.count
    } catch {
        require(error.line >= 0 && error.line <= lines && error.column >= 0, "error at \(error.line):\(error.column) of \(lines) lines: \(error)")
        require(!error.message.isEmpty, "error without a message")
        _ = error.description
        if strict { fatalError("ConfigFuzz: strict: \(error)") }
    }
    return 0
}
