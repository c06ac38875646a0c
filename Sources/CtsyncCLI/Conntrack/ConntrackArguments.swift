import Conntrack

#if canImport(Glibc)
    import Glibc
#endif

/// conntrack's own command line (`ctsync -L -s 198.18.0.1`, `ctsync -D -p tcp --dport 22`):
/// the same commands, options, spellings and rules as conntrack 1.4.7, so a script keeps
/// working when the binary's name changes. Parsed the way getopt_long parses it (long options
/// by unique prefix, `--opt=value`, options after stray words), then checked against
/// conntrack's table of which option goes with which command.
struct ConntrackArguments {
    enum Command: String, CaseIterable {
        case list = "dump"
        case get, delete, create, update, event, flush
        case count = "counter"
        case stats, add, version, help
        /// The letter conntrack's messages use.
        var letter: String {
            switch self {
            case .list: "L"
            case .get: "G"
            case .delete: "D"
            case .create: "I"
            case .update: "U"
            case .event: "E"
            case .flush: "F"
            case .count: "C"
            case .stats: "S"
            case .add: "A"
            case .version: "V"
            case .help: "h"
            }
        }
    }

    enum Table: String { case conntrack, expect, dying, unconfirmed }

    /// Every option that is not a command, by the name conntrack's messages give it.
    enum Option: String, CaseIterable {
        case src, dst
        case replySrc = "reply-src"
        case replyDst = "reply-dst"
        case protonum, timeout, status, zero
        case eventMask = "event-mask"
        case tupleSrc = "tuple-src"
        case tupleDst = "tuple-dst"
        case maskSrc = "mask-src"
        case maskDst = "mask-dst"
        case natRange = "nat-range"
        case mark, id, family
        case srcNat = "src-nat"
        case dstNat = "dst-nat"
        case output, secmark
        case bufferSize = "buffer-size"
        case anyNat = "any-nat"
        case zone, label
        case labelAdd = "label-add"
        case labelDel = "label-del"
        case origZone = "orig-zone"
        case replyZone = "reply-zone"
        case labelmap
    }

    /// Options that belong to a layer-4 protocol (`--sport`, `--state`, `--icmp-type`...).
    enum ProtoOption: String, CaseIterable {
        case sport, dport
        case replyPortSrc = "reply-port-src"
        case replyPortDst = "reply-port-dst"
        case maskPortSrc = "mask-port-src"
        case maskPortDst = "mask-port-dst"
        case state
        case tuplePortSrc = "tuple-port-src"
        case tuplePortDst = "tuple-port-dst"
        case origVtag = "orig-vtag"
        case replyVtag = "reply-vtag"
        case role
        case icmpType = "icmp-type"
        case icmpCode = "icmp-code"
        case icmpID = "icmp-id"
    }

    /// NAT selection: `--src-nat [ADDR[:PORT]]`.
    struct NATMatch: Equatable {
        var address: IPAddress?
        var port: UInt16?
    }

    /// `-u`: bits that must be set, bits that must be clear (`!BIT`), UNREPLIED.
    struct StatusMatch: Equatable {
        var set = FlowStatus()
        var clear = FlowStatus()
    }

    /// `-o`, conntrack's list.
    struct OutputFlags: OptionSet, Equatable {
        let rawValue: UInt16
        static let xml = OutputFlags(rawValue: 1)
        static let extended = OutputFlags(rawValue: 2)
        static let timestamp = OutputFlags(rawValue: 4)
        static let id = OutputFlags(rawValue: 8)
        static let ktimestamp = OutputFlags(rawValue: 16)
        static let labels = OutputFlags(rawValue: 32)
        static let userspace = OutputFlags(rawValue: 64)
        static let save = OutputFlags(rawValue: 128)
    }

