import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// Subscribes to the kernel's conntrack events in the current network namespace.
///
/// Drains ahead of its reader: `drain()` moves everything the socket holds into a queue of
/// parsed events (many datagrams per system call, `recvmmsg`), so the socket's buffer stays
/// nearly empty however long the caller takes over each batch (`take`); a burst at the kernel's
/// rate waits in the queue instead of overflowing the socket. The queue is bounded
/// (`maximumPending`); past it the socket fills and the kernel reports the loss as usual. The
/// receive buffer is set with SO_RCVBUFFORCE; a datagram is never truncated silently (a cut
/// message is reported as `.overrun`, like ENOBUFS), so a caller never misses a loss.
public final class EventListener {
    private let socket: MnlSocket
    /// Receive slots for one `recvmmsg`: an event message is far smaller than a slot.
    private let slots: UnsafeMutableRawBufferPointer
    private var lengths: [Int32]
    private static let slotSize = 8192
    private static let slotCount = Int(CTSYNC_RECEIVE_BATCH_MAX)
    /// Parsed events not yet taken: `EventQueue` chunks, reused (no copy when it grows, no
    /// page fault for memory it had already).
    private var pending = EventQueue()
    /// The most events held in the queue; draining stops there (the socket then fills).
    public var maximumPending = 1 << 18
    /// Events lost so far (count of overrun reports).
    public private(set) var overruns = 0
    /// Datagrams received and system calls made for them (`recvmmsg`), for the statistics.
    public private(set) var datagrams = 0
    public private(set) var receiveCalls = 0
    /// The largest number of events the queue has held.
    public private(set) var pendingHighWater = 0

    private let types: EventTypes

    /// What conntrack -E prints beside an event: the port of the socket whose request caused it
    /// (0: the kernel's own), and which attributes the message carried (a destroy event has no
    /// mark). Kept only when `keepsDetails` is set, one per queued event (`nextDetailed`).
    public struct Details: Sendable {
        public var portID: UInt32
        public var present: FlowAttributes
    }
    public var keepsDetails = false
    private var details: [Details] = []

    private func noteOverrun() {
        overruns += 1
        pending.append(.overrun)
        if keepsDetails { details.append(Details(portID: 0, present: [])) }
    }

    public init(types: EventTypes = .all, receiveBufferSize: Int = 4 << 20) throws(KernelError) {
        socket = try MnlSocket(groups: types.rawValue, receiveBufferSize: receiveBufferSize)
        slots = .allocate(byteCount: Self.slotSize * Self.slotCount, alignment: 8)
        lengths = [Int32](repeating: 0, count: Self.slotCount)
        self.types = types
    }
    /// Leaves the event groups. When nobody else in the namespace listens, the kernel then
    /// stops building events at all (a bulk write such as a commit runs faster); every event
    /// meanwhile is lost, so the caller must re-read the table after `resume()`.
    public func suspend() throws(KernelError) { try setMembership(join: false) }

    /// Joins the event groups again (before the caller re-reads the table).
    public func resume() throws(KernelError) { try setMembership(join: true) }

    private func setMembership(join: Bool) throws(KernelError) {
        // Group n is bit n-1 of the bind mask; NETLINK_ADD_MEMBERSHIP 1, NETLINK_DROP_MEMBERSHIP 2.
        for bit in 0..<3 where types.rawValue & (1 << bit) != 0 {
            try socket.setOption(level: SOL_NETLINK, name: join ? 1 : 2, value: Int32(bit + 1))
        }
    }

    deinit { slots.deallocate() }

    /// The socket's receive buffer as the kernel reports it.
    public var receiveBufferSize: Int { socket.receiveBufferSize }

    /// Grows (or shrinks) the receive buffer, e.g. after an overrun.
    public func setReceiveBufferSize(_ bytes: Int) throws(KernelError) {
        try socket.setReceiveBufferSize(bytes)
    }

    /// conntrackd's `NetlinkEventsReliable`: the kernel drops the conntrack change instead of
    /// the event when our buffer is full (NETLINK_BROADCAST_SEND_ERROR, NETLINK_NO_ENOBUFS).
    public func makeReliable() throws(KernelError) {
        try socket.setOption(level: SOL_NETLINK, name: 4, value: 1)  // NETLINK_BROADCAST_SEND_ERROR
        try socket.setOption(level: SOL_NETLINK, name: 5, value: 1)  // NETLINK_NO_ENOBUFS
    }

