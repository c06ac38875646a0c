import Conntrack
import ControlProtocol
import Foundation
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

nonisolated(unsafe) private var stopEvents: sig_atomic_t = 0

/// Runs a conntrack command line (`ctsync -L ...`, `ctsync -R FILE`): conntrack's commands,
/// output, summaries and exit statuses (0 done; 1 failed, or -D/-U/-G matched nothing; 2 a
/// usage error). Summaries go to stderr as `ctsync: N flow entries have been shown.`.
enum ConntrackCommandLine {
    struct Failure: Error {
        var message: String
        var code: Int32
    }

    static func main(_ arguments: [String]) -> Never {
        var words = arguments
        if words.first == "conntrack" { words.removeFirst() }
        do {
            if let first = words.first, first == "-R" || first == "--load-file" {
                guard words.count >= 2 else { throw ConntrackArguments.Problem("option `\(first)' requires an argument") }
                try loadFile(words[1])
                exit(0)
            }
            let line = try parsed(words)
            let shown = try run(line, batch: false)
            exit(shown)
        } catch let problem as ConntrackArguments.Problem {
            writeStandardError("ctsync: \(problem.message) (see 'ctsync conntrack -h')\n")
            exit(2)
        } catch let failure as Failure {
            writeStandardError("ctsync: \(failure.message)\n")
            exit(failure.code)
        } catch {
            writeStandardError("ctsync: \(error)\n")
            exit(1)
        }
    }

    static func parsed(_ words: [String]) throws -> ConntrackArguments {
        let line = try ConntrackArguments.parse(words)
        try line.check()
        return line
    }