    var command: Command?
    var table = Table.conntrack
    var given: Set<Option> = []
    var givenProto: Set<ProtoOption> = []
    var family: AddressFamily?
    var source: IPAddress?
    var destination: IPAddress?
    var sourceMask: IPAddress?
    var destinationMask: IPAddress?
    var replySource: IPAddress?
    var replyDestination: IPAddress?
    var proto: L4Protocol?
    var timeout: UInt32?
    var status: StatusMatch?
    var eventMask: EventTypes?
    var mark: MarkMatch?
    var id: UInt32?
    var sourceNAT: NATMatch?
    var destinationNAT: NATMatch?
    var anyNAT: NATMatch?
    var output: OutputFlags = []
    var bufferSize: Int?
    var zone: UInt16?
    var originalZone: UInt16?
    var replyZone: UInt16?
    var labels: [Int] = []
    var labelAdd: [Int] = []
    /// `--label-del` without names: every label.
    var labelDelete: [Int]?
    var labelMap: String?
    var sourcePort: UInt16?
    var destinationPort: UInt16?
    var replySourcePort: UInt16?
    var replyDestinationPort: UInt16?
    var state: String?
    var icmpType: UInt8?
    var icmpCode: UInt8?
    var icmpID: UInt16?
    var originalVerificationTag: UInt32?
    var replyVerificationTag: UInt32?
    var dccpRole: UInt8?
    /// Expectations (`-I expect`): the expected tuple and its mask.
    var tupleSource: IPAddress?
    var tupleDestination: IPAddress?
    var tupleSourcePort: UInt16?
    var tupleDestinationPort: UInt16?
    var maskSourcePort: UInt16?
    var maskDestinationPort: UInt16?
    /// Warnings to print before running (values read the lax way conntrack reads them).
    var warnings: [String] = []

    /// A usage error: conntrack's message (exit 2).
    struct Problem: Error, Equatable {
        var message: String
        init(_ message: String) { self.message = message }
    }

    // MARK: - Which arguments are conntrack's

    static let commandLongNames: [String: Command] = [
        "dump": .list, "get": .get, "delete": .delete, "create": .create, "update": .update, "event": .event,
        "flush": .flush, "counter": .count, "stats": .stats, "add": .add, "version": .version,
    ]
    static let commandLetters: [Character: Command] = [
        "L": .list, "G": .get, "D": .delete, "I": .create, "U": .update, "E": .event, "F": .flush, "C": .count,
        "S": .stats, "A": .add, "V": .version,
    ]

    /// Whether a command line is conntrack's rather than ctsync's: it starts with one of
    /// conntrack's commands (`-L`, `--dump`, `-R`...), or with the word `conntrack`.
    static func isConntrackLine(_ arguments: [String]) -> Bool {
        guard let first = arguments.first else { return false }
        if first == "conntrack" { return true }
        if first == "-R" || first == "--load-file" { return true }
        if first.hasPrefix("--") {
            let name = String(first.dropFirst(2).prefix { $0 != "=" })
            guard name.count >= 2 else { return false }
            let matches = Set(commandLongNames.filter { $0.key.hasPrefix(name) }.map(\.value))
            return matches.count == 1 && name != "version" && !"version".hasPrefix(name)
        }
        if first.hasPrefix("-"), first.count >= 2 {
            let letter = first[first.index(after: first.startIndex)]
            return commandLetters[letter] != nil
        }
        return false
    }

    // MARK: - Option table

    enum Key: Hashable {
        case command(Command)
        case option(Option)
        case proto(ProtoOption)
    }

    enum Arity { case none, required, optional }

