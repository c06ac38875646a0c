import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// The outcome of a batched write: how many succeeded, and which flows failed with which errno.
public struct WriteReport: Sendable, Equatable {
    public struct Failure: Sendable, Equatable {
        /// Index of the flow in the collection that was written.
        public var index: Int
        public var errno: Int32
    }
    public var attempted = 0
    /// Flows created (for `.create` and `.createOrUpdate`).
    public var created = 0
    /// Flows updated (for `.update`, and `.createOrUpdate` when the flow already existed).
    public var updated = 0
    /// Flows deleted (for `.delete`).
    public var deleted = 0
    public var failures: [Failure] = []
    /// Number of `sendmsg` calls made.
    public var sends = 0
    public var succeeded: Int { created + updated + deleted }
    public init() {}
}

/// What a batched write does to each flow.
public enum WriteOperation: Sendable {
    /// Create; a flow that exists already fails with EEXIST.
    case create
    /// Change timeout, status, mark, labels and protocol state of an existing flow.
    case update
    /// Create, and update the flows that already exist (the commit path).
    case createOrUpdate
    /// Delete by original tuple and zone (and id, when known, so a re-created flow survives).
    case delete
}

/// The kernel's conntrack table in the current network namespace, over one netlink
/// socket: dump, get, create, update, delete, flush, count, and batched writes that put
/// many messages in one `sendmsg` and collect the answers in bulk.
///
/// Not thread-safe: one owner uses it at a time.
public final class KernelTable {
    let transport: any NetlinkTransport
    var nextSequence: UInt32
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let sendBuffer: UnsafeMutableRawBufferPointer
    /// How long to wait for the kernel before giving up on a request.
    public var replyTimeoutMilliseconds: Int32 = 30_000

    /// Bytes reserved per message while filling a batch; a conntrack message is far smaller.
    private static let messageReserve = 2048
    /// Default number of messages per `sendmsg`.
    public static let defaultBatchSize = 256

    /// The netlink port of this table's socket: the kernel's events for changes made through
    /// it carry this port (so a listener can tell them from others).
    public var portID: UInt32 { transport.portID }

    /// Opens a socket in the current network namespace.
    public convenience init(receiveBufferSize: Int = 8 << 20) throws(KernelError) {
        let socket = try MnlSocket(receiveBufferSize: receiveBufferSize, sendBufferSize: 8 << 20)
        self.init(transport: socket)
    }

    /// Uses a given transport (a recorded one in tests).
    public init(transport: any NetlinkTransport, sendBufferBytes: Int = 1 << 20) {
        self.transport = transport
        nextSequence = UInt32(truncatingIfNeeded: time(nil))
        receiveBuffer = .allocate(byteCount: 1 << 18, alignment: 8)
        sendBuffer = .allocate(byteCount: max(sendBufferBytes, 2 * Self.messageReserve), alignment: 8)
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
    }

    // MARK: - Reading

    /// Streams every flow (of one family, or all) to `body`.
    public func dump(family: AddressFamily? = nil, _ body: (Flow) throws -> Void) throws {
        try dumpMessages(family: family) { message in
            if let flow = Self.parseFlow(message) { try body(flow) }
        }
    }

    /// Streams the dump's messages as the kernel sent them.
    func dumpMessages(family: AddressFamily? = nil, _ body: (NetlinkMessage) throws -> Void) throws {
        let seq = try sendRequest(type: IPCTNL_MSG_CT_GET, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: family)
        try receiveUntilDone(sequence: seq, operation: "dump", body)
    }

    /// Every flow (of one family, or all).
    /// Which table a dump reads: the live table, the same while zeroing its counters
    /// (conntrack's `-L -z`), or the flows being destroyed or not yet confirmed.
    public enum DumpKind: Sendable {
        case table, zeroingCounters, dying, unconfirmed
    }

