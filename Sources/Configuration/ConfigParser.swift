import FlowModel

/// A recursive-descent parser for conntrackd 1.4.7's grammar (src/read_config_yy.y) over the
/// tokens of `ConfigLexer`, building a `DaemonConfig`.
///
/// Where conntrackd only warns (a bad address, an unknown protocol or syslog facility, an
/// out-of-range value it truncates) and runs with something other than what was written,
/// ctsync reports an error instead; each such place says so in a comment. Repeated options keep
/// the last value, as in conntrackd, with a warning.
struct ConfigParser {
    let file: String
    let tokens: [ConfigToken]
    private var index = 0

    private var settings: [ConfigSetting] = []
    private var warnings: [ConfigWarning] = []
    /// The token that last set each option, to warn when it is set again.
    private var lastSet: [String: ConfigToken] = [:]

    private var general = GeneralConfig()
    private var netlinkBufferSizeToken: ConfigToken?
    private var generalSyslogToken: ConfigToken?
    private var filter = FilterBuilder()
    private var scheduler: (policy: SchedulerConfig.Policy?, priority: Int?)?
    private var sync: SyncBuilder?
    private var stats: StatsConfig?
    private var statsToken: ConfigToken?
    private var statsSyslogToken: ConfigToken?
    private var helper: HelperConfig?
    private var metrics: MetricsConfig?
    private var metricsToken: ConfigToken?

    /// Values above this are rejected: conntrackd reads numbers with atoi() into a C int, and
    /// a larger value is undefined behaviour there (in practice a wrapped, wrong value).
    static let maximumNumber = Int(Int32.max)
    /// FILENAME_MAXLEN: longer LogFile/LockFile paths make conntrackd exit.
    static let maximumFileNameLength = 256
    /// UNIX_PATH_MAX - 1.
    static let maximumSocketPathLength = 107
    /// IFNAMSIZ - 1; conntrackd truncates longer names silently (without a terminating NUL).
    static let maximumInterfaceNameLength = 15

    init(file: String, tokens: [ConfigToken]) {
        self.file = file
        self.tokens = tokens
    }

    // MARK: - Top level

    mutating func parseFile() throws(ConfigError) -> DaemonConfig {
        while true {
            let t = next()
            switch t.kind {
            case .end:
                return try finish()
            case .keyword(.general):
                record(t, block: nil, name: "General", repeatable: true)
                try parseGeneral(t)
            case .keyword(.sync):
                try parseSync(t)
            case .keyword(.stats):
                try parseStats(t)
            case .keyword(.metrics):
                try parseMetrics(t)
            case .keyword(.helper):
                record(t, block: nil, name: "Helper", repeatable: true)
                try parseHelper(t)
            case .keyword(let k):
                let homes = ConfigBlock.blocks(accepting: k).map(\.label)
                let hint = homes.isEmpty ? "" : "; \(k.rawValue) belongs in \(list(homes))"
                throw error(t, "'\(t.text)' outside any section (expected General, Sync, Stats, Metrics or Helper)\(hint)")
            case .word:
                throw error(t, "unknown section '\(t.text)' (expected General, Sync, Stats, Metrics or Helper)\(caseHint(t.text, in: .top))")
            default:
                if t.isCloseBrace { throw error(t, "unexpected '}' at the top level: no block is open") }
                throw error(t, "expected a section (General, Sync, Stats, Metrics or Helper), got \(t.quoted)")
            }
        }
    }

    private mutating func finish() throws(ConfigError) -> DaemonConfig {
        general.filter = filter.build()
        if let scheduler {
            general.scheduler = SchedulerConfig(
                policy: scheduler.policy ?? .roundRobin, priority: scheduler.priority ?? ConfigDefaults.schedulerPriority)
        }
        if let token = netlinkBufferSizeToken, general.netlinkBufferSize > 0, general.effectiveNetlinkBufferSize == nil {
            let growth = general.netlinkBufferSizeMaxGrowth
            let why = growth == 0 ? "NetlinkBufferSizeMaxGrowth is not set" : "it is larger than NetlinkBufferSizeMaxGrowth \(growth)"
            warn(
                token,
                "NetlinkBufferSize \(general.netlinkBufferSize) in General is not applied because \(why); "
                    + "the system default buffer size is used, as conntrackd does")
        }
        if let statsSyslogToken, let g = general.syslogFacility, let s = stats?.syslogFacility, g != s {
            warn(statsSyslogToken, "Syslog facility '\(s)' in Stats differs from '\(g)' in General; conntrackd uses General's")
        }
        var syncConfig: SyncConfig?
        if let sync {
            syncConfig = try sync.build(parser: &self)
        }
        // Some warnings are only known at the end; report them all in file order.
        let ordered = warnings.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
        return DaemonConfig(
            path: file, general: general, sync: syncConfig, stats: stats, helper: helper, metrics: metrics, settings: settings,
            warnings: ordered)
    }

    // MARK: - Tokens, errors, settings

    private mutating func next() -> ConfigToken {
        let t = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return t
    }

    private func peek() -> ConfigToken { tokens[index] }

    func error(_ at: ConfigToken, _ message: String) -> ConfigError {
        ConfigError(file: file, line: at.line, column: at.column, message: message)
    }

    mutating func warn(_ at: ConfigToken, _ message: String) {
        warnings.append(ConfigWarning(file: file, line: at.line, column: at.column, message: message))
    }

    /// Records a setting; unless `repeatable`, warns when the same option (per `scope`) was set
    /// before, since the later value silently replaces the earlier one.
    private mutating func record(
        _ t: ConfigToken, block: String?, name: String, scope: String? = nil, repeatable: Bool = false
    ) {
        let path = block.map { "\($0).\(name)" } ?? name
        settings.append(ConfigSetting(path: path, name: t.text, line: t.line, column: t.column))
        guard !repeatable else { return }
        let key = scope ?? path
        if let previous = lastSet[key] {
            warn(
                t,
                "\(t.text) in \(block ?? "the top level") is set again; this value replaces the one at "
                    + "\(previous.line):\(previous.column) (the last one wins, as in conntrackd)")
        }
        lastSet[key] = t
    }

    private func list(_ items: [String]) -> String {
        guard items.count > 1 else { return items.first ?? "" }
        return items.dropLast().joined(separator: ", ") + " or " + items.last!
    }

    /// "; did you mean 'LockFile'? ..." when a word differs from a keyword only in case.
    private func caseHint(_ word: String, in block: ConfigBlock) -> String {
        let lowered = word.lowercased()
        guard let keyword = ConfigKeyword.allCases.first(where: { $0.rawValue.lowercased() == lowered }) else { return "" }
        if block.keywords.contains(keyword) {
            return "; did you mean '\(keyword.rawValue)'? (names are case-sensitive)"
        }
        let homes = ConfigBlock.blocks(accepting: keyword).map(\.label)
        let place = homes.isEmpty ? "" : ", which belongs in \(list(homes))"
        return "; did you mean '\(keyword.rawValue)'\(place)? (names are case-sensitive)"
    }

    /// Reads the `{` opening a block named `what`.
    private mutating func openBrace(_ what: String) throws(ConfigError) {
        let t = next()
        guard t.isOpenBrace else { throw error(t, "expected '{' after \(what), got \(t.quoted)") }
    }

