/// The keywords of conntrackd 1.4.7's configuration lexer (src/read_config_lex.l), spelt
/// exactly as it matches them: keywords are case-sensitive, so `hashsize` or `Lockfile` are
/// plain words, not options.
enum ConfigKeyword: String, CaseIterable, Sendable {
    case unix = "UNIX"
    case ipv4Address = "IPv4_address"
    case ipv6Address = "IPv6_address"
    case ipv4DestinationAddress = "IPv4_Destination_Address"
    case ipv6DestinationAddress = "IPv6_Destination_Address"
    case ipv4Interface = "IPv4_interface"
    case ipv6Interface = "IPv6_interface"
    case interface = "Interface"
    case multicast = "Multicast"
    case udp = "UDP"
    case tcp = "TCP"
    case hashSize = "HashSize"
    case refreshTime = "RefreshTime"
    case cacheTimeout = "CacheTimeout"
    case commitTimeout = "CommitTimeout"
    case hashLimit = "HashLimit"
    case path = "Path"
    case backlog = "Backlog"
    case group = "Group"
    case port = "Port"
    case logFile = "LogFile"
    case syslog = "Syslog"
    case lockFile = "LockFile"
    case general = "General"
    case sync = "Sync"
    case stats = "Stats"
    case metrics = "Metrics"
    case socketBufferSize = "SocketBufferSize"
    case socketBufferSizeMaxGrown = "SocketBufferSizeMaxGrown"
    case socketBufferSizeMaxGrowth = "SocketBufferSizeMaxGrowth"
    case netlinkBufferSize = "NetlinkBufferSize"
    case netlinkBufferSizeMaxGrowth = "NetlinkBufferSizeMaxGrowth"
    case mode = "Mode"
    case resendQueueSize = "ResendQueueSize"
    case checksum = "Checksum"
    case ackWindowSize = "ACKWindowSize"
    case forKeyword = "for"
    case synSent = "SYN_SENT"
    case synRecv = "SYN_RECV"
    case established = "ESTABLISHED"
    case finWait = "FIN_WAIT"
    case closeWait = "CLOSE_WAIT"
    case lastAck = "LAST_ACK"
    case timeWait = "TIME_WAIT"
    case close = "CLOSE"
    case closed = "CLOSED"
    case listen = "LISTEN"
    case sndSocketBuffer = "SndSocketBuffer"
    case rcvSocketBuffer = "RcvSocketBuffer"
    case filter = "Filter"
    case protocolKeyword = "Protocol"
    case address = "Address"
    case state = "State"
    case accept = "Accept"
    case ignore = "Ignore"
    case purgeTimeout = "PurgeTimeout"
    case from = "From"
    case userspace = "Userspace"
    case kernelspace = "Kernelspace"
    case eventIterationLimit = "EventIterationLimit"
    case defaultKeyword = "Default"
    case pollSecs = "PollSecs"
    case netlinkOverrunResync = "NetlinkOverrunResync"
    case nice = "Nice"
    case scheduler = "Scheduler"
    case type = "Type"
    case priority = "Priority"
    case netlinkEventsReliable = "NetlinkEventsReliable"
    case disableInternalCache = "DisableInternalCache"
    case disableExternalCache = "DisableExternalCache"
    case options = "Options"
    case tcpWindowTracking = "TCPWindowTracking"
    case expectationSync = "ExpectationSync"
    case ignoreReceived = "IgnoreReceived"
    case errorQueueLength = "ErrorQueueLength"
    case helper = "Helper"
    case queueNum = "QueueNum"
    case queueLen = "QueueLen"
    case policy = "Policy"
    case expectMax = "ExpectMax"
    case expectTimeout = "ExpectTimeout"
    case systemd = "Systemd"
    case startupResync = "StartupResync"
    case setup = "Setup"
    case auth = "Auth"
    case keyFile = "KeyFile"
    case algorithm = "Algorithm"
    case nodeId = "NodeId"
    case updateDelay = "UpdateDelay"

    /// The name used in setting paths and docs: aliases map to the option they stand for.
    var canonicalName: String {
        switch self {
        case .socketBufferSize: return ConfigKeyword.netlinkBufferSize.rawValue
        case .socketBufferSizeMaxGrown, .socketBufferSizeMaxGrowth: return ConfigKeyword.netlinkBufferSizeMaxGrowth.rawValue
        case .close: return ConfigKeyword.closed.rawValue
        default: return rawValue
        }
    }