    /// Dumps one of the kernel's lists of flows.
    public func dump(family: AddressFamily?, kind: DumpKind, _ body: (Flow) throws -> Void) throws {
        let type: cntl_msg_types
        switch kind {
        case .table: type = IPCTNL_MSG_CT_GET
        case .zeroingCounters: type = IPCTNL_MSG_CT_GET_CTRZERO
        case .dying: type = IPCTNL_MSG_CT_GET_DYING
        case .unconfirmed: type = IPCTNL_MSG_CT_GET_UNCONFIRMED
        }
        let seq = try sendRequest(type: type, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: family)
        try receiveUntilDone(sequence: seq, operation: "dump") { message in
            if let flow = Self.parseFlow(message) { try body(flow) }
        }
    }

    /// The kernel's per-CPU conntrack statistics (conntrack `-S`): for each CPU, its number
    /// and the counters it reported, named as conntrack names them, in attribute order.
    public func cpuStatistics() throws -> [(cpu: Int, counters: [(String, UInt32)])] {
        let names = [
            "searched", "found", "new", "invalid", "ignore", "delete", "delete_list", "insert", "insert_failed", "drop",
            "early_drop", "error", "search_restart", "clash_resolve", "chaintoolong",
        ]
        let seq = try sendRequest(type: IPCTNL_MSG_CT_GET_STATS_CPU, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: nil)
        return try perCPUStatistics(sequence: seq, names: names)
    }

