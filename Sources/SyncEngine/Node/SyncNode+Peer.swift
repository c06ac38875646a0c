import FlowModel
import SyncProtocol

/// The peer side: sending, receiving, the choice of link, restarts and the sweep after them,
/// ALARM's expiry, and where the peer's flows go.
extension SyncNode {
    // MARK: - Sending

    /// Writes what was received for the kernel (`DisableExternalCache`), then sends everything
    /// the mode has queued, packed into datagrams of at most the links' payload size, on the
    /// current link.
    public mutating func transmit(now: Int64, environment env: some SyncNodeEnvironment) {
        if !injectQueue.isEmpty {
            let changes = injectQueue
            injectQueue.removeAll(keepingCapacity: true)
            env.inject(changes)
        }
        if !expectationInjectQueue.isEmpty {
            // After the flows: an expectation needs its master in the kernel.
            let changes = expectationInjectQueue
            expectationInjectQueue.removeAll()
            env.injectExpectations(changes)
        }
        guard mode != nil, let sync = settings.sync else { return }
        // A link that cannot take more (TCP, reconnecting, queue full): the messages wait in the
        // mode (one per flow, the latest state) rather than being encoded and dropped.
        guard env.canSend(link: currentLink) else { return }
        if sync.updateDelayMilliseconds > 0 {
            let queued = mode!.transmitQueueLength
            if queued == 0 {
                heldSince = nil
            } else {
                let since = heldSince ?? now
                // About a datagram's worth of messages goes at once: waiting would not merge more;
                // and a new or ended flow goes at once (with what is queued beside it).
                if !urgentQueued && queued < sync.payloadLimit / Self.typicalMessageBytes && now - since < sync.updateDelayMilliseconds {
                    heldSince = since
                    return
                }
                heldSince = nil
            }
        }
        let cache = internalCache
        let bypassed = bypass
        urgentQueued = false
        // Messages are encoded as the mode hands them out, into one buffer cut into datagrams
        // (`datagramEnds`); they are sent once the mode is done (it cannot be touched while it
        // hands them out). The buffers are the node's, reused from turn to turn.
        var wire = self.datagram
        var ends = self.datagramEnds
        wire.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        self.datagram = []
        let options = sync.encodeOptions
        let limit = sync.payloadLimit
        var start = 0
        let expectations = internalExpectations
        let stripTimeout = !sync.encodeOptions.includeTimeout
        let liveExpectation = { (key: ExpectationKey) -> Expectation? in
            guard var e = expectations[key]?.expectation else { return nil }
            if stripTimeout { e.timeout = nil }
            return e
        }
        mode!.transmit(now: now, current: { bypassed[$0] ?? cache[$0]?.flow }, expectation: liveExpectation) { message in
            // Encoded in place; a message that overfills the datagram starts the next one.
            let before = wire.count
            SyncWire.encode(message, into: &wire, options: options)
            if before > start && wire.count - start > limit {
                ends.append(before)
                start = before
            }
        }
        if bypassesInternalCache { bypass.removeAll(keepingCapacity: true) }
        if wire.count > start { ends.append(wire.count) }
        start = 0
        for end in ends {
            wire.withUnsafeBytes { send(UnsafeRawBufferPointer(rebasing: $0[start..<end]), now: now, environment: env) }
            start = end
        }
        // A bulk's buffer (a whole table) is not kept for the small turns that follow.
        if wire.capacity <= 1 << 20 {
            self.datagram = wire
            self.datagramEnds = ends
        } else {
            self.datagramEnds = []
        }
    }

    /// A flow message's usual size (an IPv4 TCP flow with NAT is 84 to 116 bytes).
    static let typicalMessageBytes = 96

    /// Sends the datagram on the current link; a failure that says the link is gone makes the
    /// next running link current at once, and the datagram goes out there.
    private mutating func send(_ bytes: UnsafeRawBufferPointer, now: Int64, environment env: some SyncNodeEnvironment) {
        let link = currentLink
        if env.send(bytes, link: link) || linkCount == 1 { return }
        checkLinks(now: now, environment: env)
        if currentLink != link { _ = env.send(bytes, link: currentLink) }
    }

    // MARK: - Receiving