    /// Keywords grouped by first byte, so the lexer compares only plausible candidates.
    static let byFirstByte: [UInt8: [(keyword: ConfigKeyword, bytes: [UInt8])]] = {
        var table: [UInt8: [(keyword: ConfigKeyword, bytes: [UInt8])]] = [:]
        for keyword in ConfigKeyword.allCases {
            let bytes = Array(keyword.rawValue.utf8)
            table[bytes[0], default: []].append((keyword, bytes))
        }
        return table
    }()
}

/// The synchronisation modes the lexer recognises, with the legacy spellings it still takes.
enum SyncModeName: String, Sendable {
    case ftfw = "FTFW"
    case notrack = "NOTRACK"
    case alarm = "ALARM"
}

/// One token of conntrackd.conf, classified as conntrackd's lexer classifies it.
struct ConfigToken: Sendable {
    enum Kind: Equatable, Sendable {
        case keyword(ConfigKeyword)
        /// `on`/`yes` in any case.
        case on
        /// `off`/`no` in any case.
        case off
        /// `[0-9]+`
        case number
        /// `[-+][0-9]+`
        case signedNumber
        /// The lexer's IPv4 or IPv6 shape (optionally with `/prefix`); not yet validated.
        case address
        /// `/` followed by anything up to whitespace or a quote.
        case path
        /// A sync mode name; `legacy` is the old spelling (`nack`, `PERSISTENT`).
        case mode(SyncModeName, legacy: Bool)
        /// `[a-zA-Z][a-zA-Z0-9._-]*` that is no keyword.
        case word
        /// Any other single byte (`{`, `}`, `"`, ...).
        case symbol
        case end
    }

    var kind: Kind
    var text: String
    var line: Int
    var column: Int
    /// Byte offsets of the token in the file.
    var start: Int
    var end: Int

    var isOpenBrace: Bool { kind == .symbol && text == "{" }

    /// A token the grammar reserves (keyword, on/off, mode name), so never a name.
    var isReservedWord: Bool {
        switch kind {
        case .keyword, .on, .off, .mode: return true
        default: return false
        }
    }
    var isCloseBrace: Bool { kind == .symbol && text == "}" }

    /// How an error message quotes this token.
    var quoted: String {
        switch kind {
        case .end: return "end of file"
        default:
            if kind == .symbol, let scalar = text.unicodeScalars.first, scalar.value < 0x20 || scalar.value == 0x7f {
                return "byte 0x" + String(scalar.value, radix: 16)
            }
            return "'\(text)'"
        }
    }
}

/// Splits conntrackd.conf into tokens the way conntrackd 1.4.7's flex lexer does: at each
/// position the longest match wins, and among matches of equal length the rule listed first
/// in read_config_lex.l (keywords, on/off, numbers, addresses, paths, mode names, words).
///
/// Deliberate differences, all of which only accept files conntrackd rejects or mis-reads:
/// - a `#` comment on the last line without a newline is a comment (conntrackd's `#.*$`
///   needs the newline, so it reports a syntax error);
/// - a path ends at a tab or carriage return as well as at a space (conntrackd would make the
///   tab, the comment after it, or the CR of a CRLF file part of the file name);
/// - the lexer's classes `[o|O][n|N]` and friends also admit `|` (so `||` reads as `on` in
///   conntrackd); ctsync takes letters only.
/// The lexer never fails: any other byte becomes a `.symbol` token the parser reports.
struct ConfigLexer {
    let bytes: [UInt8]

    init(bytes: [UInt8]) { self.bytes = bytes }