    /// Reads a per-CPU statistics dump: each message's CPU (nfgenmsg.res_id) and its u32
    /// counters, named by attribute number (1-based) from `names`.
    func perCPUStatistics(sequence seq: UInt32, names: [String]) throws -> [(cpu: Int, counters: [(String, UInt32)])] {
        var result: [(cpu: Int, counters: [(String, UInt32)])] = []
        try receiveUntilDone(sequence: seq, operation: "statistics") { message in
            let bytes = message.bytes
            let start = NetlinkMessage.headerSize + Int(ctsync_nfgenmsg_size())
            guard bytes.count >= start else { return }
            // nfgenmsg.res_id (big-endian) is the CPU.
            let cpu = Int(UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: NetlinkMessage.headerSize + 2, as: UInt16.self)))
            var counters: [(Int, UInt32)] = []
            var offset = start
            while bytes.count - offset >= 4 {
                let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
                let type = Int(bytes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff)
                guard length >= 4, offset + length <= bytes.count else { break }
                if length >= 8 { counters.append((type, UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)))) }
                offset += (length + 3) & ~3
            }
            counters.sort { $0.0 < $1.0 }
            result.append(
                (cpu, counters.map { (type, value) in (type >= 1 && type <= names.count ? names[type - 1] : "unknown\(type)", value) }))
        }
        return result
    }

    public func dump(family: AddressFamily? = nil) throws -> [Flow] {
        var flows: [Flow] = []
        try dump(family: family) { flows.append($0) }
        return flows
    }

    /// Looks a flow up by its identity (original tuple, protocol, zone). Nil if absent.
    public func get(_ flow: Flow) throws -> Flow? {
        var found: Flow?
        do {
            let seq = try sendFlowRequest(flow, type: IPCTNL_MSG_CT_GET, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), purpose: .get)
            try receiveUntilDone(sequence: seq, operation: "get") { message in
                found = Self.parseFlow(message)
            }
        } catch KernelError.request(_, let e) where e == ENOENT {
            return nil
        }
        return found
    }

    /// Number of flows in this namespace's table, from the kernel's own counter.
    public func count() throws -> Int {
        let seq = try sendRequest(type: IPCTNL_MSG_CT_GET_STATS, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), family: nil)
        var entries: Int?
        try receiveUntilDone(sequence: seq, operation: "count") { message in
            let start = NetlinkMessage.headerSize + Int(ctsync_nfgenmsg_size())
            var offset = start
            let bytes = message.bytes
            while bytes.count - offset >= 4 {
                let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
                let type = bytes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff
                guard length >= 4, offset + length <= bytes.count else { break }
                if type == UInt16(CTA_STATS_GLOBAL_ENTRIES.rawValue), length >= 8 {
                    entries = Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)))
                }
                offset += (length + 3) & ~3
            }
        }
        guard let entries else {
            throw KernelError.malformedReply(operation: "count", detail: "no CTA_STATS_GLOBAL_ENTRIES in the reply")
        }
        return entries
    }

    // MARK: - Writing

    public func create(_ flow: Flow) throws { try single(flow, .create) }
    public func update(_ flow: Flow) throws { try single(flow, .update) }
    public func delete(_ flow: Flow) throws { try single(flow, .delete) }

    private func single(_ flow: Flow, _ operation: WriteOperation) throws {
        let report = try write([flow], operation: operation, batchSize: 1)
        if let failure = report.failures.first {
            throw KernelError.request(operation: "\(operation)", errno: failure.errno)
        }
    }

    /// Empties the whole table in one kernel operation.
    public func flush() throws {
        let seq = try sendRequest(type: IPCTNL_MSG_CT_DELETE, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), family: nil)
        try receiveUntilDone(sequence: seq, operation: "flush") { _ in }
    }

    /// Deletes every flow of one family (the kernel's own flush ignores the family), in
    /// batches. Returns how many were removed; flows that vanished meanwhile are not errors.
    @discardableResult
    public func flush(family: AddressFamily) throws -> Int {
        try delete(matching: { _ in true }, family: family)
    }

    /// Deletes the flows `predicate` selects (of one family, or all), by dump and batched delete
    /// carrying each flow's id, so a flow re-created meanwhile is left alone. Returns how many
    /// were removed; throws if the kernel refused any for another reason than ENOENT.
    @discardableResult
    public func delete(matching predicate: (Flow) -> Bool, family: AddressFamily? = nil) throws -> Int {
        var victims: [Flow] = []
        try dump(family: family) { if predicate($0) { victims.append($0) } }
        let report = try write(victims, operation: .delete)
        if let failure = report.failures.first(where: { $0.errno != ENOENT }) {
            throw KernelError.request(operation: "delete", errno: failure.errno)
        }
        return report.deleted
    }

    /// Writes many flows, `batchSize` netlink messages per `sendmsg`. Only the last message of
    /// a batch asks for an acknowledgement; the kernel answers failed messages on its own, in
    /// order, so when the last one's answer arrives the batch is complete. Per-flow failures
    /// (EEXIST, ENOENT, ...) are reported, never thrown; only socket trouble throws.
    public func write<C: RandomAccessCollection>(
        _ flows: C, operation: WriteOperation, batchSize: Int = KernelTable.defaultBatchSize
    ) throws -> WriteReport where C.Element == Flow, C.Index == Int {
        if operation == .createOrUpdate {
            var report = try write(flows, operation: .create, batchSize: batchSize)
            let existing = report.failures.filter { $0.errno == EEXIST }.map(\.index)
            guard !existing.isEmpty else { return report }
            report.failures.removeAll { $0.errno == EEXIST }
            let again = try write(existing.map { flows[$0] }, operation: .update, batchSize: batchSize)
            report.updated += again.updated
            report.sends += again.sends
            report.failures += again.failures.map { WriteReport.Failure(index: existing[$0.index], errno: $0.errno) }
            report.failures.sort { $0.index < $1.index }
            return report
        }

        var report = WriteReport()
        report.attempted = flows.count
        let (type, flags, purpose) = Self.request(for: operation)
        let (failures, sends) = try writeBatched(count: flows.count, batchSize: batchSize) { offset, at, sequence in
            try NFConntrack.buildMessage(
                at: at, flow: flows[flows.startIndex + offset], type: type, flags: flags, sequence: sequence,
                purpose: purpose)
        }
        report.sends += sends
        for (index, e) in failures { report.failures.append(.init(index: flows.startIndex + index, errno: e)) }
        let ok = flows.count - failures.count
        switch operation {
        case .create: report.created += ok
        case .update: report.updated += ok
        case .delete: report.deleted += ok
        case .createOrUpdate: break
        }
        return report
    }

    /// Sends `count` messages, `batchSize` per `sendmsg`, each built by `build(index, at,
    /// sequence)` into the send buffer. Only the last message of a batch asks for an
    /// acknowledgement; the kernel answers failed messages on its own, in order, so when the
    /// last one's answer arrives the batch is complete. Returns the failures (index, errno)
    /// and how many `sendmsg` calls it took.
    func writeBatched(
        count: Int, batchSize: Int, build: (Int, UnsafeMutableRawPointer, UInt32) throws -> UnsafeMutablePointer<nlmsghdr>
    ) throws -> (failures: [(Int, Int32)], sends: Int) {
        var failures: [(Int, Int32)] = []
        var sends = 0
        let size = max(1, batchSize)
        var index = 0
        while index < count {
            let batchStart = index
            let firstSequence = nextSequence
            var used = 0
            var lastHeader: UnsafeMutablePointer<nlmsghdr>?
            while index < count && index - batchStart < size && used + Self.messageReserve <= sendBuffer.count {
                let header = try build(index, sendBuffer.baseAddress! + used, nextSequence)
                used += Int((header.pointee.nlmsg_len + 3) & ~3)
                nextSequence &+= 1
                lastHeader = header
                index += 1
            }
            lastHeader!.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
            try transport.send(UnsafeRawBufferPointer(start: sendBuffer.baseAddress, count: used))
            sends += 1
            for (offset, e) in try collectBatchAnswers(firstSequence: firstSequence, count: index - batchStart) {
                failures.append((batchStart + offset, e))
            }
        }
        return (failures, sends)
    }

    private static func request(for operation: WriteOperation) -> (cntl_msg_types, UInt16, NFConntrack.Purpose) {
        switch operation {
        case .create, .createOrUpdate:
            return (IPCTNL_MSG_CT_NEW, UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL), .create)
        case .update:
            return (IPCTNL_MSG_CT_NEW, UInt16(NLM_F_REQUEST), .update)
        case .delete:
            return (IPCTNL_MSG_CT_DELETE, UInt16(NLM_F_REQUEST), .delete)
        }
    }

    /// Reads answers for a batch of `count` messages numbered from `firstSequence`: error
    /// reports for failed ones, then the acknowledgement of the last. Returns (offset, errno)
    /// per failure. If our receive queue overflowed, reports we could not read are counted
    /// as failures with ENOBUFS for every message after the last answer seen.
    private func collectBatchAnswers(firstSequence: UInt32, count: Int) throws -> [(Int, Int32)] {
        var failures: [(Int, Int32)] = []
        let last = count - 1
        var highestSeen = -1
        while true {
            let n: Int
            do {
                guard waitForReply() else { throw KernelError.request(operation: "write", errno: ETIMEDOUT) }
                n = try transport.receive(into: receiveBuffer, wait: true)
            } catch KernelError.overrun {
                for offset in (highestSeen + 1)...last where !failures.contains(where: { $0.0 == offset }) {
                    failures.append((offset, ENOBUFS))
                }
                drain()
                return failures
            }
            for message in try NetlinkMessage.split(UnsafeRawBufferPointer(start: receiveBuffer.baseAddress, count: n), operation: "write") {
                guard let code = message.errorCode else { continue }
                let offset = Int(Int32(bitPattern: message.sequence &- firstSequence))
                guard offset >= 0 && offset <= last else { continue }
                highestSeen = max(highestSeen, offset)
                if code != 0 { failures.append((offset, code)) }
                if offset == last { return failures }
            }
        }
    }

    private func drain() {
        while let n = try? transport.receive(into: receiveBuffer, wait: false), n > 0 {}
    }

    // MARK: - Plumbing

    private func waitForReply() -> Bool {
        guard let socket = transport as? MnlSocket else { return true }
        return socket.waitReadable(milliseconds: replyTimeoutMilliseconds)
    }

    private func sendRequest(type: cntl_msg_types, flags: UInt16, family: AddressFamily?) throws -> UInt32 {
        let seq = nextSequence
        nextSequence &+= 1
        let header = ctsync_put_ct_header(sendBuffer.baseAddress!, UInt8(type.rawValue), flags, seq, family?.rawValue ?? 0)!
        try transport.send(UnsafeRawBufferPointer(start: sendBuffer.baseAddress, count: Int(header.pointee.nlmsg_len)))
        return seq
    }

    private func sendFlowRequest(_ flow: Flow, type: cntl_msg_types, flags: UInt16, purpose: NFConntrack.Purpose) throws -> UInt32 {
        let seq = nextSequence
        nextSequence &+= 1
        let header = try NFConntrack.buildMessage(
            at: sendBuffer.baseAddress!, flow: flow, type: type, flags: flags, sequence: seq, purpose: purpose)
        try transport.send(UnsafeRawBufferPointer(start: sendBuffer.baseAddress, count: Int(header.pointee.nlmsg_len)))
        return seq
    }

    /// Receives the answer to request `sequence` until NLMSG_DONE or its acknowledgement,
    /// handing each data message to `body`. A non-zero error answer throws.
    func receiveUntilDone(sequence: UInt32, operation: String, _ body: (NetlinkMessage) throws -> Void) throws {
        while true {
            guard waitForReply() else { throw KernelError.request(operation: operation, errno: ETIMEDOUT) }
            let n = try transport.receive(into: receiveBuffer, wait: true)
            for message in try NetlinkMessage.split(UnsafeRawBufferPointer(start: receiveBuffer.baseAddress, count: n), operation: operation) {
                guard message.sequence == sequence else { continue }
                if message.type == NetlinkMessage.done { return }
                if let code = message.errorCode {
                    if code != 0 { throw KernelError.request(operation: operation, errno: code) }
                    return
                }
                try body(message)
            }
        }
    }

    /// Whether flows read from the kernel (dumps, gets, events) carry `Flow.timestamps`
    /// (CTA_TIMESTAMP): off unless a caller that prints them (conntrack's command line) asks,
    /// before it reads any flow.
    public static var readsTimestamps: Bool {
        get { FlowMessageParser.readsTimestamps }
        set { FlowMessageParser.readsTimestamps = newValue }
    }

    /// Parses a ctnetlink message into a flow (nil for other messages or a message without a tuple).
    static func parseFlow(_ message: NetlinkMessage) -> Flow? {
        parseFlowAttributes(message)?.0
    }

    /// Parses a ctnetlink message into a flow and says which optional attributes it carried.
    static func parseFlowAttributes(_ message: NetlinkMessage) -> (Flow, FlowAttributes)? {
        guard message.type >> 8 == UInt16(NFNL_SUBSYS_CTNETLINK) else { return nil }
        return FlowMessageParser.parse(message.bytes)
    }

    /// The same through libnetfilter_conntrack (`nfct_nlmsg_parse`): what `FlowMessageParser`
    /// must agree with (the tests compare the two on the kernel's messages).
    static func parseFlowAttributesWithLibrary(_ message: NetlinkMessage) -> (Flow, FlowAttributes)? {
        guard message.type >> 8 == UInt16(NFNL_SUBSYS_CTNETLINK) else { return nil }
        // A parsed object keeps attributes set earlier and libnetfilter_conntrack has no reset,
        // so each message gets a fresh object.
        guard let ct = nfct_new() else { return nil }
        defer { nfct_destroy(ct) }
        let header = UnsafeRawPointer(message.bytes.baseAddress!).assumingMemoryBound(to: nlmsghdr.self)
        guard nfct_nlmsg_parse(header, ct) >= 0, let flow = NFConntrack.flow(from: ct) else { return nil }
        return (flow, NFConntrack.attributes(of: ct))
    }
}
