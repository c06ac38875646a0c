import Configuration
import SyncAuth

#if canImport(Glibc)
    import Glibc
#endif

/// The one authenticator all links share: one counter for what this node sends, one replay
/// window per peer whichever link a frame comes on.
final class SyncAuthSession {
    var authenticator: FrameAuthenticator
    private var sealed: [UInt8] = []
    init(_ authenticator: FrameAuthenticator) { self.authenticator = authenticator }

    func seal(_ payload: UnsafeRawBufferPointer, _ send: (UnsafeRawBufferPointer) -> Bool) -> Bool {
        sealed.removeAll(keepingCapacity: true)
        authenticator.seal(payload, into: &sealed)
        return sealed.withUnsafeBytes(send)
    }

    func open(_ frame: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        authenticator.open(frame, body)
    }
}

/// A link whose every send is sealed and whose every received frame is verified before the
/// node sees a byte of it (`Auth` in the Sync section). A datagram is one frame; a TCP link
/// is framed by frame headers instead of conntrackd's message headers.
final class AuthenticatedLink: SyncLink {
    let inner: any SyncLink
    let session: SyncAuthSession
    init(_ inner: any SyncLink, session: SyncAuthSession) {
        self.inner = inner
        self.session = session
    }

    var config: ChannelConfig { inner.config }
    var counters: ChannelCounters { inner.counters }
    var payloadLimit: Int { inner.payloadLimit - session.authenticator.overhead }
    func pollDescriptors() -> [pollfd] { inner.pollDescriptors() }
    func handle(_ result: pollfd, now: Int64, limit: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        inner.handle(result, now: now, limit: limit) { frame in session.open(frame, body) }
    }
    @discardableResult func send(_ bytes: UnsafeRawBufferPointer) -> Bool {
        session.seal(bytes) { inner.send($0) }
    }
    var nextDeadline: Int64? { inner.nextDeadline }
    var canSend: Bool { inner.canSend }
    func tick(now: Int64) { inner.tick(now: now) }
    var hasPendingOutput: Bool { inner.hasPendingOutput }
    var connections: (server: Bool, client: Bool)? { inner.connections }
}
