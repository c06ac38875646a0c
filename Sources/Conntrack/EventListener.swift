import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// Subscribes to the kernel's conntrack events in the current network namespace.
///
/// Reads in batches: `next` waits for the first event, then takes whatever else is
/// queued (up to a limit) without blocking. The receive buffer is set with
/// SO_RCVBUFFORCE; a datagram is never truncated silently (a cut message is
/// reported as `.overrun`, like ENOBUFS), so a caller never misses a loss.
public final class EventListener {
    private let socket: MnlSocket
    private let buffer: UnsafeMutableRawBufferPointer
    /// Events lost so far (count of overrun reports).
    public private(set) var overruns = 0

    private let types: EventTypes

    public init(types: EventTypes = .all, receiveBufferSize: Int = 4 << 20) throws(KernelError) {
        socket = try MnlSocket(groups: types.rawValue, receiveBufferSize: receiveBufferSize)
        buffer = .allocate(byteCount: 1 << 17, alignment: 8)
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

    deinit { buffer.deallocate() }

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

    /// Waits up to `timeoutMilliseconds` (-1: forever) for events and returns a batch of at
    /// most `limit`; empty on timeout.
    /// Events caused by a socket with this port are skipped (a daemon injecting the peer's
    /// flows does not replicate them back). 0: none.
    public var ignoredPort: UInt32 = 0
    /// Events skipped because of `ignoredPort`.
    public private(set) var ignoredEvents = 0

    public func next(timeoutMilliseconds: Int32, limit: Int = 4096) throws -> [FlowEvent] {
        guard socket.waitReadable(milliseconds: timeoutMilliseconds) else { return [] }
        var events: [FlowEvent] = []
        while events.count < limit {
            let n: Int
            do {
                n = try socket.receive(into: buffer, wait: false)
            } catch KernelError.overrun {
                overruns += 1
                events.append(.overrun)
                continue
            } catch KernelError.truncated {
                overruns += 1
                events.append(.overrun)
                continue
            }
            if n == 0 { break }
            let messages = try NetlinkMessage.split(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n), operation: "events")
            collect(messages, into: &events)
        }
        return events
    }

    private func collect(_ messages: [NetlinkMessage], into events: inout [FlowEvent]) {
        for message in messages {
            if ignoredPort != 0 && message.portID == ignoredPort {
                ignoredEvents += 1
            } else if let event = Self.event(from: message) {
                events.append(event)
            }
        }
    }

    static func event(from message: NetlinkMessage) -> FlowEvent? {
        guard message.type >> 8 == UInt16(NFNL_SUBSYS_CTNETLINK),
            let (flow, present) = KernelTable.parseFlowAttributes(message)
        else { return nil }
        switch UInt32(message.type & 0xff) {
        case IPCTNL_MSG_CT_NEW.rawValue:
            let creating = UInt16(NLM_F_CREATE | NLM_F_EXCL)
            return message.flags & creating != 0 ? .new(flow) : .update(flow, present: present)
        case IPCTNL_MSG_CT_DELETE.rawValue:
            return .destroy(flow)
        default:
            return nil
        }
    }
}