    /// The file descriptor, for callers that multiplex with poll/epoll.
    public var fileDescriptor: Int32 { socket.fileDescriptor }

    /// Events caused by a socket with this port are skipped (a daemon injecting the peer's
    /// flows does not replicate them back). 0: none. Setting it attaches a socket filter that
    /// drops them in the kernel (they then cost nothing and cannot fill the buffer); where that
    /// fails they are still skipped here.
    public var ignoredPort: UInt32 = 0 {
        didSet {
            filteredInKernel = ignoredPort != 0 && ctsync_attach_port_filter(socket.fileDescriptor, ignoredPort) == 0
        }
    }
    /// Whether `ignoredPort`'s events are dropped by the kernel (a socket filter).
    public private(set) var filteredInKernel = false
    /// Events skipped because of `ignoredPort`.
    public private(set) var ignoredEvents = 0

    /// Events received and not yet taken.
    public var pendingCount: Int { pending.count }

    /// Moves what the socket holds into the queue, without waiting; returns the number of
    /// events added. Stops when the socket is empty, the queue is full, or `maximumDatagrams`
    /// have been read: a caller that drains once a turn stays ahead of the kernel (a turn
    /// handles fewer events than that) without first reading a whole burst before handling
    /// any of it (which made the first flow of a burst wait for the last).
    @discardableResult
    public func drain(maximumDatagrams: Int = .max) throws -> Int {
        let before = pendingCount
        var read = 0
        while pendingCount < maximumPending && read < maximumDatagrams {
            let n = lengths.withUnsafeMutableBufferPointer { lengths in
                ctsync_receive_batch(
                    socket.fileDescriptor, slots.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(Self.slotSize),
                    UInt32(Self.slotCount), lengths.baseAddress!)
            }
            receiveCalls += 1
            if n == -ENOBUFS {
                noteOverrun()
                continue
            }
            if n < 0 { throw KernelError.socket(operation: "receive", errno: -n) }
            if n == 0 { break }
            datagrams += Int(n)
            read += Int(n)
            for index in 0..<Int(n) {
                let length = Int(lengths[index])
                if length == -1 {
                    // Cut: whatever it held is lost.
                    noteOverrun()
                    continue
                }
                if length < 0 { continue }  // not from the kernel
                let datagram = UnsafeRawBufferPointer(start: slots.baseAddress! + index * Self.slotSize, count: length)
                try collect(datagram)
            }
            if Int(n) < Self.slotCount { break }  // the socket is empty
        }
        pendingHighWater = max(pendingHighWater, pendingCount)
        return pendingCount - before
    }

    /// Takes up to `limit` queued events, oldest first (fewer at the end of a chunk: the rest
    /// comes with the next call).
    public func take(limit: Int) -> ArraySlice<FlowEvent> { pending.take(limit: limit) }

    /// Forgets the taken events (call once their batch is no longer used: it keeps the queue's
    /// storage from being copied).
    public func releaseTaken() { pending.releaseTaken() }

    /// Gives back the memory of a large burst once it is over (call now and then, e.g. once a
    /// second): the queue keeps one chunk.
    public func releaseSpareCapacity() { pending.releaseSpare() }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for events and returns a batch of at
    /// most `limit`; empty on timeout.
    public func next(timeoutMilliseconds: Int32, limit: Int = 4096) throws -> [FlowEvent] {
        if pendingCount == 0 {
            guard socket.waitReadable(milliseconds: timeoutMilliseconds) else { return [] }
        }
        try drain()
        var batch: [FlowEvent] = []
        while batch.count < limit {
            let part = take(limit: limit - batch.count)
            if part.isEmpty { break }
            batch += part
            releaseTaken()
        }
        return batch
    }

    /// `next` with each event's `Details` (set `keepsDetails` before the first event).
    public func nextDetailed(timeoutMilliseconds: Int32) throws -> [(FlowEvent, Details)] {
        let batch = try next(timeoutMilliseconds: timeoutMilliseconds, limit: .max)
        let mine = details.prefix(batch.count)
        details.removeFirst(mine.count)
        return Array(zip(batch, mine))
    }