    static let longNames: [String: Key] = {
        var names: [String: Key] = [:]
        for (name, command) in commandLongNames { names[name] = .command(command) }
        names["help"] = .command(.help)
        let options: [(String, Option)] = [
            ("src", .src), ("orig-src", .src), ("dst", .dst), ("orig-dst", .dst), ("reply-src", .replySrc),
            ("reply-dst", .replyDst), ("protonum", .protonum), ("timeout", .timeout), ("status", .status), ("zero", .zero),
            ("event-mask", .eventMask), ("tuple-src", .tupleSrc), ("tuple-dst", .tupleDst), ("mask-src", .maskSrc),
            ("mask-dst", .maskDst), ("nat-range", .natRange), ("mark", .mark), ("id", .id), ("family", .family),
            ("src-nat", .srcNat), ("dst-nat", .dstNat), ("output", .output), ("secmark", .secmark),
            ("buffer-size", .bufferSize), ("any-nat", .anyNat), ("zone", .zone), ("label", .label),
            ("label-add", .labelAdd), ("label-del", .labelDel), ("orig-zone", .origZone), ("reply-zone", .replyZone),
            ("labelmap", .labelmap),
        ]
        for (name, option) in options { names[name] = .option(option) }
        let protos: [(String, ProtoOption)] = [
            ("orig-port-src", .sport), ("sport", .sport), ("orig-port-dst", .dport), ("dport", .dport),
            ("reply-port-src", .replyPortSrc), ("reply-port-dst", .replyPortDst), ("mask-port-src", .maskPortSrc),
            ("mask-port-dst", .maskPortDst), ("state", .state), ("tuple-port-src", .tuplePortSrc),
            ("tuple-port-dst", .tuplePortDst), ("orig-vtag", .origVtag), ("reply-vtag", .replyVtag), ("role", .role),
            ("icmp-type", .icmpType), ("icmp-code", .icmpCode), ("icmp-id", .icmpID), ("icmpv6-type", .icmpType),
            ("icmpv6-code", .icmpCode), ("icmpv6-id", .icmpID), ("orig-key-src", .sport), ("srckey", .sport),
            ("orig-key-dst", .dport), ("dstkey", .dport), ("reply-key-src", .replyPortSrc),
            ("reply-key-dst", .replyPortDst), ("mask-key-src", .maskPortSrc), ("mask-key-dst", .maskPortDst),
            ("tuple-key-src", .tuplePortSrc), ("tuple-key-dst", .tuplePortDst),
        ]
        for (name, option) in protos { names[name] = .proto(option) }
        return names
    }()

    static let shortOptions: [Character: Option] = [
        "s": .src, "d": .dst, "r": .replySrc, "q": .replyDst, "p": .protonum, "t": .timeout, "u": .status,
        "z": .zero, "e": .eventMask, "a": .natRange, "m": .mark, "i": .id, "f": .family, "n": .srcNat, "g": .dstNat,
        "o": .output, "c": .secmark, "b": .bufferSize, "j": .anyNat, "w": .zone, "l": .label,
    ]

    static func arity(_ key: Key) -> Arity {
        switch key {
        case .command: return .optional
        case .option(let o):
            switch o {
            case .zero: return .none
            case .srcNat, .dstNat, .anyNat, .labelDel: return .optional
            default: return .required
            }
        case .proto: return .required
        }
    }

    /// The long option a written name means: exact, or the only one it is a prefix of.
    static func resolveLong(_ name: String) throws(Problem) -> (Key, String) {
        if let key = longNames[name] { return (key, name) }
        let candidates = longNames.filter { $0.key.hasPrefix(name) }
        let keys = Set(candidates.map(\.value))
        guard keys.count == 1, let hit = candidates.first, !name.isEmpty else {
            throw Problem("unknown option `--\(name)'")
        }
        return (hit.value, hit.key)
    }

    // MARK: - Parsing