    /// `-R FILE` (`-` for stdin): one command a line (-I, -A, -U, -D, -F), comments and blank
    /// lines skipped; every line is parsed and checked before any runs, then they run in order
    /// and the first that fails stops the rest. No summaries; a line that matches nothing is
    /// not a failure.
    static func loadFile(_ path: String) throws {
        let text: String
        if path == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ConntrackArguments.Problem("Failed to open file \(path) for reading")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        var lines: [ConntrackArguments] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = raw.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let words = try tokenize(String(trimmed), line: number + 1, path: path)
            do {
                let line = try parsed(words)
                guard let command = line.command, line.table == .conntrack,
                    [.create, .add, .update, .delete, .flush].contains(command)
                else {
                    throw ConntrackArguments.Problem(
                        "Cannot use command `\(line.command.map { "-" + $0.letter } ?? "unknown")' with --load-file (only -I, -A, -U, -D, -F)")
                }
                lines.append(line)
            } catch let problem as ConntrackArguments.Problem {
                throw ConntrackArguments.Problem("\(path == "-" ? "stdin" : path):\(number + 1): \(problem.message)")
            }
        }
        for line in lines { _ = try run(line, batch: true) }
    }

    /// Splits a line as conntrack does: spaces and tabs, "quoted words" with \ escapes.
    static func tokenize(_ line: String, line number: Int, path: String) throws -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quoted = false
        var escaped = false
        for c in line {
            if escaped {
                current.append(c)
                escaped = false
            } else if quoted {
                if c == "\\" { escaped = true } else if c == "\"" { quoted = false } else { current.append(c) }
            } else if c == "\"" {
                quoted = true
                inWord = true
            } else if c == " " || c == "\t" || c == "\r" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(c)
                inWord = true
            }
        }
        if quoted { throw ConntrackArguments.Problem("\(path):\(number): unterminated quote") }
        if inWord { words.append(current) }
        return words
    }

    // MARK: - Commands

    /// Runs one command; returns the exit status (1 when -D, -U or -G matched nothing, outside -R).
    static func run(_ line: ConntrackArguments, batch: Bool) throws -> Int32 {
        for warning in line.warnings { writeStandardError(warning + "\n") }
        guard let command = line.command else {
            print(usage)
            return 0
        }
        switch command {
        case .version:
            print("ctsync v\(CtsyncVersion.string) (conntrack-tools compatible)")
            return 0
        case .help:
            print(usage)
            return 0
        default: break
        }
        try requireRoot("the conntrack table")
        KernelTable.readsTimestamps = true
        let table = try KernelTable()
        if line.table == .expect { return try expectations(command, line, table, batch: batch) }
        let sink = OutputSink()
        defer { sink.flush() }
        switch command {
        case .list:
            let kind: KernelTable.DumpKind =
                line.table == .dying ? .dying : line.table == .unconfirmed ? .unconfirmed : line.given.contains(.zero) ? .zeroingCounters : .table
            var shown = 0
            try table.dump(family: line.family, kind: kind) { flow in
                guard line.selects(flow) else { return }
                if shown == 0 && line.output.contains(.xml) { sink.line("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>") }
                shown += 1
                sink.line(render(flow, line, prefix: "-A"))
            }
            if shown > 0 && line.output.contains(.xml) { sink.line("</conntrack>") }
            sink.flush()
            if !batch { summary("\(shown) flow entries have been shown.") }
            return 0
        case .get:
            let wanted = try line.flowToGet()
            guard let flow = try mapped(.get, { try table.get(wanted) }) else {
                throw Failure(message: "Operation failed: such conntrack doesn't exist", code: 1)
            }
            let shown = line.selects(flow) ? 1 : 0
            if shown == 1 {
                if line.output.contains(.xml) { sink.line("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>") }
                sink.line(render(flow, line, prefix: "-A"))
            }
            sink.flush()
            summary("\(shown) flow entries have been shown.")
            return shown == 0 ? 1 : 0
        case .create, .add:
            let flow = try line.flowToCreate()
            let report = try table.write([flow], operation: command == .create ? .create : .createOrUpdate, batchSize: 1)
            if let failure = report.failures.first {
                throw Failure(message: "Operation failed: \(describe(failure.errno, command))", code: 1)
            }
            if !batch { summary("1 flow entries have been \(command == .create ? "created" : "added").") }
            return 0
        case .delete:
            var victims: [Flow] = []
            try table.dump(family: line.family) { if line.selects($0) { victims.append($0) } }
            let report = try table.write(victims, operation: .delete)
            let failed = Set(report.failures.map(\.index))
            if let failure = report.failures.first(where: { $0.errno != ENOENT }) {
                throw Failure(message: "Operation failed: \(describe(failure.errno, command))", code: 1)
            }
            var deleted = 0
            for (index, flow) in victims.enumerated() where !failed.contains(index) {
                deleted += 1
                sink.line(render(flow, line, prefix: "-D"))
            }
            sink.flush()
            if batch { return 0 }
            summary("\(deleted) flow entries have been deleted.")
            return deleted == 0 ? 1 : 0
        case .update:
            var changes: [Flow] = []
            try table.dump(family: line.family) { flow in
                guard line.selectsForUpdate(flow), let changed = line.updated(flow) else { return }
                changes.append(changed)
            }
            let report = try table.write(changes, operation: .update)
            if let failure = report.failures.first(where: { $0.errno != ENOENT }) {
                throw Failure(message: "Operation failed: \(describe(failure.errno, command))", code: 1)
            }
            let failed = Set(report.failures.map(\.index))
            var updated = 0
            for (index, flow) in changes.enumerated() where !failed.contains(index) {
                updated += 1
                sink.line(render((try? table.get(flow)).flatMap { $0 } ?? flow, line, prefix: "-A"))
            }
            sink.flush()
            if batch { return 0 }
            summary("\(updated) flow entries have been updated.")
            return updated == 0 ? 1 : 0
        case .flush:
            if let family = line.family {
                try table.flush(family: family)
            } else {
                try table.flush()
            }
            summary("connection tracking table has been emptied.")
            return 0
        case .count:
            print(try table.count())
            return 0
        case .stats:
            printStatistics(try table.cpuStatistics())
            return 0
        case .event:
            return try events(line)
        case .version, .help:
            return 0
        }
    }

    /// -U selects by tuple (original when -s, -d or -p says, reply when -r or -q says), NAT,
    /// labels, masks and id; not by mark or status, which it sets.
    static func kernelErrorCode(_ error: Error) -> Int32? {
        if case KernelError.request(_, let e) = error { return e }
        return nil
    }

    static func mapped<T>(_ command: ConntrackArguments.Command, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            if let code = kernelErrorCode(error) { throw Failure(message: "Operation failed: \(describe(code, command))", code: 1) }
            throw error
        }
    }

    /// conntrack's words for the kernel's answers.
    static func describe(_ code: Int32, _ command: ConntrackArguments.Command) -> String {
        switch code {
        case EINVAL: return "invalid parameters"
        case EEXIST where command == .create: return "Such conntrack exists, try -U to update"
        case ENOENT: return "such conntrack doesn't exist"
        case ENOMEM: return "not enough memory"
        case ETIME: return "conntrack has expired"
        case EPERM: return "sorry, you must be root or get CAP_NET_ADMIN capability to do this"
        default: return String(cString: strerror(code))
        }
    }

    /// One flow as the line's `-o` asks: conntrack's line (extended, id, ktimestamp, labels), its
    /// XML, or `-o save`. What each command honours is conntrack 1.4.7's: -D prints neither
    /// kernel times nor labels, -U no kernel times; `showMark` false for a message without a
    /// mark (a destroy event); `when` the time of an event (`-o xml,timestamp`).
    static func render(
        _ flow: Flow, _ line: ConntrackArguments, prefix: String, event: String? = nil, showMark: Bool = true, when: time_t? = nil
    ) -> String {
        if line.output.contains(.save) { return SaveFormat.line(flow, prefix: prefix) }
        let command = line.command
        let kernelTimes = line.output.contains(.ktimestamp) && command != .delete && command != .update
        let labels = command == .delete ? [:] : labelNames(line)
        if line.output.contains(.xml) {
            let element = FlowXML.element(flow, kernelTimestamps: kernelTimes, showMark: showMark, when: when, labelNames: labels)
            if let event { return "<flow type=\"\(event.lowercased())\">" + element.dropFirst("<flow>".count) }
            return element
        }
        var format = FlowTextFormat(extended: line.output.contains(.extended), showID: line.output.contains(.id))
        format.kernelTimestamps = kernelTimes
        format.showMark = showMark
        format.labels = .names(labels)
        return format.line(flow, event: event)
    }

    /// conntrack's label map: read (once) when `-o labels`, `-l`, `--label-add` or `--label-del`
    /// asks for it; without the file, conntrack's warning and no labels printed.
    static func labelNames(_ line: ConntrackArguments) -> [Int: String] {
        guard line.output.contains(.labels) || !line.given.isDisjoint(with: [.label, .labelAdd, .labelDel]) else { return [:] }
        if let loadedLabels { return loadedLabels.names }
        let path = line.labelMap ?? ConnLabelMap.defaultPath
        if access(path, R_OK) != 0 { writeStandardError("nfct_labelmap_new: \(String(cString: strerror(errno)))\n") }
        let map = ConnLabelMap.load(path: path)
        loadedLabels = map
        return map.names
    }

    nonisolated(unsafe) private static var loadedLabels: ConnLabelMap?

    /// The expectation table (`-L expect`, `-I expect`, ...).
    static func expectations(_ command: ConntrackArguments.Command, _ line: ConntrackArguments, _ table: KernelTable, batch: Bool) throws -> Int32 {
        let sink = OutputSink()
        defer { sink.flush() }
        switch command {
        case .list:
            let all = try table.dumpExpectations(family: line.family)
            for e in all { sink.line(ExpectationText.line(e)) }
            sink.flush()
            summary("\(all.count) expectations have been shown.")
        case .count:
            print(try table.dumpExpectations(family: line.family).count)
        case .flush:
            try table.flushExpectations(family: line.family)
            summary("expectation table has been emptied.")
        case .stats:
            printStatistics(try table.expectationStatistics())
        case .create:
            try mapped(command) { try table.createExpectation(try line.expectationToCreate()) }
        case .delete:
            try mapped(command) { try table.deleteExpectation(try line.expectationNamed()) }
            summary("1 expectations have been deleted.")
        case .get:
            let wanted = try line.expectationNamed()
            let found = try table.dumpExpectations(family: wanted.family).first {
                $0.expected.matches(wanted.expected, mask: $0.mask, ports: $0.proto.hasPorts) && $0.proto == wanted.proto
            }
            guard let found else { throw Failure(message: "Operation failed: such expectation doesn't exist", code: 1) }
            print(ExpectationText.line(found))
        case .event:
            let listener = try ExpectationListener(receiveBufferSize: line.bufferSize ?? 4 << 20)
            signal(SIGINT) { _ in stopEvents = 1 }
            signal(SIGTERM) { _ in stopEvents = 1 }
            var shown = 0
            while stopEvents == 0 {
                for item in try listener.next(timeoutMilliseconds: 250) {
                    guard let (name, e) = item else {
                        writeStandardError("WARNING: We have hit ENOBUFS! We are losing events.\n")
                        continue
                    }
                    sink.line(stamped(ExpectationText.line(e, event: name), line.output.contains(.timestamp), expectation: true))
                    shown += 1
                }
                sink.flush()
            }
            summary("\(shown) expectation events have been shown.")
        default:
            break
        }
        return 0
    }

    /// `-S`: one line a CPU, conntrack's layout (`cpu=0   \tfound=0 invalid=0 ... `).
    static func printStatistics(_ cpus: [(cpu: Int, counters: [(String, UInt32)])]) {
        for cpu in cpus {
            let padded = String(cpu.cpu).padding(toLength: max(4, String(cpu.cpu).count), withPad: " ", startingAt: 0)
            print("cpu=\(padded)\t" + cpu.counters.map { "\($0.0)=\($0.1) " }.joined())
        }
    }

    /// `-o timestamp`: an event line after conntrack's `[seconds.microseconds]` and a tab. conntrack
    /// 1.4.7 writes the microseconds of a flow event zero-padded (`%-.6ld`) and those of an
    /// expectation event left-aligned in six columns (`%-6ld`).
    static func stamped(_ text: String, _ stamp: Bool, expectation: Bool = false) -> String {
        guard stamp else { return text }
        var now = timeval()
        gettimeofday(&now, nil)
        return "[\(now.tv_sec).\(String(format: expectation ? "%-6ld" : "%06ld", now.tv_usec))]\t" + text
    }

    /// -E: events until Ctrl-C (or SIGTERM), filtered as -L filters.
    static func events(_ line: ConntrackArguments) throws -> Int32 {
        let types = line.eventMask ?? .all
        let listener = try EventListener(types: types, receiveBufferSize: line.bufferSize ?? 8 << 20)
        listener.keepsDetails = true
        signal(SIGINT) { _ in stopEvents = 1 }
        signal(SIGTERM) { _ in stopEvents = 1 }
        let sink = OutputSink()
        var shown = 0
        var header = false
        var programs = ProgramNames()
        while stopEvents == 0 {
            for (event, details) in try listener.nextDetailed(timeoutMilliseconds: 250) {
                guard let flow = event.flow else {
                    writeStandardError(
                        "WARNING: We have hit ENOBUFS! We are losing events.\nThis message means that the current netlink socket buffer size is too small.\nPlease, check --buffer-size in conntrack(8) manpage.\n"
                    )
                    continue
                }
                guard line.selects(flow) else { continue }
                let xml = line.output.contains(.xml)
                if xml && !header && !line.output.contains(.save) {
                    sink.line("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<conntrack>")
                    header = true
                }
                let prefix = event.name == "NEW" ? "-A" : event.name == "UPDATE" ? "-U" : "-D"
                let stampXML = xml && line.output.contains(.timestamp)
                var text = render(
                    flow, line, prefix: prefix, event: line.output.contains(.save) ? nil : event.name,
                    showMark: details.present.contains(.mark), when: stampXML ? time(nil) : nil)
                // conntrack 1.4.7 names the program whose request made the event, whatever -o says.
                if details.portID != 0 {
                    text += " [USERSPACE] portid=\(details.portID)"
                    if let name = programs.name(ofPort: details.portID) { text += " progname=\(name)" }
                }
                sink.line(stamped(text, line.output.contains(.timestamp) && !xml && !line.output.contains(.save)))
                shown += 1
            }
            sink.flush()
        }
        if header { sink.line("</conntrack>") }
        sink.flush()
        summary("\(shown) flow events have been shown.")
        return 0
    }

    static let usage = """
        ctsync: conntrack's command line (conntrack 1.4.7 options; see 'ctsync kernel --help' for ctsync's own)
        Usage: ctsync [commands] [options]

        Commands:
          -L [table] [options]\t\tList conntrack table (tables: conntrack, dying, unconfirmed)
          -G [table] parameters\t\tGet conntrack
          -D [table] parameters\t\tDelete conntrack
          -I [table] parameters\t\tCreate a conntrack
          -U [table] parameters\t\tUpdate a conntrack
          -A [table] parameters\t\tCreate or update a conntrack
          -E [table] [options]\t\tShow events
          -F [table]\t\t\tFlush table
          -C [table]\t\t\tShow counter
          -S\t\t\t\tShow statistics
          -R FILE\t\t\tRun the -I/-A/-U/-D/-F lines of FILE (- for stdin)

        Conntrack parameters and options:
          -n, --src-nat ip\t\t\tsource NAT ip
          -g, --dst-nat ip\t\t\tdestination NAT ip
          -j, --any-nat ip\t\t\tsource or destination NAT ip
          -m, --mark mark\t\t\tSet mark
          -c, --secmark secmark\t\t\tSet selinux secmark
          -e, --event-mask eventmask\t\tEvent mask, eg. NEW,DESTROY
          -z, --zero \t\t\t\tZero counters while listing
          -o, --output type[,...]\t\tOutput format, eg. xml, extended, id, save, timestamp
          -l, --label label[,...]\t\tconntrack labels

        Updating parameters and options:
          --label-add label\tAdd label
          --label-del label\tDelete label

        Common parameters and options:
          -s, --src, --orig-src ip\t\tSource address from original direction
          -d, --dst, --orig-dst ip\t\tDestination address from original direction
          -r, --reply-src ip\t\tSource address from reply direction
          -q, --reply-dst ip\t\tDestination address from reply direction
          -p, --protonum proto\t\tLayer 4 Protocol, eg. 'tcp'
          -f, --family proto\t\tLayer 3 Protocol, eg. 'ipv6'
          -t, --timeout timeout\t\tSet timeout
          -u, --status status\t\tSet status, eg. ASSURED
          -w, --zone value\t\tSet conntrack zone
          --orig-zone value\t\tSet zone for original direction
          --reply-zone value\t\tSet zone for reply direction
          -b, --buffer-size\t\tNetlink socket buffer size
          --mask-src ip\t\t\tSource mask address
          --mask-dst ip\t\t\tDestination mask address
        """
}