    /// The next option of a block, or nil at its closing brace. Anything that is not an
    /// option of `block` is an error saying what was found and, for options of other blocks,
    /// where they belong.
    private mutating func nextOption(
        in block: ConfigBlock, path: String, opened: ConfigToken
    ) throws(ConfigError) -> (token: ConfigToken, keyword: ConfigKeyword)? {
        let t = next()
        if t.isCloseBrace { return nil }
        switch t.kind {
        case .end:
            throw error(
                t, "unexpected end of file in \(path): missing '}' to close the block opened at \(opened.line):\(opened.column)")
        case .keyword(let k):
            if block.keywords.contains(k) { return (t, k) }
            if ConfigBlock.top.keywords.contains(k) {
                throw error(
                    t,
                    "section '\(t.text)' inside \(path): sections go at the top level "
                        + "(is the '}' closing the block opened at \(opened.line):\(opened.column) missing?)")
            }
            let homes = ConfigBlock.blocks(accepting: k).map(\.label)
            let hint = homes.isEmpty ? "" : "; \(t.text) belongs in \(list(homes))"
            throw error(t, "unknown option '\(t.text)' in \(path)\(hint)")
        case .word:
            throw error(t, "unknown option '\(t.text)' in \(path)\(caseHint(t.text, in: block))")
        default:
            throw error(t, "expected an option name in \(path), got \(t.quoted)")
        }
    }

    // MARK: - Values

    /// The text an error shows when a value runs into the next token without a space
    /// (`1.5`, `3780x`): conntrackd's lexer splits it and then fails, or worse, does not.
    private func gluedText(from value: ConfigToken) -> String? {
        var text = value.text
        var end = value.end
        var j = index
        while j < tokens.count {
            let t = tokens[j]
            guard t.start == end, t.kind != .end, !t.isOpenBrace, !t.isCloseBrace else { break }
            text += t.text
            end = t.end
            j += 1
        }
        return end == value.end ? nil : text
    }

    /// Fails when the value just read is glued to more text.
    private func checkSeparated(_ value: ConfigToken, option: ConfigToken, path: String, expects: String) throws(ConfigError) {
        if let glued = gluedText(from: value) {
            throw error(value, "\(option.text) in \(path) expects \(expects), got '\(glued)'")
        }
    }

    private func describe(_ t: ConfigToken) -> String {
        if t.kind == .symbol && t.text == "\"" {
            return "'\"' (quoted strings are not part of conntrackd.conf's grammar: write the value without quotes)"
        }
        return t.quoted
    }