    /// Parses one command line (without the program name).
    static func parse(_ arguments: [String]) throws(Problem) -> ConntrackArguments {
        var result = ConntrackArguments()
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if word == "--" { break }
            guard word.hasPrefix("-"), word.count > 1 else { continue }  // stray words are ignored, as by conntrack
            var key: Key
            var spelled: String
            var attached: String?
            if word.hasPrefix("--") {
                let body = String(word.dropFirst(2))
                let name = String(body.prefix { $0 != "=" })
                (key, spelled) = try resolveLong(name)
                spelled = "--" + spelled
                if body.count > name.count { attached = String(body.dropFirst(name.count + 1)) }
            } else {
                let letter = word[word.index(after: word.startIndex)]
                let rest = String(word.dropFirst(2))
                if letter == "h" {
                    key = .command(.help)
                } else if letter == "R" {
                    throw Problem("-R/--load-file must be the first argument: -R FILE (or - for stdin)")
                } else if let command = commandLetters[letter] {
                    key = .command(command)
                } else if let option = shortOptions[letter] {
                    key = .option(option)
                } else {
                    throw Problem("unknown option `\(word)'")
                }
                spelled = "-\(letter)"
                if !rest.isEmpty { attached = rest }
            }
            var value: String?
            switch arity(key) {
            case .none:
                if attached != nil { throw Problem("option `\(spelled)' takes no value") }
            case .required:
                if let attached {
                    value = attached
                } else if index < arguments.count {
                    value = arguments[index]
                    index += 1
                } else {
                    throw Problem("option `\(spelled)' requires an argument")
                }
            case .optional:
                if let attached {
                    value = attached
                } else if index < arguments.count, !arguments[index].hasPrefix("-"), !arguments[index].hasPrefix("!") {
                    value = arguments[index]
                    index += 1
                }
            }
            try result.apply(key, spelled: spelled, value: value)
        }
        return result
    }

    private mutating func apply(_ key: Key, spelled: String, value: String?) throws(Problem) {
        switch key {
        case .command(let c):
            if command != nil { throw Problem("Invalid commands combination") }
            command = c
            if let value { table = try Self.table(value) }
        case .option(let option):
            try apply(option, spelled: spelled, value: value)
        case .proto(let option):
            try apply(option, spelled: spelled, value: value ?? "")
        }
    }

    static func table(_ word: String) throws(Problem) -> Table {
        for table in [Table.expect, .conntrack, .dying, .unconfirmed] where table.rawValue.hasPrefix(word.lowercased()) && !word.isEmpty {
            return table
        }
        throw Problem("unknown type `\(word)'")
    }

    private mutating func apply(_ option: Option, spelled: String, value: String?) throws(Problem) {
        let text = value ?? ""
        given.insert(option)
        switch option {
        case .src, .dst:
            let (address, mask) = try Self.addressWithPrefix(text, option: option)
            try setFamily(address.family)
            if option == .src {
                source = address
                if let mask {
                    sourceMask = mask
                    given.insert(.maskSrc)
                }
            } else {
                destination = address
                if let mask {
                    destinationMask = mask
                    given.insert(.maskDst)
                }
            }
        case .replySrc, .replyDst, .maskSrc, .maskDst, .tupleSrc, .tupleDst:
            if text.contains("/") { throw Problem("CIDR notation unavailable for `--\(option.rawValue)'") }
            guard let address = IPAddress(text) else { throw Problem("Invalid IP address `\(text)'") }
            try setFamily(address.family)
            switch option {
            case .replySrc: replySource = address
            case .replyDst: replyDestination = address
            case .maskSrc: sourceMask = address
            case .maskDst: destinationMask = address
            case .tupleSrc: tupleSource = address
            default: tupleDestination = address
            }
        case .protonum:
            proto = try Self.protocolNumber(text)
        case .timeout:
            timeout = UInt32(truncatingIfNeeded: lax(text, option: spelled, limit: UInt64(UInt32.max)))
        case .status:
            status = try Self.statusList(text, warnings: &warnings)
        case .zero:
            break
        case .eventMask:
            eventMask = try Self.eventList(text, warnings: &warnings)
        case .natRange:
            given.remove(.natRange)
            warnings.append("WARNING: ignoring -a, deprecated option.")
        case .mark:
            let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let v = UInt32(truncatingIfNeeded: lax(String(parts[0]), option: spelled, limit: UInt64(UInt32.max)))
            let m = parts.count > 1 ? UInt32(truncatingIfNeeded: lax(String(parts[1]), option: spelled, limit: UInt64(UInt32.max))) : .max
            mark = MarkMatch(value: v, mask: m)
        case .id:
            id = UInt32(truncatingIfNeeded: lax(text, option: spelled, limit: UInt64(UInt32.max)))
        case .family:
            let f: AddressFamily
            if text.hasPrefix("ipv4") {
                f = .ipv4
            } else if text.hasPrefix("ipv6") {
                f = .ipv6
            } else {
                throw Problem("`\(text)' unsupported protocol")
            }
            try setFamily(f)
        case .srcNat, .dstNat, .anyNat:
            let match = try natMatch(value, option: option)
            switch option {
            case .srcNat: sourceNAT = match
            case .dstNat: destinationNAT = match
            default: anyNAT = match
            }
        case .output:
            output.formUnion(try Self.outputList(text, warnings: &warnings))
        case .secmark:
            _ = lax(text, option: spelled, limit: UInt64(UInt32.max))
        case .bufferSize:
            bufferSize = Int(lax(text, option: spelled, limit: UInt64(Int32.max)))
        case .zone:
            zone = UInt16(truncatingIfNeeded: lax(text, option: spelled, limit: UInt64(UInt16.max)))
        case .origZone:
            originalZone = UInt16(truncatingIfNeeded: lax(text, option: spelled, limit: UInt64(UInt16.max)))
        case .replyZone:
            replyZone = UInt16(truncatingIfNeeded: lax(text, option: spelled, limit: UInt64(UInt16.max)))
        case .label:
            labels += try labelBits(text)
        case .labelAdd:
            labelAdd += try labelBits(text)
        case .labelDel:
            var bits: [Int] = []
            if let value { bits = try labelBits(value) }
            labelDelete = (labelDelete ?? []) + bits
        case .labelmap:
            if labelMap != nil { throw Problem("option `--labelmap' can only be specified once") }
            labelMap = text
        }
    }

    /// Where each port option (or GRE key) goes.
    static func portField(_ option: ProtoOption) -> WritableKeyPath<ConntrackArguments, UInt16?>? {
        switch option {
        case .sport: \.sourcePort
        case .dport: \.destinationPort
        case .replyPortSrc: \.replySourcePort
        case .replyPortDst: \.replyDestinationPort
        case .maskPortSrc: \.maskSourcePort
        case .maskPortDst: \.maskDestinationPort
        case .tuplePortSrc: \.tupleSourcePort
        case .tuplePortDst: \.tupleDestinationPort
        default: nil
        }
    }

    private mutating func apply(_ option: ProtoOption, spelled: String, value: String) throws(Problem) {
        givenProto.insert(option)
        switch option {
        case .sport, .dport, .replyPortSrc, .replyPortDst, .maskPortSrc, .maskPortDst, .tuplePortSrc, .tuplePortDst:
            if let field = Self.portField(option) { self[keyPath: field] = try Self.port(value, option: spelled) }
        case .state:
            state = value
        case .origVtag:
            originalVerificationTag = UInt32(truncatingIfNeeded: lax(value, option: spelled, limit: UInt64(UInt32.max)))
        case .replyVtag:
            replyVerificationTag = UInt32(truncatingIfNeeded: lax(value, option: spelled, limit: UInt64(UInt32.max)))
        case .role:
            if "client".hasPrefix(value.lowercased()) && !value.isEmpty {
                dccpRole = 0
            } else if "server".hasPrefix(value.lowercased()) && !value.isEmpty {
                dccpRole = 1
            } else {
                throw Problem("Unknown DCCP role `\(value)'")
            }
        case .icmpType:
            icmpType = UInt8(truncatingIfNeeded: lax(value, option: spelled, limit: 255))
        case .icmpCode:
            icmpCode = UInt8(truncatingIfNeeded: lax(value, option: spelled, limit: 255))
        case .icmpID:
            icmpID = UInt16(truncatingIfNeeded: lax(value, option: spelled, limit: UInt64(UInt16.max)))
        }
    }

    private mutating func setFamily(_ f: AddressFamily) throws(Problem) {
        family = try Self.agreeing(family, f)
    }

    /// conntrack's rule for one line: `-f` and every address are of one family.
    static func agreeing(_ family: AddressFamily?, _ f: AddressFamily) throws(Problem) -> AddressFamily {
        if let family, family != f { throw Problem("mismatched address family") }
        return f
    }

    // MARK: - Values

    /// A number read as C's strtoul reads it (base 0: decimal, 0x hex, 0 octal), as conntrack
    /// 1.4.7 does: what follows the digits is ignored, with a warning that says so.
    mutating func lax(_ text: String, option: String, limit: UInt64) -> UInt64 {
        var value: UInt64 = 0
        let chars = Array(text.utf8)
        var i = 0
        while i < chars.count, chars[i] == 0x20 || chars[i] == 0x09 { i += 1 }
        var radix: UInt64 = 10
        if i + 1 < chars.count, chars[i] == 0x30, chars[i + 1] | 0x20 == 0x78 {
            radix = 16
            i += 2
        } else if i < chars.count, chars[i] == 0x30 {
            radix = 8
        }
        let start = i
        while i < chars.count {
            let c = chars[i] | 0x20
            let digit: UInt64
            if chars[i] >= 0x30 && chars[i] <= 0x39 {
                digit = UInt64(chars[i] - 0x30)
            } else if c >= 0x61 && c <= 0x66 {
                digit = UInt64(c - 0x61 + 10)
            } else {
                break
            }
            guard digit < radix else { break }
            value = min(value &* radix &+ digit, UInt64(UInt32.max) + 1)
            i += 1
        }
        if i < chars.count || start == i && radix != 8 {
            warnings.append("ctsync: warning: \(option) '\(text)': read as \(value) (conntrack ignores what follows the number)")
        }
        if value > limit { warnings.append("ctsync: warning: \(option) '\(text)' is over \(limit): truncated") }
        return value
    }

    static func port(_ text: String, option: String) throws(Problem) -> UInt16 {
        guard let p = UInt16(text) else { throw Problem("Invalid port `\(text)' for `\(option)': expected 0-65535") }
        return p
    }

    /// `ADDR` or `ADDR/N`: the address, and the mask a prefix shorter than the address gives.
    static func addressWithPrefix(_ text: String, option: Option) throws(Problem) -> (IPAddress, IPAddress?) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { throw Problem("Invalid IP address `\(parts[0])'") }
        guard parts.count == 2 else { return (address, nil) }
        let bits = address.family == .ipv4 ? 32 : 128
        guard let n = Int(parts[1]), (0...bits).contains(n) else { throw Problem("Invalid netmask") }
        if n == bits { return (address, nil) }
        return (address, IPAddress.mask(prefix: n, family: address.family))
    }

    /// conntrack's `-p`: a name it knows, a name from /etc/protocols, or a number 0-255.
    static func protocolNumber(_ text: String) throws(Problem) -> L4Protocol {
        let known = ["tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6", "gre"]
        if known.contains(text.lowercased()), let p = L4Protocol(name: text) { return p }
        if let entry = getprotobyname(text) { return L4Protocol(rawValue: UInt8(truncatingIfNeeded: entry.pointee.p_proto)) }
        if let n = UInt8(text) { return L4Protocol(rawValue: n) }
        if text.lowercased().hasPrefix("0x"), let n = UInt8(text.dropFirst(2), radix: 16) { return L4Protocol(rawValue: n) }
        throw Problem("`\(text)' unsupported protocol")
    }

    static let statusWords: [(String, FlowStatus)] = [
        ("ASSURED", .assured), ("SEEN_REPLY", .seenReply), ("UNSET", []), ("FIXED_TIMEOUT", .fixedTimeout),
        ("EXPECTED", .expected), ("OFFLOAD", FlowStatus(rawValue: 1 << 14)), ("HW_OFFLOAD", FlowStatus(rawValue: 1 << 15)),
    ]

    /// `-u LIST`: words matched by prefix, case-insensitive; `!WORD` must be clear; UNREPLIED
    /// means SEEN_REPLY clear; SRC_NAT and DST_NAT are ignored with conntrack's warning.
    static func statusList(_ text: String, warnings: inout [String]) throws(Problem) -> StatusMatch {
        var match = StatusMatch()
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        for (n, raw) in parts.enumerated() {
            var word = String(raw)
            let rest = parts[n...].joined(separator: ",")
            let negated = word.hasPrefix("!")
            if negated { word.removeFirst() }
            guard !word.isEmpty else { throw Problem("Bad parameter `\(rest)'") }
            let upper = word.uppercased()
            if "SRC_NAT".hasPrefix(upper) {
                warnings.append("WARNING: ignoring SRC_NAT, use --src-nat instead")
                continue
            }
            if "DST_NAT".hasPrefix(upper) {
                warnings.append("WARNING: ignoring DST_NAT, use --dst-nat instead")
                continue
            }
            if upper.hasPrefix("UNREPLIED") {
                match.clear.insert(.seenReply)
                continue
            }
            guard let hit = statusWords.first(where: { $0.0.hasPrefix(upper) }) else { throw Problem("Bad parameter `\(rest)'") }
            if negated { match.clear.formUnion(hit.1) } else { match.set.formUnion(hit.1) }
        }
        return match
    }

    static func eventList(_ text: String, warnings: inout [String]) throws(Problem) -> EventTypes {
        var types: EventTypes = []
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        for (n, raw) in parts.enumerated() {
            let upper = raw.uppercased()
            let rest = parts[n...].joined(separator: ",")
            guard !upper.isEmpty else { throw Problem("Bad parameter `\(rest)'") }
            if "ALL".hasPrefix(upper) {
                types = .all
            } else if "NEW".hasPrefix(upper) {
                types.insert(.new)
            } else if "UPDATES".hasPrefix(upper) {
                types.insert(.update)
            } else if "DESTROY".hasPrefix(upper) {
                types.insert(.destroy)
            } else {
                throw Problem("Bad parameter `\(rest)'")
            }
        }
        return types
    }

    static func outputList(_ text: String, warnings: inout [String]) throws(Problem) -> OutputFlags {
        let words: [(String, OutputFlags)] = [
            ("xml", .xml), ("extended", .extended), ("timestamp", .timestamp), ("id", .id), ("ktimestamp", .ktimestamp),
            ("labels", .labels), ("userspace", .userspace), ("save", .save),
        ]
        var flags: OutputFlags = []
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        for (n, raw) in parts.enumerated() {
            let lower = raw.lowercased()
            let rest = parts[n...].joined(separator: ",")
            guard !lower.isEmpty, let hit = words.first(where: { $0.0.hasPrefix(lower) }) else { throw Problem("Bad parameter `\(rest)'") }
            flags.insert(hit.1)
        }
        return flags
    }

    /// `--src-nat [ADDR[:PORT]]`, `[V6ADDR]:PORT` for IPv6 with a port.
    mutating func natMatch(_ value: String?, option: Option) throws(Problem) -> NATMatch {
        guard let value else { return NATMatch() }
        var addressText = value
        var portText: String?
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else { throw Problem("No closing ']' around IPv6 address") }
            addressText = String(value[value.index(after: value.startIndex)..<close])
            if addressText.isEmpty { throw Problem("No IPv6 address specified") }
            let after = value[value.index(after: close)...]
            guard after.hasPrefix(":") else { throw Problem("Invalid IP address `\(value)'") }
            portText = String(after.dropFirst())
        } else if value.filter({ $0 == ":" }).count == 1, let colon = value.firstIndex(of: ":") {
            addressText = String(value[..<colon])
            portText = String(value[value.index(after: colon)...])
        }
        if addressText.contains("/") { throw Problem("CIDR notation unavailable for `--\(option.rawValue)'") }
        guard let address = IPAddress(addressText) else { throw Problem("Invalid IP address `\(addressText)'") }
        try setFamily(address.family)
        var match = NATMatch(address: address)
        if let portText {
            guard !portText.isEmpty else { throw Problem("No port specified after `:'") }
            guard portText.allSatisfy(\.isNumber), let p = UInt16(portText) else { throw Problem("Invalid port `\(portText)'") }
            match.port = p
        }
        return match
    }

    /// Label names from the label map (`/etc/xtables/connlabel.conf`, or `--labelmap`), or bit numbers.
    func labelBits(_ text: String) throws(Problem) -> [Int] {
        var bits: [Int] = []
        for name in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            guard let bit = ConnLabelMap.bit(name, path: labelMap) else { throw Problem("unknown label '\(name)'") }
            bits.append(bit)
        }
        return bits
    }
}

/// conntrack's label names: lines `BIT NAME` in `/etc/xtables/connlabel.conf`.
struct ConnLabelMap {
    var names: [Int: String] = [:]
    static let defaultPath = "/etc/xtables/connlabel.conf"

    static func load(path: String?) -> ConnLabelMap {
        var map = ConnLabelMap()
        guard let file = fopen(path ?? defaultPath, "r") else { return map }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
            if text.isEmpty || text.hasPrefix("#") { continue }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, let bit = Int(fields[0]), (0...FlowLabels.maxBit).contains(bit) else { continue }
            map.names[bit] = String(fields[1])
        }
        return map
    }

    func bit(named name: String) -> Int? { names.first { $0.value == name }?.key }

    /// A label as conntrack's options and ctsync's take it: a bit number, or a name from the map.
    static func bit(_ name: String, path: String?) -> Int? {
        if let n = Int(name), (0...FlowLabels.maxBit).contains(n) { return n }
        return load(path: path).bit(named: name)
    }
}