    /// Digests one datagram from link `link`. conntrackd's receive loop: a framing error ends
    /// the datagram; a message whose payload is rejected is skipped, but its sequence number
    /// still counts (so it is acknowledged, not asked for again and again). Valid messages on
    /// another link than the current one make it current (the peer's choice is followed).
    public mutating func receive(_ bytes: UnsafeRawBufferPointer, link: Int, now: Int64, environment env: some SyncNodeEnvironment) {
        guard mode != nil else { return }
        var valid = false
        var taken = false
        let error = SyncWire.forEachFrame(bytes) { _, header, result in
            let actions: [ModeAction]
            let dropped: Bool
            switch result {
            case .success(let message):
                valid = true
                (actions, dropped) = mode!.receiveNoting(message, now: now)
            case .failure(let error):
                malformed[error.statsCategory.rawValue, default: 0] += 1
                (actions, dropped) = mode!.receiveNoting(SyncMessage(sequence: header.sequence, hello: header.flags, body: .alive), now: now)
            }
            if !actions.isEmpty || !dropped { taken = true }
            for action in actions { act(on: action, now: now, environment: env) }
        }
        if let error { malformed[error.statsCategory.rawValue, default: 0] += 1 }
        if taken && valid { heardPeer(now: now, environment: env) }
        if valid && link != currentLink && link >= 0 && link < linkCount {
            switchLink(to: link, reason: "the peer sends on it", environment: env)
        }
    }

    private mutating func act(on action: ModeAction, now: Int64, environment env: some SyncNodeEnvironment) {
        if case .apply(let kind, let flow) = action, kind != .destroy, let transform = settings.receivedTransform {
            act(onChanged: .apply(kind, transform(flow)), now: now, environment: env)
        } else {
            act(onChanged: action, now: now, environment: env)
        }
    }

    private mutating func act(onChanged action: ModeAction, now: Int64, environment env: some SyncNodeEnvironment) {
        switch action {
        case .apply(let kind, let flow) where kind != .destroy && !settings.accepts(flow):
            // The Filter section applies to what the peer sends too: a flow it refuses never
            // reaches the external cache or the kernel (one that stops passing it leaves).
            receivedFiltered &+= 1
            lastPeerData = now
            stale?.remove(flow.key)
            if injects {
                injectQueue.append((.destroy, flow))
            } else if externalCache[flow.key] != nil {
                externalCache.remove(flow)
            }
        case .apply(let kind, let flow) where injects:
            injectQueue.append((kind, flow))
            notePeerFlow(now)
        case .apply(.destroy, let flow):
            externalCache.remove(flow)
            stale?.remove(flow.key)
            lastPeerData = now
            notePeerFlow(now)
        case .apply(_, let flow):
            if case .rejected = externalCache.store(flow, now: now / 1000) { refused(now: now, environment: env) }
            stale?.remove(flow.key)
            lastPeerData = now
            notePeerFlow(now)
        case .applyExpectation(let message):
            applyExpectation(message, now: now, environment: env)
            if message.kind != .destroy || !injects { notePeerFlow(now) }
        case .bulkRequested:
            bulkOwed = true
            if now >= lastBulk + Self.bulkIntervalMilliseconds { sendRequestedBulk(now: now, environment: env) }
        case .peerRestarted:
            // Ask for its table and send ours; what it does not announce again is swept once it
            // has acknowledged the request (unreliable modes have no acknowledgement: there the
            // quiet time alone decides).
            env.log(.warning, "the peer restarted: requesting its table, sending ours (\(internalCache.count) flows)")
            suspectExternalCache(now: now)
            tableRequestedAt = now
            tableRequestExplicit = true
            mode!.requestResync()
            mode!.enqueueAll(internalCache.keys)
            enqueueAllExpectations()
        case .resyncAcknowledged:
            tableAcknowledgedAt = now
            if stale != nil {
                staleResyncAcknowledged = true
                lastPeerData = now
            }
        case .numberingAdopted:
            // The peer's earlier messages were dropped: its table comes again (the mode asked);
            // a pending sweep waits for that answer too.
            env.log(.warning, "the peer's messages numbered outside the receive window for a while: its numbering adopted, its table requested again")
            staleResyncAcknowledged = stale == nil
            tableRequestedAt = now
            tableRequestExplicit = true
        }
    }

    /// The external cache is at `HashLimit`: the peer's flow is refused. Said in the log (at most
    /// every 10 s, with how many), not only counted: after a failover those flows are missing.
    mutating func refused(now: Int64, environment env: some SyncNodeEnvironment) {
        receivedRefused &+= 1
        lastRefusedAt = now
        refusedSinceLog += 1
        guard now >= nextRefusalLog else { return }
        env.log(
            .warning,
            "external cache full (HashLimit \(externalCache.limit)): \(refusedSinceLog) flows of the peer refused; they will be missing after a failover"
        )
        refusedSinceLog = 0
        nextRefusalLog = now + Self.refusalLogMilliseconds
    }

