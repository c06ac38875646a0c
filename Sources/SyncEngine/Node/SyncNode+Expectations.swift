import FlowModel
import SyncProtocol

/// A change of the kernel's expectation table (conntrack `-E expect`).
public enum ExpectationEvent: Sendable, Equatable {
    case new(Expectation)
    case update(Expectation)
    case destroy(Expectation)
    /// Events were lost (the socket overran): the table is read again.
    case overrun
}

/// Expectation sync (`Options { ExpectationSync }`): the kernel's expectations (those of the
/// configured helpers, whose master flow the internal cache holds) kept in an internal
/// expectation cache, replicated through the mode beside the flows, the peer's kept in an
/// external expectation cache (or written into the kernel with `DisableExternalCache`), and
/// committed after the flows, their masters.
extension SyncNode {
    /// Whether expectations are replicated.
    public var syncsExpectations: Bool { settings.expectations != nil }

    /// Whether an expectation is one to replicate: its helper is listed, and (with an internal
    /// cache) its master is a flow we hold (conntrackd: the master passes the Filter).
    func acceptsExpectation(_ e: Expectation, local: Bool) -> Bool { expectationFilter(local: local)(e) }

    /// The same test as a closure that holds no reference to the node (for the caches' resync).
    func expectationFilter(local: Bool) -> (Expectation) -> Bool {
        guard let accepts = settings.expectations else { return { _ in false } }
        guard local, !bypassesInternalCache else { return accepts }
        let flows = internalCache
        return { accepts($0) && flows[$0.key.masterKey] != nil }
    }

    /// Loads the kernel's expectations into the internal expectation cache (at start, after
    /// the flows: their masters must be there first) and queues them for the peer.
    mutating func loadExpectations(now: Int64, environment env: some SyncNodeEnvironment) throws {
        guard syncsExpectations else { return }
        let dumped = try env.readKernelExpectations()
        let result = internalExpectations.resync(with: dumped, now: now / 1000, accepts: expectationFilter(local: true))
        env.log(.notice, "internal expectation cache loaded: \(internalExpectations.count) expectations from the kernel (\(dumped.count) listed)")
        if mode != nil { for key in result.added { mode!.expectationChanged(key, created: true) } }
    }

    /// Applies a batch of kernel expectation events and queues what changed for the peer.
    public mutating func expectationEvents(_ events: some Collection<ExpectationEvent>, now: Int64, environment env: some SyncNodeEnvironment) {
        guard syncsExpectations else { return }
        let seconds = now / 1000
        for event in events {
            switch event {
            case .overrun:
                mirror.overruns += 1
                resyncExpectations(reason: "event overrun", now: now, environment: env)
            case .new(let e), .update(let e):
                expectationEventsReceived &+= 1
                guard acceptsExpectation(e, local: true) else {
                    expectationEventsFiltered &+= 1
                    continue
                }
                switch internalExpectations.store(e, now: seconds) {
                case .created(let key):
                    mode?.expectationChanged(key, created: true)
                    urgentQueued = true
                case .updated(let key): mode?.expectationChanged(key, created: false)
                default: break
                }
            case .destroy(let e):
                expectationEventsReceived &+= 1
                if case .destroyed(let gone) = internalExpectations.remove(e) {
                    let wire = forWire(gone)
                    mode?.expectationDestroyed(wire)
                    urgentQueued = true
                }
            }
        }
    }

    /// Makes the internal expectation cache equal to the kernel's table (`-R expect`, after an
    /// overrun) and tells the peer what that changed.
    @discardableResult
    public mutating func resyncExpectations(reason: String, now: Int64, environment env: some SyncNodeEnvironment) -> Bool {
        guard syncsExpectations else { return false }
        let dumped: [Expectation]
        do {
            dumped = try env.readKernelExpectations()
        } catch {
            env.log(.error, "resync with the kernel's expectations failed: \(error)")
            return false
        }
        let result = internalExpectations.resync(with: dumped, now: now / 1000, accepts: expectationFilter(local: true))
        if mode != nil {
            for key in result.added { mode!.expectationChanged(key, created: true) }
            for key in result.changed { mode!.expectationChanged(key, created: false) }
            for e in result.removed.map(forWire) { mode!.expectationDestroyed(e) }
        }
        env.log(
            .notice,
            "resync with the kernel's expectations (\(reason)): \(internalExpectations.count) expectations, \(result.added.count) added, \(result.removed.count) gone"
        )
        return true
    }

    /// An expectation as it goes on the wire: without the timeout when `CommitTimeout` is set
    /// (conntrackd leaves it out then).
    func forWire(_ e: Expectation) -> Expectation {
        guard settings.sync?.encodeOptions.includeTimeout == false else { return e }
        var copy = e
        copy.timeout = nil
        return copy
    }

    /// Queues every internal expectation for the peer (a bulk, the answer to its resync).
    mutating func enqueueAllExpectations() {
        guard mode != nil, syncsExpectations else { return }
        for key in internalExpectations.keys { mode!.expectationChanged(key, created: false) }
    }

    /// A peer's expectation message: into the external expectation cache, or the kernel.
    mutating func applyExpectation(_ message: ExpectationMessage, now: Int64, environment env: some SyncNodeEnvironment) {
        guard syncsExpectations else {
            expectationsIgnored &+= 1
            return
        }
        guard let e = ExpectationCodec.expectation(message.attributes) else {
            malformed["bad expectation", default: 0] += 1
            return
        }
        lastPeerData = now
        staleExpectations?.remove(e.key)
        if message.kind != .destroy && !acceptsExpectation(e, local: false) {
            // Not a helper we replicate: the peer's copy does not enter (one that stops passing leaves).
            receivedFiltered &+= 1
            if injects { expectationInjectQueue.append((.destroy, e)) } else { externalExpectations.remove(e) }
            return
        }
        if injects {
            expectationInjectQueue.append((message.kind, e))
            return
        }
        switch message.kind {
        case .destroy: externalExpectations.remove(e)
        case .new, .update:
            if case .rejected = externalExpectations.store(e, now: now / 1000) { refused(now: now, environment: env) }
        }
    }

    /// Empties the expectation caches; returns how many went.
    public mutating func flushExpectationCaches(internal flushInternal: Bool, external flushExternal: Bool) -> Int {
        (flushInternal ? internalExpectations.flush() : 0) + (flushExternal ? externalExpectations.flush() : 0)
    }

    /// The external expectations as they are now, for a commit (after the flows).
    public var expectationCommitSnapshot: [ExpectationEntry] { externalExpectations.entries }
}
