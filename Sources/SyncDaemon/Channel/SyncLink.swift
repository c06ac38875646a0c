import Configuration

#if canImport(Glibc)
    import Glibc
#endif

/// A dedicated link to the peer, as the daemon's loop drives it.
protocol SyncLink: AnyObject {
    var config: ChannelConfig { get }
    var counters: ChannelCounters { get }
    /// The largest payload one send may carry.
    var payloadLimit: Int { get }
    /// What to poll now (descriptors change as a stream link connects and reconnects).
    func pollDescriptors() -> [pollfd]
    /// Handles one polled descriptor; hands every complete run of messages received to `body`.
    func handle(_ result: pollfd, now: Int64, limit: Int, _ body: (UnsafeRawBufferPointer) -> Void)
    /// Sends whole messages; false when the link itself looks gone (for a link switch).
    @discardableResult func send(_ bytes: UnsafeRawBufferPointer) -> Bool
    /// When `tick` has work (a reconnection), if ever.
    var nextDeadline: Int64? { get }
    /// False while sending now would only drop data (a stream link down with its queue full):
    /// the caller then keeps its messages queued.
    var canSend: Bool { get }
    func tick(now: Int64)
    /// True while sent data still waits in the link (a stream's backlog): a stopping daemon
    /// gives it a moment to go out.
    var hasPendingOutput: Bool { get }
    /// A stream link's two connections (the peer's to us, ours to the peer), as conntrackd's
    /// `-s` shows them (`server=connected client=connected`); nil for datagram links.
    var connections: (server: Bool, client: Bool)? { get }
}

extension DatagramChannel: SyncLink {
    func pollDescriptors() -> [pollfd] { [pollfd(fd: receiveDescriptor, events: Int16(POLLIN), revents: 0)] }
    func handle(_ result: pollfd, now: Int64, limit: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        receive(limit: limit, body)
    }
    var nextDeadline: Int64? { nil }
    var canSend: Bool { true }
    func tick(now: Int64) {}
    var hasPendingOutput: Bool { false }
    var connections: (server: Bool, client: Bool)? { nil }
}