    /// Answers the peer's resync requests: the whole internal cache, at most once a second
    /// however many requests came (each one a full table: 50 forged requests were 50 tables).
    mutating func sendRequestedBulk(now: Int64, environment env: some SyncNodeEnvironment) {
        bulkOwed = false
        lastBulk = now
        if bypassesInternalCache {
            let queued = bulkFromKernel(environment: env) ?? 0
            env.log(.notice, "resync requested by the peer: sending the kernel's table (\(queued) flows; no internal cache)")
            return
        }
        env.log(
            .notice,
            "resync requested by the peer: sending \(internalCache.count) flows\(syncsExpectations ? " and \(internalExpectations.count) expectations" : "")"
        )
        mode!.enqueueAll(internalCache.keys)
        enqueueAllExpectations()
    }

    // MARK: - After a peer's restart

    /// Every flow we hold for the peer is suspect until it announces it again (the table asked
    /// for): after a restart, or a loss beyond repair (its DESTROYs may be among what was lost).
    mutating func suspectExternalCache(now: Int64, reason: String = "after the peer's restart") {
        stale = Set(externalCache.keys)
        sweepReason = reason
        sweepUnlessLostFrom = nil
        if syncsExpectations { staleExpectations = Set(externalExpectations.keys) }
        staleResyncAcknowledged = !(settings.sync.map { if case .ftfw = $0.mode { true } else { false } } ?? false)
        lastPeerData = now
    }

    /// The peer restarted: every flow we hold for it is suspect until it announces it again (its
    /// startup announcement, or the answer to our resync request). Once it has been quiet for
    /// `staleSweepMilliseconds`, the flows it did not announce go: conntrackd keeps them forever,
    /// the ghosts of connections that ended while the peer was down.
    /// `tableIn`: the table asked for has been judged in (`followSyncProgress`) while the peer's
    /// flows keep coming (its own churn): no quiet time to wait for.
    mutating func sweepStale(now: Int64, environment env: some SyncNodeEnvironment, tableIn: Bool = false) {
        guard let keys = stale, staleResyncAcknowledged, tableIn || now - lastPeerData >= Self.staleSweepMilliseconds else { return }
        stale = nil
        if let lost = sweepUnlessLostFrom {
            sweepUnlessLostFrom = nil
            if mode!.counters.lost != lost {
                staleExpectations = nil
                return
            }
        }
        var removed = 0
        for key in keys {
            if let entry = externalCache[key] {
                externalCache.remove(entry.flow)
                removed += 1
            }
        }
        env.log(.notice, "\(sweepReason): \(removed) flows it no longer has removed from the external cache")
        if let keys = staleExpectations {
            staleExpectations = nil
            var gone = 0
            for key in keys where externalExpectations.remove(key: key) != .none { gone += 1 }
            if gone > 0 { env.log(.notice, "\(sweepReason): \(gone) expectations it no longer has removed from the external cache") }
        }
    }

    /// ALARM: the peer's flows not refreshed since `limit` (seconds) are gone at the peer.
    mutating func expireExternal(before limit: Int64, environment env: some SyncNodeEnvironment) {
        var expired: [Flow] = []
        for entry in externalCache.entries where entry.lastUpdate < limit { expired.append(entry.flow) }
        for flow in expired { externalCache.remove(flow) }
        for entry in externalExpectations.table.values where entry.lastUpdate < limit { externalExpectations.remove(entry.expectation) }
        if !expired.isEmpty {
            env.log(.notice, "\(expired.count) flows of the peer not refreshed for CacheTimeout: removed from the external cache")
        }
    }

    // MARK: - Links

    /// With several links: if the current one is down, the next one that runs takes over.
    /// Checked each second and after a failed send.
    mutating func checkLinks(now: Int64, environment env: some SyncNodeEnvironment) {
        guard linkCount > 1 else { return }
        nextLinkCheck = now + 1000
        if env.isRunning(link: currentLink) {
            noLinkLogged = false
            return
        }
        for step in 1..<linkCount {
            let candidate = (currentLink + step) % linkCount
            if env.isRunning(link: candidate) {
                switchLink(to: candidate, reason: "\(linkName(currentLink)) is down", environment: env)
                return
            }
        }
        if !noLinkLogged {
            env.log(.warning, "no dedicated link available: every sync link is down")
            noLinkLogged = true
        }
    }

    mutating func switchLink(to index: Int, reason: String, environment env: some SyncNodeEnvironment) {
        guard index != currentLink else { return }
        currentLink = index
        env.log(.warning, "device \(linkName(index)) becomes the dedicated link (\(reason))")
    }

    func linkName(_ index: Int) -> String { settings.sync?.linkNames[index] ?? "link \(index)" }
}
