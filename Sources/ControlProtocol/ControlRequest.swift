import FlowModel
import Foundation
import SystemCalls

/// Which cache a request is about.
public enum CacheName: String, Codable, Sendable {
    case `internal`, external
}

/// How a cache dump is written.
public enum DumpFormat: String, Codable, Sendable {
    /// conntrackd's `-i` lines: conntrack's layout without timeout, then ` [active since Ns]`.
    case text
    /// conntrackd's `-i -x`: one libnetfilter_conntrack `<flow>` element per line.
    case xml
    /// ctsync's JSON, one object per line (docs/cli.md), plus `active_since`.
    case json
}

/// A `-s` section, as conntrackd names them.
public enum StatsSection: String, Codable, Sendable, CaseIterable {
    case general, network, cache, runtime, link, rsqueue, process, queue, expect

    /// conntrackd matches `-s` words by prefix (`-s n` is network); `ct` is the general one.
    public init?(prefix: String) {
        if prefix == "ct" {
            self = .general
            return
        }
        let candidates: [(String, StatsSection)] = [
            ("network", .network), ("cache", .cache), ("runtime", .runtime), ("link", .link), ("multicast", .link),
            ("rsqueue", .rsqueue), ("process", .process), ("queue", .queue), ("expect", .expect),
        ]
        guard !prefix.isEmpty, let hit = candidates.first(where: { $0.0.hasPrefix(prefix) }) else { return nil }
        self = hit.1
    }
}

/// A request to the daemon's control socket.
public enum ControlRequest: Equatable, Sendable {
    case dump(CacheName, format: DumpFormat, filter: FlowFilter?)
    case stats(StatsSection, json: Bool)
    /// Empty a cache (`-f internal|external`) or both (`-f`).
    case flushCache(CacheName?)
    /// Delete every flow the filter accepts from the kernel table (`-F`).
    case flushKernel
    /// Re-dump the kernel table into the internal cache (`-R`).
    case resync
    /// Set the kernel timeout of every accepted flow to PurgeTimeout (`-t`).
    case resetTimers
    case kill
    /// Commit the external cache into the kernel (`-c`), send the internal cache to the peer
    /// (`-B`), ask the peer for its table (`-n`).
    case commit, sendBulk, requestResync
    /// Expectation requests (`-i expect`, `-c expect`, ...), with `ExpectationSync`.
    case expectations(ExpectationRequest)
    /// Whether the node is in sync with its peer (`ctsync health`), with the verdict's
    /// thresholds in milliseconds.
    case health(peerTimeoutMs: Int, lossTimeoutMs: Int)

    /// conntrackd's numeric request codes (include/conntrackd.h), so `conntrackd -C FILE -s`
    /// and the like work against ctsyncd unchanged.
    public init?(legacyCode code: Int32) {
        switch code {
        case 16: self = .dump(.internal, format: .text, filter: nil)
        case 17: self = .dump(.external, format: .text, filter: nil)
        case 24: self = .dump(.internal, format: .xml, filter: nil)
        case 25: self = .dump(.external, format: .xml, filter: nil)
        case 21: self = .stats(.general, json: false)
        case 28: self = .stats(.network, json: false)
        case 29: self = .stats(.cache, json: false)
        case 30: self = .stats(.runtime, json: false)
        case 31: self = .stats(.link, json: false)
        case 32: self = .stats(.rsqueue, json: false)
        case 35: self = .stats(.process, json: false)
        case 36: self = .stats(.queue, json: false)
        case 37: self = .stats(.expect, json: false)
        case 33: self = .flushCache(.internal)
        case 34: self = .flushCache(.external)
        case 19, 45: self = .flushCache(nil)
        case 0, 43: self = .flushKernel
        case 1, 44: self = .resync
        case 20: self = .kill
        case 26: self = .resetTimers
        case 18, 46: self = .commit
        case 22: self = .sendBulk
        case 23: self = .requestResync
        case 38: self = .expectations(.flushKernel)
        case 39: self = .expectations(.resync)
        case 40: self = .expectations(.dump(.internal, xml: false))
        case 41: self = .expectations(.dump(.external, xml: false))
        case 47: self = .expectations(.dump(.internal, xml: true))
        case 48: self = .expectations(.dump(.external, xml: true))
        case 42: self = .expectations(.commit)
        default: return nil
        }
    }

    // MARK: JSON form (ctsync's own clients)

    private struct Wire: Codable {
        var command: String
        var cache: CacheName?
        var format: String?
        var filter: FlowFilter?
        var section: StatsSection?
        var detail: String?
        var peerTimeoutMs: Int?
        var lossTimeoutMs: Int?
    }