    func tokenize() -> [ConfigToken] {
        var tokens: [ConfigToken] = []
        var i = 0
        var line = 1
        var lineStart = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b == UInt8(ascii: "\n") {
                line += 1
                i += 1
                lineStart = i
                continue
            }
            if b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") {
                i += 1
                continue
            }
            if b == UInt8(ascii: "#") {
                while i < n && bytes[i] != UInt8(ascii: "\n") { i += 1 }
                continue
            }
            let (kind, length) = longestMatch(at: i)
            let end = i + length
            let text = String(decoding: bytes[i..<end], as: UTF8.self)
            tokens.append(
                ConfigToken(kind: kind, text: text, line: line, column: column(of: i, lineStart: lineStart), start: i, end: end))
            i = end
        }
        var endColumn = column(of: n, lineStart: lineStart)
        if endColumn < 1 { endColumn = 1 }
        tokens.append(ConfigToken(kind: .end, text: "", line: line, column: endColumn, start: n, end: n))
        return tokens
    }

    /// Columns count characters (UTF-8 continuation bytes do not start one), from 1.
    private func column(of offset: Int, lineStart: Int) -> Int {
        var count = 1
        var j = lineStart
        while j < offset {
            if bytes[j] & 0xC0 != 0x80 { count += 1 }
            j += 1
        }
        return count
    }

    private func byte(_ i: Int) -> UInt8? { i < bytes.count ? bytes[i] : nil }

    private func isDigit(_ i: Int) -> Bool {
        guard let b = byte(i) else { return false }
        return b >= 0x30 && b <= 0x39
    }

    private func isHex(_ i: Int) -> Bool {
        guard let b = byte(i) else { return false }
        return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
    }

    private func isLetter(_ i: Int) -> Bool {
        guard let b = byte(i) else { return false }
        return (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    private func isWordByte(_ i: Int) -> Bool {
        guard let b = byte(i) else { return false }
        return isLetter(i) || isDigit(i) || b == UInt8(ascii: ".") || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
    }

    /// Length of `word` matched at `i` ignoring ASCII case (the lexer's `[o|O][n|N]` classes,
    /// without their stray `|`), or 0. With `capitalLast`, the last letter must be upper case.
    private func caseless(_ word: StaticString, at i: Int, capitalLast: Bool = false) -> Int {
        let count = word.utf8CodeUnitCount
        guard i + count <= bytes.count else { return 0 }
        let pattern = word.utf8Start
        for k in 0..<count {
            let b = bytes[i + k]
            let expected = pattern[k]
            if capitalLast && k == count - 1 {
                if b != expected & ~0x20 { return 0 }
            } else if b | 0x20 != expected || !isLetter(i + k) {
                return 0
            }
        }
        return count
    }

    private func digitRun(at i: Int) -> Int {
        var k = i
        while isDigit(k) { k += 1 }
        return k - i
    }

    /// `{ip4_part}\.{ip4_part}\.{ip4_part}\.{ip4_part}{ip4_cidr}?`; each part is in effect `[0-9]+`
    /// and the prefix `/[0-9]+`.
    private func ipv4Length(at i: Int) -> Int {
        var k = i
        for part in 0..<4 {
            let run = digitRun(at: k)
            if run == 0 { return 0 }
            k += run
            if part < 3 {
                guard byte(k) == UInt8(ascii: ".") else { return 0 }
                k += 1
            }
        }
        if byte(k) == UInt8(ascii: "/") {
            let run = digitRun(at: k + 1)
            if run > 0 { k += 1 + run }
        }
        return k - i
    }

    /// Offsets (relative to the token start) reachable while matching an IPv6 shape. No match
    /// is longer than 7 × 5 + 2 + 7 × 5 = 72 bytes before its prefix, so 128 bits hold them all.
    private typealias Offsets = UInt128

    private func forEachOffset(_ set: Offsets, _ body: (Int) -> Void) {
        var rest = set
        while rest != 0 {
            body(rest.trailingZeroBitCount)
            rest &= rest - 1
        }
    }

    /// Ends reachable from `starts` by one `[0-9a-fA-F]{1,4}`.
    private func hexEnds(_ starts: Offsets, from i: Int) -> Offsets {
        var out: Offsets = 0
        forEachOffset(starts) { s in
            var k = s
            while k - s < 4 && k < 127 && isHex(i + k) {
                k += 1
                out |= 1 << k
            }
        }
        return out
    }

    /// Ends reachable by one `:`.
    private func colonEnds(_ starts: Offsets, from i: Int) -> Offsets {
        var out: Offsets = 0
        forEachOffset(starts) { s in
            if s < 127 && byte(i + s) == UInt8(ascii: ":") { out |= 1 << (s + 1) }
        }
        return out
    }

    /// Ends reachable by 0...7 repetitions of `step`.
    private func upToSeven(_ starts: Offsets, _ step: (Offsets) -> Offsets) -> Offsets {
        var current = starts
        var out = starts
        for _ in 1...7 {
            current = step(current)
            if current == 0 { break }
            out |= current
        }
        return out
    }

    /// `{ip6_form1}{ip6_cidr}?|{ip6_form2}{ip6_cidr}?` with `ip6_part = hex{1,4}":"?`,
    /// `form1 = part{0,7}"::"part{0,7}`, `form2 = (hex":"){0,7}hex`, cidr `/[0-9]+`.
    private func ipv6Length(at i: Int) -> Int {
        guard isHex(i) || byte(i) == UInt8(ascii: ":") else { return 0 }
        let part: (Offsets) -> Offsets = { starts in
            let afterHex = self.hexEnds(starts, from: i)
            return afterHex | self.colonEnds(afterHex, from: i)
        }
        let before = upToSeven(1, part)
        var afterDoubleColon: Offsets = 0
        forEachOffset(before) { s in
            if s < 126 && byte(i + s) == UInt8(ascii: ":") && byte(i + s + 1) == UInt8(ascii: ":") {
                afterDoubleColon |= 1 << (s + 2)
            }
        }
        let form1 = afterDoubleColon == 0 ? 0 : upToSeven(afterDoubleColon, part)
        let form2 = hexEnds(upToSeven(1, { self.colonEnds(self.hexEnds($0, from: i), from: i) }), from: i)
        var best = 0
        forEachOffset(form1 | form2) { e in
            var end = e
            if byte(i + e) == UInt8(ascii: "/") {
                let run = digitRun(at: i + e + 1)
                if run > 0 { end = e + 1 + run }
            }
            best = max(best, end)
        }
        return best
    }

    private func longestMatch(at i: Int) -> (ConfigToken.Kind, Int) {
        var bestKind: ConfigToken.Kind = .symbol
        var bestLength = 0
        func consider(_ kind: ConfigToken.Kind, _ length: Int) {
            if length > bestLength {
                bestKind = kind
                bestLength = length
            }
        }
        for candidate in ConfigKeyword.byFirstByte[bytes[i]] ?? [] {
            let k = candidate.bytes
            if i + k.count <= bytes.count && bytes[i..<(i + k.count)].elementsEqual(k) {
                consider(.keyword(candidate.keyword), k.count)
            }
        }
        let first = bytes[i]
        let isDigitStart = first >= 0x30 && first <= 0x39
        if isLetter(i) {
            consider(.on, max(caseless("on", at: i), caseless("yes", at: i)))
            consider(.off, max(caseless("off", at: i), caseless("no", at: i)))
        }
        if isDigitStart {
            consider(.number, digitRun(at: i))
        } else if first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            let run = digitRun(at: i + 1)
            if run > 0 { consider(.signedNumber, run + 1) }
        }
        if isDigitStart { consider(.address, ipv4Length(at: i)) }
        consider(.address, ipv6Length(at: i))
        if bytes[i] == UInt8(ascii: "/") {
            var k = i + 1
            while let b = byte(k), b != UInt8(ascii: "\""), b != UInt8(ascii: "\n"), b != UInt8(ascii: " "),
                b != UInt8(ascii: "\t"), b != UInt8(ascii: "\r")
            {
                k += 1
            }
            consider(.path, k - i)
        }
        if isLetter(i) {
            consider(.mode(.alarm, legacy: false), caseless("alarm", at: i))
            // read_config_lex.l spells the last letter `[T|T]`: only a capital T ends it.
            consider(.mode(.alarm, legacy: true), caseless("persistent", at: i, capitalLast: true))
            consider(.mode(.ftfw, legacy: false), caseless("ftfw", at: i))
            consider(.mode(.ftfw, legacy: true), caseless("nack", at: i))
            consider(.mode(.notrack, legacy: false), caseless("notrack", at: i))
        }
        if isLetter(i) {
            var k = i + 1
            while isWordByte(k) { k += 1 }
            consider(.word, k - i)
        }
        // Everything else is a single-byte token, as flex's `.` rule returns yytext[0].
        consider(.symbol, 1)
        return (bestKind, bestLength)
    }
}