/// conntrack -E's `progname=`: the process holding the netfilter netlink socket with a port
/// (`/proc/net/netlink`, then the process whose descriptors include that socket, the port's
/// own number first), as `/proc/PID/stat` names it; the last answer kept.
struct ProgramNames {
    private var last: (port: UInt32, inode: UInt64, name: String?)?

    mutating func name(ofPort port: UInt32) -> String? {
        guard let inode = Self.inode(ofPort: port) else { return nil }
        if let last, last.port == port, last.inode == inode { return last.name }
        var name = Self.holder(pid: Int(port), inode: inode)
        if name == nil, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") {
            for entry in entries {
                guard let pid = Int(entry), pid > 1, pid != Int(port) else { continue }
                if let found = Self.holder(pid: pid, inode: inode) {
                    name = found
                    break
                }
            }
        }
        last = (port, inode, name)
        return name
    }

    /// The inode of the NETLINK_NETFILTER (12) socket bound to `port`.
    static func inode(ofPort port: UInt32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/net/netlink", encoding: .utf8) else { return nil }
        for row in text.split(separator: "\n").dropFirst() {
            let f = row.split(separator: " ")
            guard f.count >= 10, f[1] == "12", UInt32(f[2]) == port else { continue }
            return UInt64(f[9])
        }
        return nil
    }

    /// The name of `pid` when one of its descriptors is the socket `inode`.
    static func holder(pid: Int, inode: UInt64) -> String? {
        let dir = "/proc/\(pid)/fd"
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return nil }
        let wanted = "socket:[\(inode)]"
        guard fds.contains(where: { (try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + $0)) == wanted }) else { return nil }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat[open...].firstIndex(of: ")")
        else { return nil }
        return String(stat[stat.index(after: open)..<close])
    }
}

extension ConntrackArguments {
    /// -U's selection: tuples, NAT, labels, masks and id; not mark or status, which it sets.
    func selectsForUpdate(_ flow: Flow) -> Bool {
        var selection = self
        selection.mark = nil
        selection.status = nil
        selection.timeout = nil
        return selection.selects(flow)
    }
}