    /// One JSON object on one line.
    public func encoded() -> Data {
        var w = Wire(command: "")
        switch self {
        case .dump(let cache, let format, let filter):
            w.command = "dump"
            w.cache = cache
            w.format = format.rawValue
            w.filter = filter
        case .stats(let section, let json):
            w.command = "stats"
            w.section = section
            w.format = json ? "json" : "text"
        case .flushCache(let cache):
            w.command = "flush-cache"
            w.cache = cache
        case .flushKernel: w.command = "flush-kernel"
        case .resync: w.command = "resync"
        case .resetTimers: w.command = "reset-timers"
        case .kill: w.command = "kill"
        case .commit: w.command = "commit"
        case .sendBulk: w.command = "send-bulk"
        case .requestResync: w.command = "request-resync"
        case .expectations(let what):
            w.command = "expectations"
            w.detail = what.word
            switch what {
            case .dump(let cache, let xml):
                w.cache = cache
                w.format = xml ? "xml" : "text"
            case .flushCaches(let cache): w.cache = cache
            default: break
            }
        case .health(let peer, let loss):
            w.command = "health"
            w.peerTimeoutMs = peer
            w.lossTimeoutMs = loss
        }
        var data = (try? JSONEncoder().encode(w)) ?? Data("{}".utf8)
        data.append(10)
        return data
    }

    /// Parses a JSON request; the error says what was wrong with it.
    public static func decode(_ data: Data) throws(ControlError) -> ControlRequest {
        let w: Wire
        do {
            w = try JSONDecoder().decode(Wire.self, from: data)
        } catch {
            throw .badRequest("not a valid request object: \(Self.describe(error))")
        }
        switch w.command {
        case "dump":
            guard let cache = w.cache else { throw .badRequest("dump needs \"cache\": internal or external") }
            guard let format = DumpFormat(rawValue: w.format ?? "text") else {
                throw .badRequest("unknown dump format '\(w.format ?? "")': expected text, xml or json")
            }
            return .dump(cache, format: format, filter: w.filter)
        case "stats":
            guard let format = w.format, format == "json" || format == "text" else {
                throw .badRequest("stats needs \"format\": text or json")
            }
            return .stats(w.section ?? .general, json: format == "json")
        case "flush-cache": return .flushCache(w.cache)
        case "flush-kernel": return .flushKernel
        case "resync": return .resync
        case "reset-timers": return .resetTimers
        case "kill": return .kill
        case "commit": return .commit
        case "send-bulk": return .sendBulk
        case "request-resync": return .requestResync
        case "expectations":
            switch w.detail {
            case "dump":
                guard let cache = w.cache else { throw .badRequest("expectations dump needs \"cache\": internal or external") }
                return .expectations(.dump(cache, xml: w.format == "xml"))
            case "flush-kernel": return .expectations(.flushKernel)
            case "resync": return .expectations(.resync)
            case "commit": return .expectations(.commit)
            case "flush-cache": return .expectations(.flushCaches(w.cache))
            default: throw .badRequest("unknown expectations request '\(w.detail ?? "")': expected dump, flush-kernel, resync, commit or flush-cache")
            }
        case "health":
            let peer = w.peerTimeoutMs ?? 3000
            let loss = w.lossTimeoutMs ?? 5000
            guard peer > 0, loss > 0 else { throw .badRequest("health: peerTimeoutMs and lossTimeoutMs must be positive") }
            return .health(peerTimeoutMs: peer, lossTimeoutMs: loss)
        default: throw .badRequest("unknown command '\(w.command)'")
        }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        case DecodingError.keyNotFound(let key, _): return "missing \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "\(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
        default: return "\(error)"
        }
    }
}

/// Errors of the control socket, both sides.
public enum ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    case badRequest(String)
    case tooLarge(limit: Int)
    case timedOut(seconds: Int)
    /// The daemon is not running (no socket, or nobody listening).
    case notRunning(path: String, errno: Int32)
    /// A socket call failed.
    case system(SystemCallError)
    /// The daemon refused or failed the request; the message says why.
    case failed(String)

    public var description: String {
        switch self {
        case .badRequest(let m): return "bad request: \(m)"
        case .tooLarge(let limit): return "request larger than \(limit) bytes"
        case .timedOut(let s): return "no complete request or answer within \(s) s"
        case .notRunning(let path, let e): return "can't connect to \(path): \(errnoText(e)); is ctsyncd running?"
        case .system(let error): return "control socket: \(error)"
        case .failed(let m): return m
        }
    }
}

/// What a request about expectations asks (`ExpectationSync`): conntrackd's `-i expect`,
/// `-e expect` (`-x`), `-F expect`, `-R expect`, `-c expect`, and ctsync's `-f expect`.
public enum ExpectationRequest: Equatable, Sendable {
    case dump(CacheName, xml: Bool)
    case flushKernel
    case resync
    case commit
    /// Empty the internal or external expectation cache, or both.
    case flushCaches(CacheName?)

    var word: String {
        switch self {
        case .dump: return "dump"
        case .flushKernel: return "flush-kernel"
        case .resync: return "resync"
        case .commit: return "commit"
        case .flushCaches: return "flush-cache"
        }
    }
}