    private func collect(_ datagram: UnsafeRawBufferPointer) throws {
        var offset = 0
        let count = datagram.count
        while count - offset >= NetlinkMessage.headerSize {
            let length = Int(datagram.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            guard length >= NetlinkMessage.headerSize, length <= count - offset else {
                throw KernelError.malformedReply(operation: "events", detail: "message length \(length) at offset \(offset) of \(count)")
            }
            let message = UnsafeRawBufferPointer(rebasing: datagram[offset..<offset + length])
            let type = message.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
            let flags = message.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
            let port = message.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
            if ignoredPort != 0 && port == ignoredPort {
                ignoredEvents += 1
            } else if let (event, present) = Self.eventAndAttributes(type: type, flags: flags, message: message) {
                pending.append(event)
                if keepsDetails { details.append(Details(portID: port, present: present)) }
            }
            offset += (length + 3) & ~3
        }
    }

    static func event(type: UInt16, flags: UInt16, message: UnsafeRawBufferPointer) -> FlowEvent? {
        eventAndAttributes(type: type, flags: flags, message: message)?.0
    }

    /// The event and which optional attributes its message carried.
    static func eventAndAttributes(type: UInt16, flags: UInt16, message: UnsafeRawBufferPointer) -> (FlowEvent, FlowAttributes)? {
        guard type >> 8 == UInt16(NFNL_SUBSYS_CTNETLINK), let (flow, present) = FlowMessageParser.parse(message) else { return nil }
        switch UInt32(type & 0xff) {
        case IPCTNL_MSG_CT_NEW.rawValue:
            let creating = UInt16(NLM_F_CREATE | NLM_F_EXCL)
            return (flags & creating != 0 ? .new(flow) : .update(flow, present: present), present)
        case IPCTNL_MSG_CT_DELETE.rawValue:
            return (.destroy(flow), present)
        default:
            return nil
        }
    }

    static func event(from message: NetlinkMessage) -> FlowEvent? {
        event(type: message.type, flags: message.flags, message: message.bytes)
    }
}

/// A FIFO of events in chunks of `chunkSize`: appending never copies what is queued, a
/// consumed chunk goes to a pool for reuse, and a batch handed out is a slice of one chunk.
struct EventQueue {
    static let chunkSize = 4096
    private var chunks: [[FlowEvent]] = []
    /// Position of the first event not taken, in the first chunk.
    private var head = 0
    /// Position just past the last event taken (what `releaseTaken` may drop).
    private var takenEnd = 0
    private var spare: [[FlowEvent]] = []
    private(set) var count = 0

    mutating func append(_ event: FlowEvent) {
        if chunks.isEmpty || chunks[chunks.count - 1].count == Self.chunkSize {
            var chunk = spare.popLast() ?? []
            chunk.reserveCapacity(Self.chunkSize)
            chunks.append(chunk)
        }
        chunks[chunks.count - 1].append(event)
        count += 1
    }

    mutating func take(limit: Int) -> ArraySlice<FlowEvent> {
        releaseTaken()  // a used-up first chunk the caller did not release
        guard let first = chunks.first else { return [] }
        let end = min(first.count, head + max(1, limit))
        let batch = first[head..<end]
        count -= end - head
        head = end
        takenEnd = end
        return batch
    }

    mutating func releaseTaken() {
        guard !chunks.isEmpty, takenEnd == chunks[0].count, head == takenEnd else { return }
        // The first chunk is used up: reuse it, unless it is the one being filled.
        if chunks.count > 1 || chunks[0].count == Self.chunkSize {
            var done = chunks.removeFirst()
            done.removeAll(keepingCapacity: true)
            spare.append(done)
        } else {
            chunks[0].removeAll(keepingCapacity: true)
        }
        head = 0
        takenEnd = 0
    }

    mutating func releaseSpare() {
        if spare.count > 1 { spare.removeLast(spare.count - 1) }
        if count == 0 && chunks.count == 1 && chunks[0].isEmpty && !spare.isEmpty { spare.removeAll() }
    }
}