    /// A decimal number in `range`. `expects` describes the value for messages.
    mutating func number(
        _ option: ConfigToken, in path: String, range: ClosedRange<Int> = 0...ConfigParser.maximumNumber,
        expects: String = "a number"
    ) throws(ConfigError) -> Int {
        let t = next()
        let rangeText =
            range == 0...ConfigParser.maximumNumber ? "a number up to \(ConfigParser.maximumNumber)" : expects
        switch t.kind {
        case .number, .signedNumber:
            try checkSeparated(t, option: option, path: path, expects: expects)
            guard let value = Self.decimal(t.text) else {
                throw error(t, "\(option.text) in \(path) expects \(rangeText), got '\(t.text)'")
            }
            if t.kind == .signedNumber && range.lowerBound >= 0 {
                throw error(t, "\(option.text) in \(path) expects \(expects), got '\(t.text)'")
            }
            guard range.contains(value) else {
                throw error(t, "\(option.text) in \(path) expects \(rangeText), got '\(t.text)'")
            }
            return value
        default:
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))")
        }
    }

    /// Parses `[-+]?[0-9]+` without overflow; nil when it does not fit in 32 bits.
    static func decimal(_ text: String) -> Int? {
        var negative = false
        var digits = Substring(text)
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        var value = 0
        for c in digits.utf8 {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            value = value * 10 + Int(c - 0x30)
            if value > Int(UInt32.max) { return nil }
        }
        return negative ? -value : value
    }

    mutating func flag(_ option: ConfigToken, in path: String) throws(ConfigError) -> Bool {
        let t = next()
        let expects = "on or off (yes/no)"
        switch t.kind {
        case .on:
            try checkSeparated(t, option: option, path: path, expects: expects)
            return true
        case .off:
            try checkSeparated(t, option: option, path: path, expects: expects)
            return false
        default:
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))")
        }
    }

    /// An absolute path (the lexer's `/[^"\n ]*`), at most `maximumLength` bytes.
    private mutating func pathValue(_ option: ConfigToken, in path: String, maximumLength: Int) throws(ConfigError) -> String {
        let t = next()
        guard t.kind == .path else {
            throw error(t, "\(option.text) in \(path) expects an absolute path, got \(describe(t))")
        }
        try checkPath(t, option: option, in: path, maximumLength: maximumLength)
        return t.text
    }

    private func checkPath(_ t: ConfigToken, option: ConfigToken, in path: String, maximumLength: Int) throws(ConfigError) {
        // The lexer takes braces into a path (`/x}` is one token), so conntrackd sees no
        // closing brace there; say so rather than report a missing brace at the end of file.
        if t.text.contains("}") || t.text.contains("{") {
            throw error(t, "\(option.text) in \(path): the path '\(t.text)' runs into a brace; put a space before it")
        }
        try checkSeparated(t, option: option, path: path, expects: "an absolute path")
        if t.text.utf8.count > maximumLength {
            throw error(t, "\(option.text) in \(path) expects a path of at most \(maximumLength) characters, got \(t.text.utf8.count)")
        }
    }

    /// `on` (the given default), `off` (nil) or a path, for `LogFile`.
    private mutating func logFileValue(_ option: ConfigToken, in path: String, onPath: String) throws(ConfigError) -> String? {
        let t = next()
        let expects = "on, off or an absolute path"
        switch t.kind {
        case .on:
            try checkSeparated(t, option: option, path: path, expects: expects)
            return onPath
        case .off:
            // conntrackd's `LogFile off` leaves an earlier `LogFile /path` in place; here the
            // last one wins, like every other option.
            try checkSeparated(t, option: option, path: path, expects: expects)
            return nil
        case .path:
            try checkPath(t, option: option, in: path, maximumLength: Self.maximumFileNameLength)
            return t.text
        default:
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))")
        }
    }

    static let syslogFacilities = ["daemon", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"]

    /// `on` (daemon), `off` (nil) or a facility name (case-sensitive, as conntrackd's strcmp).
    private mutating func syslogValue(_ option: ConfigToken, in path: String) throws(ConfigError) -> String? {
        let t = next()
        let expects = "on, off or a facility (daemon, local0 ... local7)"
        switch t.kind {
        case .on:
            try checkSeparated(t, option: option, path: path, expects: expects)
            return ConfigDefaults.syslogFacility
        case .off:
            try checkSeparated(t, option: option, path: path, expects: expects)
            return nil
        case .word:
            try checkSeparated(t, option: option, path: path, expects: expects)
            // conntrackd warns "not a known syslog facility, ignoring" and logs without
            // syslog; ctsync refuses, since the operator asked for syslog.
            guard Self.syslogFacilities.contains(t.text) else {
                throw error(t, "\(option.text) in \(path) expects \(expects), got '\(t.text)'")
            }
            return t.text
        default:
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))")
        }
    }

    /// A word token (`[a-zA-Z][a-zA-Z0-9._-]*` that is no keyword).
    private mutating func word(_ option: ConfigToken, in path: String, expects: String) throws(ConfigError) -> ConfigToken {
        let t = next()
        guard t.kind == .word else {
            var note = ""
            if t.kind == .address, t.text.allSatisfy({ $0.isHexDigit }) {
                note = " (conntrackd's lexer reads '\(t.text)' as an IPv6 address, so it cannot be used here)"
            } else if t.isReservedWord {
                note = " ('\(t.text)' is a keyword of the grammar, so it cannot be used here)"
            }
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))\(note)")
        }
        try checkSeparated(t, option: option, path: path, expects: expects)
        return t
    }

    /// An address token of `family`, with an optional `/prefix` when `allowPrefix`.
    mutating func address(
        _ option: ConfigToken, in path: String, family: AddressFamily, allowPrefix: Bool
    ) throws(ConfigError) -> (token: ConfigToken, network: IPNetwork) {
        let t = next()
        let familyName = family == .ipv4 ? "IPv4" : "IPv6"
        let expects = allowPrefix ? "an \(familyName) address or network" : "an \(familyName) address"
        guard t.kind == .address || t.kind == .number else {
            throw error(t, "\(option.text) in \(path) expects \(expects), got \(describe(t))")
        }
        try checkSeparated(t, option: option, path: path, expects: expects)
        guard t.kind == .address else { throw error(t, "\(option.text) in \(path) expects \(expects), got '\(t.text)'") }
        var text = Substring(t.text)
        var prefix: Int?
        if let slash = text.firstIndex(of: "/") {
            guard allowPrefix else {
                throw error(t, "\(option.text) in \(path) expects \(expects) without a /prefix, got '\(t.text)'")
            }
            let full = family == .ipv4 ? 32 : 128
            // conntrackd warns "not a valid network, ignoring" and drops the entry; ctsync
            // refuses, since a dropped Ignore entry would replicate what was meant to stay local.
            guard let p = Self.decimal(String(text[text.index(after: slash)...])), p <= full else {
                throw error(t, "\(option.text) in \(path) expects a prefix length from 0 to \(full), got '\(t.text)'")
            }
            prefix = p
            text = text[..<slash]
        }
        guard let parsed = IPAddress(String(text)), parsed.family == family else {
            var note = ""
            if family == .ipv4 && Self.hasLeadingZero(String(text)) {
                // inet_aton, which conntrackd uses, reads such parts as octal (010 is 8).
                note = " (a part with a leading zero is octal to conntrackd: write it without the zero)"
            }
            // conntrackd warns "is not a valid address" and carries on without it; ctsync refuses.
            throw error(t, "\(option.text) in \(path) expects \(expects), got '\(t.text)'\(note)")
        }
        return (t, IPNetwork(address: parsed, prefixLength: prefix))
    }

    private static func hasLeadingZero(_ text: String) -> Bool {
        text.split(separator: ".").contains { $0.count > 1 && $0.first == "0" }
    }

    // MARK: - General

    private mutating func parseGeneral(_ open: ConfigToken) throws(ConfigError) {
        let path = "General"
        try openBrace("General")
        while let option = try nextOption(in: .general, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .hashSize:
                record(t, block: path, name: k.canonicalName)
                let v = try number(t, in: path)
                general.hashSize = v == 0 ? ConfigDefaults.hashSize : v
            case .hashLimit:
                record(t, block: path, name: k.canonicalName)
                let v = try number(t, in: path)
                general.hashLimit = v == 0 ? ConfigDefaults.hashLimit : v
            case .logFile:
                record(t, block: path, name: k.canonicalName)
                general.logFile = try logFileValue(t, in: path, onPath: ConfigDefaults.logFile)
            case .syslog:
                record(t, block: path, name: k.canonicalName)
                general.syslogFacility = try syslogValue(t, in: path)
                generalSyslogToken = t
            case .lockFile:
                record(t, block: path, name: k.canonicalName)
                general.lockFile = try pathValue(t, in: path, maximumLength: Self.maximumFileNameLength)
            case .unix:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                try parseUnix(t)
            case .netlinkBufferSize, .socketBufferSize:
                record(t, block: path, name: k.canonicalName)
                general.netlinkBufferSize = try number(t, in: path)
                netlinkBufferSizeToken = t
            case .netlinkBufferSizeMaxGrowth, .socketBufferSizeMaxGrown, .socketBufferSizeMaxGrowth:
                record(t, block: path, name: k.canonicalName)
                general.netlinkBufferSizeMaxGrowth = try number(t, in: path)
            case .eventIterationLimit:
                record(t, block: path, name: k.canonicalName)
                let v = try number(t, in: path)
                general.eventIterationLimit = v == 0 ? ConfigDefaults.eventIterationLimit : v
            case .pollSecs:
                record(t, block: path, name: k.canonicalName)
                general.pollSeconds = try number(
                    t, in: path, range: 1...Self.maximumNumber,
                    expects: "a number of seconds greater than 0 (leave PollSecs out for event-driven mode)")
            case .filter:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                try parseFilter(t)
            case .netlinkOverrunResync:
                record(t, block: path, name: k.canonicalName)
                general.netlinkOverrunResync = try overrunResyncValue(t, in: path)
            case .netlinkEventsReliable:
                record(t, block: path, name: k.canonicalName)
                general.netlinkEventsReliable = try flag(t, in: path)
            case .nice:
                // conntrackd's grammar takes only a signed number here (`Nice -5`; `Nice 5` is a
                // syntax error) and then ignores the value; ctsync takes both forms and applies it.
                record(t, block: path, name: k.canonicalName)
                general.nice = try number(t, in: path, range: -20...19, expects: "a nice value from -20 to 19")
            case .scheduler:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                try parseScheduler(t)
            case .systemd:
                record(t, block: path, name: k.canonicalName)
                general.systemd = try flag(t, in: path)
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
    }

    private mutating func overrunResyncValue(_ option: ConfigToken, in path: String) throws(ConfigError) -> Int? {
        let t = peek()
        switch t.kind {
        case .on:
            _ = try flag(option, in: path)
            return ConfigDefaults.netlinkOverrunResync
        case .off:
            _ = try flag(option, in: path)
            return nil
        case .number:
            let v = try number(option, in: path)
            return v == 0 ? ConfigDefaults.netlinkOverrunResync : v
        default:
            _ = next()
            throw error(t, "\(option.text) in \(path) expects on, off or a number of seconds, got \(describe(t))")
        }
    }

    private mutating func parseUnix(_ open: ConfigToken) throws(ConfigError) {
        let path = "General.UNIX"
        try openBrace("UNIX in General")
        while let option = try nextOption(in: .unix, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .path:
                record(t, block: path, name: k.canonicalName)
                general.unixPath = try pathValue(t, in: path, maximumLength: Self.maximumSocketPathLength)
            case .backlog:
                // conntrackd logs "deprecated unix backlog configuration, ignoring" and listens
                // with a backlog of 100; ctsync applies the value.
                record(t, block: path, name: k.canonicalName)
                let v = try number(t, in: path)
                general.unixBacklog = v == 0 ? ConfigDefaults.unixBacklog : v
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
    }

    private mutating func parseScheduler(_ open: ConfigToken) throws(ConfigError) {
        let path = "General.Scheduler"
        try openBrace("Scheduler in General")
        var state = scheduler ?? (nil, nil)
        while let option = try nextOption(in: .scheduler, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .type:
                record(t, block: path, name: k.canonicalName)
                let w = try word(t, in: path, expects: "RR or FIFO")
                switch w.text.lowercased() {
                case "rr": state.policy = .roundRobin
                case "fifo": state.policy = .fifo
                default: throw error(w, "Type in \(path) expects RR or FIFO, got '\(w.text)'")
                }
            case .priority:
                // conntrackd accepts 0...99 here, but 0 is no real-time priority:
                // sched_setscheduler then fails and conntrackd runs unscheduled. ctsync refuses 0.
                record(t, block: path, name: k.canonicalName)
                state.priority = try number(t, in: path, range: 1...99, expects: "a priority from 1 to 99")
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        scheduler = state
    }

    // MARK: - Filter

    private mutating func parseFilter(_ open: ConfigToken) throws(ConfigError) {
        let t = next()
        if t.isOpenBrace {
            filter.fromKernelspace = false
        } else if t.kind == .keyword(.from) {
            let side = next()
            switch side.kind {
            case .keyword(.userspace): filter.fromKernelspace = false
            case .keyword(.kernelspace): filter.fromKernelspace = true
            default:
                throw error(side, "Filter From in General expects Userspace or Kernelspace, got \(describe(side))")
            }
            try openBrace("Filter From \(side.text) in General")
        } else {
            throw error(t, "expected '{' or 'From Userspace|Kernelspace' after Filter in General, got \(describe(t))")
        }
        let path = "General.Filter"
        while let option = try nextOption(in: .filter, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            let policyToken = next()
            let policy: FilterPolicy
            switch policyToken.kind {
            case .keyword(.accept): policy = .accept
            case .keyword(.ignore): policy = .ignore
            default:
                throw error(policyToken, "\(t.text) in \(path) expects Accept or Ignore, got \(describe(policyToken))")
            }
            let blockPath = "\(path).\(t.text) \(policy.rawValue)"
            record(t, block: path, name: "\(t.text) \(policy.rawValue)", repeatable: true)
            try openBrace("\(t.text) \(policy.rawValue) in \(path)")
            switch k {
            case .protocolKeyword:
                try setFilterPolicy(policy, of: .protocols, at: policyToken)
                try parseProtocolList(open: t, path: blockPath)
            case .address:
                try setFilterPolicy(policy, of: .addresses, at: policyToken)
                try parseAddressList(open: t, path: blockPath)
            case .state:
                try setFilterPolicy(policy, of: .states, at: policyToken)
                try parseStateList(open: t, path: blockPath)
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
    }

    private mutating func setFilterPolicy(_ policy: FilterPolicy, of kind: FilterBuilder.Kind, at token: ConfigToken) throws(ConfigError) {
        if let (existing, place) = filter.setPolicy(policy, of: kind, at: token) {
            throw error(
                token,
                "\(kind.rawValue) \(policy.rawValue) in General.Filter conflicts with \(kind.rawValue) \(existing.rawValue) at "
                    + "\(place.line):\(place.column): one policy per list")
        }
    }

    private mutating func parseProtocolList(open: ConfigToken, path: String) throws(ConfigError) {
        while true {
            let t = next()
            if t.isCloseBrace { return }
            let proto: L4Protocol
            switch t.kind {
            case .keyword(.tcp): proto = .tcp
            case .keyword(.udp): proto = .udp
            case .word:
                try checkSeparated(t, option: open, path: path, expects: "protocol names")
                // conntrackd warns that getprotobyname() cannot find it and leaves it out,
                // which silently changes what the list accepts; ctsync refuses.
                guard let found = ProtocolNames.lookup(t.text) else {
                    let hint = ProtocolNames.caseInsensitiveMatch(t.text).map { "; did you mean '\($0)'? (names are case-sensitive)" }
                    throw error(
                        t,
                        "unknown protocol '\(t.text)' in \(path)"
                            + (hint ?? " (names as in /etc/protocols: TCP, UDP, ICMP, IPv6-ICMP, SCTP, DCCP, GRE, ...)"))
                }
                proto = found
            case .end:
                throw error(
                    t, "unexpected end of file in \(path): missing '}' to close the list opened at \(open.line):\(open.column)")
            default:
                throw error(t, "\(path) expects protocol names, got \(describe(t))")
            }
            filter.addProtocol(proto)
        }
    }

    private mutating func parseAddressList(open: ConfigToken, path: String) throws(ConfigError) {
        while let option = try nextOption(in: .addressList, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName, repeatable: true)
            let family: AddressFamily = k == .ipv4Address ? .ipv4 : .ipv6
            let (valueToken, network) = try address(t, in: path, family: family, allowPrefix: true)
            if !filter.addNetwork(network) {
                warn(valueToken, "\(t.text) \(network) is listed twice in \(path)")
            }
        }
    }

    private static let stateKeywords: [ConfigKeyword: TCPState] = [
        .synSent: .synSent, .synRecv: .synRecv, .established: .established, .finWait: .finWait, .closeWait: .closeWait,
        .lastAck: .lastAck, .timeWait: .timeWait, .close: .close, .closed: .close, .listen: TCPState(rawValue: 9),
    ]

    private mutating func parseStateList(open: ConfigToken, path: String) throws(ConfigError) {
        var pending: [TCPState] = []
        var pendingToken: ConfigToken?
        let expected = "SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, CLOSED or LISTEN"
        while true {
            let t = next()
            if t.isCloseBrace {
                if let pendingToken {
                    throw error(pendingToken, "TCP states in \(path) must be followed by 'for TCP'")
                }
                return
            }
            switch t.kind {
            case .keyword(.forKeyword):
                let proto = next()
                guard proto.kind == .keyword(.tcp) else {
                    throw error(proto, "'for' in \(path) must be followed by TCP (conntrackd filters TCP states only), got \(describe(proto))")
                }
                for state in pending { filter.addState(state) }
                pending = []
                pendingToken = nil
            case .keyword(let k) where Self.stateKeywords[k] != nil:
                pending.append(Self.stateKeywords[k]!)
                if pendingToken == nil { pendingToken = t }
            case .end:
                throw error(
                    t, "unexpected end of file in \(path): missing '}' to close the list opened at \(open.line):\(open.column)")
            case .word, .keyword:
                throw error(t, "unknown TCP state '\(t.text)' in \(path) (expected \(expected), followed by 'for TCP')")
            default:
                throw error(t, "\(path) expects TCP states followed by 'for TCP', got \(describe(t))")
            }
        }
    }

    // MARK: - Sync

    private mutating func parseSync(_ open: ConfigToken) throws(ConfigError) {
        if let statsToken {
            throw error(
                open,
                "Sync cannot be used with Stats (at \(statsToken.line):\(statsToken.column)): "
                    + "conntrackd runs either as a synchronizer or as a statistics collector")
        }
        record(open, block: nil, name: "Sync", repeatable: true)
        if sync == nil { sync = SyncBuilder(openToken: open) }
        let path = "Sync"
        try openBrace("Sync")
        while let option = try nextOption(in: .sync, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .refreshTime, .cacheTimeout, .commitTimeout, .purgeTimeout:
                try parseTiming(t, k, block: path)
            case .udp: try parseChannel(t, kind: .udp)
            case .tcp: try parseChannel(t, kind: .tcp)
            case .multicast: try parseChannel(t, kind: .multicast)
            case .mode: try parseMode(t)
            case .options:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                try parseSyncOptions(t)
            case .auth:
                record(t, block: path, name: k.canonicalName)
                try parseAuth(t)
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
    }

    /// RefreshTime, CacheTimeout, CommitTimeout and PurgeTimeout: written in Sync or in a
    /// Mode block, they set one global value in conntrackd, and so they do here.
    private mutating func parseTiming(_ t: ConfigToken, _ k: ConfigKeyword, block: String) throws(ConfigError) {
        record(t, block: block, name: k.canonicalName, scope: "Sync timing \(k.rawValue)")
        let v = try number(t, in: block)
        switch k {
        case .refreshTime: sync?.refreshTime = (v == 0 ? ConfigDefaults.refreshTime : v, t)
        case .cacheTimeout: sync?.cacheTimeout = (v == 0 ? ConfigDefaults.cacheTimeout : v, t)
        case .commitTimeout: sync?.commitTimeout = (v == 0 ? nil : v, t)
        default: sync?.purgeTimeout = v == 0 ? ConfigDefaults.purgeTimeout : v
        }
    }

    private mutating func parseMode(_ t: ConfigToken) throws(ConfigError) {
        let nameToken = next()
        guard case .mode(let name, let legacy) = nameToken.kind else {
            if nameToken.kind == .word && nameToken.text.lowercased() == "persistent" {
                throw error(
                    nameToken,
                    "Mode in Sync: '\(nameToken.text)' is the old name of ALARM, and conntrackd 1.4.7 only knows it "
                        + "with a capital final T (PERSISTENT); write ALARM")
            }
            throw error(nameToken, "Mode in Sync expects FTFW, NOTRACK or ALARM, got \(describe(nameToken))")
        }
        if let existing = sync?.mode {
            throw error(
                t,
                "second Mode block in Sync (Mode \(existing.name.rawValue) at \(existing.token.line):\(existing.token.column)): "
                    + "choose one of FTFW, NOTRACK or ALARM")
        }
        if legacy {
            warn(nameToken, "'\(nameToken.text)' is the old name of \(name.rawValue) mode; write \(name.rawValue)")
        }
        let path = "Sync.Mode \(name.rawValue)"
        record(t, block: "Sync", name: "Mode \(name.rawValue)")
        sync?.mode = (name, t)
        try openBrace("Mode \(nameToken.text) in Sync")
        let block: ConfigBlock = name == .ftfw ? .ftfw : name == .notrack ? .notrack : .alarm
        while let option = try nextOption(in: block, path: path, opened: t) {
            let (o, k) = (option.token, option.keyword)
            switch k {
            case .refreshTime, .cacheTimeout, .commitTimeout, .purgeTimeout:
                try parseTiming(o, k, block: path)
            case .resendQueueSize:
                record(o, block: path, name: k.canonicalName)
                let v = try number(o, in: path)
                sync?.resendQueueSize = v == 0 ? ConfigDefaults.resendQueueSize : v
            case .ackWindowSize:
                record(o, block: path, name: k.canonicalName)
                let v = try number(o, in: path)
                sync?.ackWindowSize = v == 0 ? ConfigDefaults.ackWindowSize : v
            case .disableExternalCache:
                record(o, block: path, name: k.canonicalName)
                let value = try flag(o, in: path)
                sync?.disableExternalCache = value
            case .disableInternalCache:
                record(o, block: path, name: k.canonicalName)
                let value = try flag(o, in: path)
                sync?.disableInternalCache = value
            case .startupResync:
                record(o, block: path, name: k.canonicalName)
                let value = try flag(o, in: path)
                sync?.startupResync = value
            default:
                throw error(o, "unknown option '\(o.text)' in \(path)")
            }
        }
    }

    private mutating func parseChannel(_ t: ConfigToken, kind: ChannelKind) throws(ConfigError) {
        guard var builder = sync else { return }
        if let first = builder.channels.first, first.kind != kind {
            throw error(
                t,
                "\(kind.rawValue) block in Sync cannot be combined with \(first.kind.rawValue) blocks (first at "
                    + "\(first.token.line):\(first.token.column)): conntrackd uses one transport for all dedicated links")
        }
        // conntrackd checks the limit only when an option is parsed, so a fifth empty block
        // slips through and overruns its channel array; ctsync counts blocks.
        if builder.channels.count >= ConfigDefaults.maximumChannels {
            throw error(t, "too many dedicated links in Sync: at most \(ConfigDefaults.maximumChannels) UDP, Multicast or TCP blocks")
        }
        var channel = ChannelBuilder(kind: kind, token: t)
        if peek().kind == .keyword(.defaultKeyword) {
            let d = next()
            // conntrackd lets the last `Default` win; two are a mistake ctsync reports.
            if let other = builder.channels.first(where: { $0.isDefault }) {
                throw error(
                    d, "second channel marked Default in Sync (the first at \(other.token.line):\(other.token.column))")
            }
            channel.isDefault = true
        }
        let index = builder.channels.count
        let path = "Sync.\(kind.rawValue)"
        record(t, block: "Sync", name: kind.rawValue, repeatable: true)
        try openBrace("\(kind.rawValue)\(channel.isDefault ? " Default" : "") in Sync")
        let block: ConfigBlock = kind == .udp ? .udp : kind == .tcp ? .tcp : .multicast
        while let option = try nextOption(in: block, path: path, opened: t) {
            let (o, k) = (option.token, option.keyword)
            record(o, block: path, name: k.canonicalName, scope: "\(path)#\(index).\(k.canonicalName)")
            switch k {
            case .ipv4Address, .ipv6Address:
                let family: AddressFamily = k == .ipv4Address ? .ipv4 : .ipv6
                let (v, network) = try address(o, in: path, family: family, allowPrefix: false)
                if let previous = channel.address, previous.option.text != o.text {
                    throw error(
                        o,
                        "\(o.text) in \(path) conflicts with \(previous.option.text) at \(previous.option.line):"
                            + "\(previous.option.column): a channel has one address family")
                }
                if kind == .multicast {
                    // conntrackd would try to join a unicast address and fail at start-up.
                    guard network.address.isMulticast else {
                        let range = family == .ipv4 ? "224.0.0.0/4" : "ff00::/8"
                        throw error(v, "\(o.text) in \(path) expects a multicast group address (\(range)), got '\(v.text)'")
                    }
                }
                channel.address = (network.address, o)
            case .ipv4DestinationAddress, .ipv6DestinationAddress:
                let family: AddressFamily = k == .ipv4DestinationAddress ? .ipv4 : .ipv6
                let (_, network) = try address(o, in: path, family: family, allowPrefix: false)
                channel.destination = (network.address, o)
            case .ipv4Interface:
                let (_, network) = try address(o, in: path, family: .ipv4, allowPrefix: false)
                channel.interfaceAddress = (network.address, o)
            case .ipv6Interface:
                // conntrackd's grammar wants an address token here and then ignores it, so
                // its value is not checked further.
                let v = next()
                guard v.kind == .address else {
                    throw error(v, "IPv6_interface in \(path) expects an IPv6 address, got \(describe(v))")
                }
                try checkSeparated(v, option: o, path: path, expects: "an IPv6 address")
                warn(o, "IPv6_interface in \(path) is ignored, as conntrackd ignores it: Interface selects the link")
            case .interface:
                let w = try word(o, in: path, expects: "an interface name")
                guard w.text.utf8.count <= Self.maximumInterfaceNameLength else {
                    throw error(
                        w, "Interface in \(path) expects a name of at most \(Self.maximumInterfaceNameLength) characters, got '\(w.text)'")
                }
                channel.interface = w.text
            case .port, .group:
                // conntrackd stores any int into a 16-bit port; 0 would bind a random port.
                channel.port = try number(o, in: path, range: 1...65535, expects: "a port number from 1 to 65535")
            case .sndSocketBuffer:
                let v = try number(o, in: path)
                channel.sendBufferSize = v == 0 ? nil : v
            case .rcvSocketBuffer:
                let v = try number(o, in: path)
                channel.receiveBufferSize = v == 0 ? nil : v
            case .checksum:
                channel.checksum = try flag(o, in: path)
            case .errorQueueLength:
                let v = try number(o, in: path)
                channel.errorQueueLength = v
                builder.errorQueueLength = v == 0 ? ConfigDefaults.errorQueueLength : v
            default:
                throw error(o, "unknown option '\(o.text)' in \(path)")
            }
        }
        builder.channels.append(try channel.validated(parser: self))
        sync = builder
    }

    private mutating func parseSyncOptions(_ open: ConfigToken) throws(ConfigError) {
        let path = "Sync.Options"
        try openBrace("Options in Sync")
        while let option = try nextOption(in: .options, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName)
            switch k {
            case .tcpWindowTracking:
                let value = try flag(t, in: path)
                sync?.tcpWindowTracking = value
            case .expectationSync:
                let value = try expectationSyncValue(t, in: path)
                sync?.expectationSync = value
            case .ignoreReceived:
                let value = try receivedAttributes(t, in: path)
                sync?.ignoredReceived = value
            case .updateDelay:
                let value = try number(t, in: path, range: 0...1000, expects: "milliseconds from 0 (off) to 1000")
                sync?.updateDelay = value
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
    }

    /// `Auth { KeyFile /path; Algorithm HMAC-SHA256|ChaCha20-Poly1305; NodeId n }`.
    private mutating func parseAuth(_ open: ConfigToken) throws(ConfigError) {
        let path = "Sync.Auth"
        try openBrace("Auth in Sync")
        var keyFile: String?
        var algorithm = AuthConfig.Algorithm.hmacSHA256
        var nodeId: UInt32?
        while let option = try nextOption(in: .auth, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName)
            switch k {
            case .keyFile:
                keyFile = try pathValue(t, in: path, maximumLength: Self.maximumFileNameLength)
            case .algorithm:
                let names = AuthConfig.Algorithm.allCases.map(\.rawValue).joined(separator: " or ")
                let value = try word(t, in: path, expects: names)
                guard let hit = AuthConfig.Algorithm.allCases.first(where: { $0.rawValue.lowercased() == value.text.lowercased() }) else {
                    throw error(value, "Algorithm in \(path) expects \(names), got '\(value.text)'")
                }
                algorithm = hit
            case .nodeId:
                let value = try number(t, in: path, range: 1...Int(UInt32.max), expects: "a node id from 1 to \(UInt32.max)")
                nodeId = UInt32(value)
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        guard let keyFile else {
            throw error(open, "Auth in Sync needs a KeyFile: the file of shared keys (docs/security.md tells how to make one)")
        }
        sync?.auth = AuthConfig(keyFile: keyFile, algorithm: algorithm, nodeId: nodeId)
    }

    /// `IgnoreReceived { Labels Helper Mark SequenceAdjustment }`: a braced list of names.
    private mutating func receivedAttributes(_ option: ConfigToken, in path: String) throws(ConfigError) -> ReceivedAttributes {
        let open = next()
        guard open.isOpenBrace else {
            throw error(
                open, "\(option.text) in \(path) expects a { list } of attributes (Labels, Helper, Mark, SequenceAdjustment), got \(describe(open))")
        }
        var result: ReceivedAttributes = []
        while true {
            let item = next()
            if item.isCloseBrace { break }
            if item.kind == .end {
                throw error(
                    item,
                    "unexpected end of file in \(path): missing '}' to close the IgnoreReceived list opened at \(option.line):\(option.column)")
            }
            guard let hit = ReceivedAttributes.names.first(where: { $0.0.lowercased() == item.text.lowercased() }) else {
                throw error(item, "unknown attribute '\(item.text)' in \(path).IgnoreReceived: expected Labels, Helper, Mark or SequenceAdjustment")
            }
            try checkSeparated(item, option: option, path: path, expects: "attribute names")
            result.insert(hit.1)
        }
        return result
    }

    private mutating func expectationSyncValue(_ option: ConfigToken, in path: String) throws(ConfigError) -> ExpectationSync {
        let t = peek()
        switch t.kind {
        case .on, .off:
            return try flag(option, in: path) ? .all : .off
        default:
            guard t.isOpenBrace else {
                _ = next()
                throw error(t, "\(option.text) in \(path) expects on, off or a { list } of helper names, got \(describe(t))")
            }
            _ = next()
            var names: [String] = []
            while true {
                let item = next()
                if item.isCloseBrace { break }
                if item.kind == .end {
                    throw error(
                        item,
                        "unexpected end of file in \(path): missing '}' to close the ExpectationSync list opened at "
                            + "\(option.line):\(option.column)")
                }
                guard item.kind == .word else {
                    throw error(item, "\(option.text) in \(path) expects helper names, got \(describe(item))")
                }
                try checkSeparated(item, option: option, path: path, expects: "helper names")
                // conntrackd drops repeats, comparing without case.
                if !names.contains(where: { $0.lowercased() == item.text.lowercased() }) { names.append(item.text) }
            }
            if names.isEmpty {
                warn(option, "an empty ExpectationSync list in \(path) replicates every expectation, as in conntrackd")
                return .all
            }
            return .helpers(names)
        }
    }

    // MARK: - Stats

    private mutating func parseStats(_ open: ConfigToken) throws(ConfigError) {
        if let sync {
            throw error(
                open,
                "Stats cannot be used with Sync (at \(sync.openToken.line):\(sync.openToken.column)): "
                    + "conntrackd runs either as a synchronizer or as a statistics collector")
        }
        record(open, block: nil, name: "Stats", repeatable: true)
        if statsToken == nil { statsToken = open }
        var config = stats ?? StatsConfig()
        let path = "Stats"
        try openBrace("Stats")
        while let option = try nextOption(in: .stats, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName)
            switch k {
            case .logFile:
                config.logFile = try logFileValue(t, in: path, onPath: ConfigDefaults.statsLogFile)
            case .syslog:
                config.syslogFacility = try syslogValue(t, in: path)
                statsSyslogToken = t
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        stats = config
    }

    // MARK: - Metrics

    /// `Metrics { IPv4_address 127.0.0.1 | IPv6_address ::1; Port 9497 }` (new in ctsync): the
    /// Prometheus endpoint. Either address, not both; both options have defaults.
    private mutating func parseMetrics(_ open: ConfigToken) throws(ConfigError) {
        if let metricsToken {
            throw error(open, "Metrics is written twice (first at \(metricsToken.line):\(metricsToken.column)): give one Metrics block")
        }
        metricsToken = open
        record(open, block: nil, name: "Metrics")
        let path = "Metrics"
        try openBrace("Metrics")
        var config = MetricsConfig()
        var addressToken: ConfigToken?
        while let option = try nextOption(in: .metrics, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName)
            switch k {
            case .ipv4Address, .ipv6Address:
                if let addressToken {
                    throw error(t, "\(t.text) in \(path): the address is already given at \(addressToken.line):\(addressToken.column)")
                }
                addressToken = t
                config.address = try address(t, in: path, family: k == .ipv4Address ? .ipv4 : .ipv6, allowPrefix: false).network.address
            case .port:
                config.port = UInt16(try number(t, in: path, range: 1...65535, expects: "a port number from 1 to 65535"))
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        metrics = config
    }

    // MARK: - Helper

    /// The helpers conntrack-tools 1.4.7 ships (src/helpers) and the protocols each supports;
    /// conntrackd refuses a Type it cannot load. Each has one policy, named after the helper.
    static let knownHelpers: [String: Set<L4Protocol>] = [
        "amanda": [.udp], "dhcpv6": [.udp], "ftp": [.tcp], "mdns": [.udp], "rpc": [.tcp, .udp], "sane": [.tcp],
        "slp": [.udp], "ssdp": [.tcp, .udp], "tftp": [.udp], "tns": [.tcp],
    ]

    private mutating func parseHelper(_ open: ConfigToken) throws(ConfigError) {
        var config = helper ?? HelperConfig()
        let path = "Helper"
        try openBrace("Helper")
        while let option = try nextOption(in: .helper, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .setup:
                record(t, block: path, name: k.canonicalName)
                config.setup = try flag(t, in: path)
            case .type:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                config.types.append(try parseHelperType(t))
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        helper = config
    }

    private mutating func parseHelperType(_ open: ConfigToken) throws(ConfigError) -> HelperType {
        let path = "Helper.Type"
        let nameToken = try word(open, in: "Helper", expects: "a helper name, a family and a protocol (Type ftp inet tcp)")
        let familyToken = try word(open, in: "Helper", expects: "the family inet or inet6 after '\(nameToken.text)'")
        let family: AddressFamily
        switch familyToken.text {
        case "inet": family = .ipv4
        case "inet6": family = .ipv6
        default: throw error(familyToken, "Type \(nameToken.text) in Helper expects the family inet or inet6, got '\(familyToken.text)'")
        }
        let protoToken = try word(open, in: "Helper", expects: "the protocol tcp or udp after '\(familyToken.text)'")
        let proto: L4Protocol
        switch protoToken.text {
        case "tcp": proto = .tcp
        case "udp": proto = .udp
        default: throw error(protoToken, "Type \(nameToken.text) in Helper expects the protocol tcp or udp, got '\(protoToken.text)'")
        }
        guard let supported = Self.knownHelpers[nameToken.text] else {
            throw error(
                nameToken,
                "unknown helper '\(nameToken.text)' in Helper (conntrack-tools 1.4.7 ships "
                    + "\(list(Self.knownHelpers.keys.sorted())))")
        }
        guard supported.contains(proto) else {
            let names = supported.map(\.name).sorted().joined(separator: " and ")
            throw error(protoToken, "helper '\(nameToken.text)' in Helper supports \(names), not \(protoToken.text)")
        }
        var type = HelperType(name: nameToken.text, family: family, proto: proto)
        try openBrace("Type \(nameToken.text) \(familyToken.text) \(protoToken.text) in Helper")
        while let option = try nextOption(in: .helperType, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            switch k {
            case .queueNum:
                record(t, block: path, name: k.canonicalName, scope: "\(path)#\(open.start).QueueNum")
                type.queueNumber = try number(t, in: path, range: 0...65535, expects: "a queue number from 0 to 65535")
            case .queueLen:
                record(t, block: path, name: k.canonicalName, scope: "\(path)#\(open.start).QueueLen")
                let v = try number(t, in: path)
                type.queueLength = v == 0 ? nil : v
            case .policy:
                record(t, block: path, name: k.canonicalName, repeatable: true)
                type.policies.append(try parseHelperPolicy(t, helper: nameToken.text))
            default:
                throw error(t, "unknown option '\(t.text)' in \(path)")
            }
        }
        return type
    }

    private mutating func parseHelperPolicy(_ open: ConfigToken, helper: String) throws(ConfigError) -> HelperPolicy {
        let path = "Helper.Type.Policy"
        let nameToken = try word(open, in: "Helper.Type", expects: "a policy name")
        // conntrackd matches the name against the helper's built-in policies and exits on an
        // unknown one; every shipped helper has a single policy named after itself.
        guard nameToken.text == helper else {
            throw error(nameToken, "unknown policy '\(nameToken.text)' for helper \(helper) in Helper.Type (its policy is '\(helper)')")
        }
        var policy = HelperPolicy(name: nameToken.text)
        try openBrace("Policy \(nameToken.text) in Helper.Type")
        while let option = try nextOption(in: .helperPolicy, path: path, opened: open) {
            let (t, k) = (option.token, option.keyword)
            record(t, block: path, name: k.canonicalName, scope: "\(path)#\(open.start).\(k.rawValue)")
            let v = try number(t, in: path)
            if k == .expectMax { policy.expectMax = v } else { policy.expectTimeout = v }
        }
        if policy.expectMax == nil && policy.expectTimeout == nil {
            throw error(open, "Policy \(nameToken.text) in Helper.Type is empty: set ExpectMax and ExpectTimeout")
        }
        return policy
    }
}

// MARK: - Builders

/// The filter lists as they accumulate over one or more Filter blocks.
struct FilterBuilder {
    enum Kind: String {
        case protocols = "Protocol"
        case addresses = "Address"
        case states = "State"
    }

    var fromKernelspace = false
    private var policies: [String: (FilterPolicy, ConfigToken)] = [:]
    private var protocols: [L4Protocol] = []
    private var networks: [IPNetwork] = []
    private var states: [TCPState] = []

    /// conntrackd keeps one list per kind and one policy, set by the last block, so
    /// `Protocol Accept {...}` followed by `Protocol Ignore {...}` ignores both lists. ctsync
    /// refuses the mix; repeated blocks of the same policy add to the list, as in conntrackd.
    /// Returns the earlier conflicting policy and where it was set, if any.
    mutating func setPolicy(_ policy: FilterPolicy, of kind: Kind, at token: ConfigToken) -> (FilterPolicy, ConfigToken)? {
        if let existing = policies[kind.rawValue] {
            return existing.0 == policy ? nil : existing
        }
        policies[kind.rawValue] = (policy, token)
        return nil
    }

    mutating func addProtocol(_ proto: L4Protocol) {
        if !protocols.contains(proto) { protocols.append(proto) }
    }

    /// False when the network was already listed.
    mutating func addNetwork(_ network: IPNetwork) -> Bool {
        if networks.contains(network) { return false }
        networks.append(network)
        return true
    }

    mutating func addState(_ state: TCPState) {
        if !states.contains(state) { states.append(state) }
    }

    func build() -> FlowAcceptance {
        FlowAcceptance(
            fromKernelspace: fromKernelspace,
            protocols: policies[Kind.protocols.rawValue].map { ProtocolFilter(policy: $0.0, protocols: protocols) },
            addresses: policies[Kind.addresses.rawValue].map { AddressFilter(policy: $0.0, networks: networks) },
            tcpStates: policies[Kind.states.rawValue].map { TCPStateFilter(policy: $0.0, states: states) })
    }
}

/// The Sync section as it accumulates (it may be split over several Sync blocks, and its
/// timing options may come before the Mode block).
struct SyncBuilder {
    var openToken: ConfigToken
    var mode: (name: SyncModeName, token: ConfigToken)?
    var channels: [ChannelConfigEntry] = []
    var refreshTime: (Int, ConfigToken)?
    var cacheTimeout: (Int, ConfigToken)?
    var commitTimeout: (Int?, ConfigToken)?
    var purgeTimeout = ConfigDefaults.purgeTimeout
    var resendQueueSize = ConfigDefaults.resendQueueSize
    var ackWindowSize = ConfigDefaults.ackWindowSize
    var disableExternalCache = false
    var disableInternalCache = false
    var startupResync = false
    var tcpWindowTracking = false
    var expectationSync = ExpectationSync.off
    var ignoredReceived: ReceivedAttributes = []
    var auth: AuthConfig?
    var updateDelay = ConfigDefaults.updateDelayMilliseconds
    var errorQueueLength = ConfigDefaults.errorQueueLength

    init(openToken: ConfigToken) { self.openToken = openToken }

    func build(parser: inout ConfigParser) throws(ConfigError) -> SyncConfig {
        // conntrackd warns "No synchronization mode specified. Defaulting to FT-FW mode.";
        // ctsync asks for the choice to be written down.
        guard let mode else {
            throw parser.error(openToken, "Sync has no Mode block: add Mode FTFW { }, Mode NOTRACK { } or Mode ALARM { }")
        }
        // conntrackd starts and then fails to open a channel; say it here.
        guard !channels.isEmpty else {
            throw parser.error(openToken, "Sync has no dedicated link: add a UDP, Multicast or TCP block")
        }
        let syncMode: ModeConfig
        switch mode.name {
        case .ftfw:
            syncMode = .ftfw(
                FTFWOptions(
                    resendQueueSize: resendQueueSize, ackWindowSize: ackWindowSize, disableExternalCache: disableExternalCache,
                    startupResync: startupResync))
        case .notrack:
            syncMode = .notrack(
                NotrackOptions(
                    disableInternalCache: disableInternalCache, disableExternalCache: disableExternalCache,
                    startupResync: startupResync))
        case .alarm:
            syncMode = .alarm(
                AlarmOptions(
                    refreshTime: refreshTime?.0 ?? ConfigDefaults.refreshTime,
                    cacheTimeout: cacheTimeout?.0 ?? ConfigDefaults.cacheTimeout))
        }
        if mode.name != .alarm {
            for (value, token) in [refreshTime, cacheTimeout].compactMap({ $0 }) {
                _ = value
                parser.warn(token, "\(token.text) only applies to Mode ALARM; Mode \(mode.name.rawValue) ignores it")
            }
        }
        var commit = commitTimeout?.0
        if let given = commitTimeout, given.0 != nil, !syncMode.usesExternalCache {
            parser.warn(
                given.1, "CommitTimeout is ignored with DisableExternalCache on (nothing is committed), as conntrackd ignores it")
            commit = nil
        }
        var config = SyncConfig(
            mode: syncMode, commitTimeout: commit, purgeTimeout: purgeTimeout, channels: channels.map(\.config),
            tcpWindowTracking: tcpWindowTracking, expectationSync: expectationSync, errorQueueLength: errorQueueLength)
        config.ignoredReceived = ignoredReceived
        config.auth = auth
        config.updateDelayMilliseconds = updateDelay
        return config
    }
}

/// A validated channel and where it was written.
struct ChannelConfigEntry {
    var config: ChannelConfig
    var token: ConfigToken
    var kind: ChannelKind { config.kind }
    var isDefault: Bool { config.isDefault }
}

/// One UDP/Multicast/TCP block as it is read.
struct ChannelBuilder {
    var kind: ChannelKind
    var token: ConfigToken
    var isDefault = false
    var address: (IPAddress, option: ConfigToken)?
    var destination: (IPAddress, option: ConfigToken)?
    var interfaceAddress: (IPAddress, option: ConfigToken)?
    var interface: String?
    var port: Int?
    var sendBufferSize: Int?
    var receiveBufferSize: Int?
    var checksum = true
    var errorQueueLength: Int?

    init(kind: ChannelKind, token: ConfigToken) {
        self.kind = kind
        self.token = token
    }

    /// conntrackd starts with missing parts and fails later (no interface: the channel does not
    /// open; no port or address: it binds or sends to 0). ctsync requires them up front.
    func validated(parser: ConfigParser) throws(ConfigError) -> ChannelConfigEntry {
        var missing: [String] = []
        let block = "\(kind.rawValue) block in Sync"
        switch kind {
        case .udp, .tcp:
            if address == nil { missing.append("IPv4_address or IPv6_address") }
            if destination == nil { missing.append("IPv4_Destination_Address or IPv6_Destination_Address") }
            if port == nil { missing.append("Port") }
        case .multicast:
            if address == nil { missing.append("IPv4_address or IPv6_address (the group)") }
            if port == nil { missing.append("Group") }
        }
        if interface == nil { missing.append("Interface") }
        if !missing.isEmpty {
            throw parser.error(token, "\(block) is missing \(missing.joined(separator: ", "))")
        }
        guard let address, let interface, let port else { throw parser.error(token, "\(block) is incomplete") }
        let (local, localOption) = (address.0, address.option)
        switch kind {
        case .udp, .tcp:
            guard let destination else { throw parser.error(token, "\(block) is incomplete") }
            let (remote, remoteOption) = (destination.0, destination.option)
            if remote.family != local.family {
                throw parser.error(
                    remoteOption,
                    "\(remoteOption.text) in Sync.\(kind.rawValue) does not match the family of \(localOption.text) at "
                        + "\(localOption.line):\(localOption.column): a channel has one address family")
            }
            let channel = UnicastChannel(
                isDefault: isDefault, localAddress: local, destination: remote, port: UInt16(port), interface: interface,
                sendBufferSize: sendBufferSize, receiveBufferSize: receiveBufferSize, checksum: checksum,
                errorQueueLength: kind == .tcp ? errorQueueLength : nil)
            return ChannelConfigEntry(config: kind == .udp ? .udp(channel) : .tcp(channel), token: token)
        case .multicast:
            if let option = interfaceAddress?.option, local.family != .ipv4 {
                // conntrackd: "your multicast interface is IPv4 but is binded to an IPv6
                // interface? Surely, this is not what you want".
                throw parser.error(option, "IPv4_interface in Sync.Multicast cannot be used with an IPv6 group")
            }
            let channel = MulticastChannel(
                isDefault: isDefault, group: local, port: UInt16(port), interfaceAddress: interfaceAddress?.0, interface: interface,
                sendBufferSize: sendBufferSize, receiveBufferSize: receiveBufferSize, checksum: checksum)
            return ChannelConfigEntry(config: .multicast(channel), token: token)
        }
    }
}

extension IPAddress {
    /// 224.0.0.0/4 or ff00::/8.
    var isMulticast: Bool {
        switch family {
        case .ipv4: return ipv4 >> 28 == 0xE
        case .ipv6: return high >> 56 == 0xFF
        }
    }
}
