import FlowModel
import SyncProtocol

/// The kernel mirror: the internal cache kept exactly equal to the kernel's table (what the
/// filter accepts), from events, and from dumps wherever events cannot be trusted.
extension SyncNode {
    /// Applies a batch of kernel events (in order) and queues what changed for the peer. An
    /// `.overrun` (events were lost) owes a resync from a dump: it runs once the stream has been
    /// quiet for `resyncQuietMilliseconds`, or at the latest after `NetlinkOverrunResync`.
    public mutating func kernelEvents(_ events: some Collection<FlowEvent>, now: Int64, environment env: some SyncNodeEnvironment) {
        guard !events.isEmpty else { return }
        if bypassesInternalCache {
            bypassEvents(events, now: now, environment: env)
            return
        }
        lastEventAt = now
        let seconds = now / 1000
        let accepts = settings.accepts
        // One switch per event, the flow bound once and the filter asked once: at the kernel's
        // batched rate every copy of a flow and every call counts.
        for event in events {
            switch event {
            case .overrun:
                overrun(now: now, environment: env)
            case .new(let flow):
                mirror.eventsReceived += 1
                if !silent.isEmpty { silent.remove(flow.key) }
                if accepts(flow) {
                    announce(internalCache.store(flow, now: seconds))
                } else {
                    mirror.eventsFiltered += 1
                    announce(internalCache.removeIfPresent(flow))
                }
            case .destroy(let flow):
                mirror.eventsReceived += 1
                if !silent.isEmpty { silent.remove(flow.key) }
                let accepted = accepts(flow)
                if settings.logsEndedFlows && accepted { env.flowEnded(flow) }
                if !accepted { mirror.eventsFiltered += 1 }
                announce(internalCache.removeIfPresent(flow))
            case .update(let flow, _):
                mirror.eventsReceived += 1
                if !silent.isEmpty { silent.remove(flow.key) }
                let change = internalCache.apply(event, now: seconds, accepts: accepts)
                announce(change)
                if case .rejected = change { continue }
                if !accepts(flow) { mirror.eventsFiltered += 1 }
            }
        }
    }

    /// `DisableInternalCache`: each event the filter accepts goes to the peer as it is (NEW,
    /// UPDATE, DESTROY), nothing is kept. Events lost to an overrun: conntrackd loses them for
    /// good; ctsync sends the kernel's table again (what was created or changed comes through;
    /// an end that was lost cannot be told).
    private mutating func bypassEvents(_ events: some Collection<FlowEvent>, now: Int64, environment env: some SyncNodeEnvironment) {
        let accepts = settings.accepts
        for event in events {
            switch event {
            case .overrun:
                mirror.overruns += 1
                env.log(.warning, "events were lost (no internal cache: DisableInternalCache): sending the kernel's table again")
                _ = bulkFromKernel(environment: env)
            case .new(let flow), .update(let flow, _):
                mirror.eventsReceived += 1
                guard accepts(flow) else {
                    mirror.eventsFiltered += 1
                    continue
                }
                let created: Bool
                if case .new = event { created = true } else { created = false }
                bypass[flow.key] = flow
                mode!.flowChanged(flow.key, created: created)
                if created { bypassCounters.new += 1 } else { bypassCounters.updated += 1 }
            case .destroy(let flow):
                mirror.eventsReceived += 1
                guard accepts(flow) else {
                    mirror.eventsFiltered += 1
                    continue
                }
                bypass.removeValue(forKey: flow.key)
                mode!.flowDestroyed(flow)
                bypassCounters.destroyed += 1
            }
        }
    }

    /// `DisableInternalCache`: the kernel's table (what the filter accepts) queued for the peer
    /// as new flows, for `-B` and the peer's resync request; nil when it cannot be read.
    mutating func bulkFromKernel(environment env: some SyncNodeEnvironment) -> Int? {
        let dumped: [Flow]
        do {
            dumped = try env.readKernelTable()
        } catch {
            env.log(.error, "reading the kernel table for a bulk send failed: \(error)")
            return nil
        }
        var queued = 0
        for flow in dumped where settings.accepts(flow) {
            bypass[flow.key] = flow
            mode!.flowChanged(flow.key, created: true)
            queued += 1
        }
        return queued
    }

    private mutating func overrun(now: Int64, environment env: some SyncNodeEnvironment) {
        mirror.overruns += 1
        guard let delay = settings.overrunResyncSeconds else {
            env.log(.warning, "events were lost and NetlinkOverrunResync is off: the internal cache may differ from the kernel until `ctsyncd -R`")
            return
        }
        // conntrackd waits the full delay; ctsync resyncs once the burst is over and uses the
        // configured delay only as the latest time.
        let latest = now + Int64(delay) * 1000
        resyncDue = min(resyncDue ?? latest, latest)
    }

    /// Makes the internal cache equal to a dump of the kernel's table and tells the peer what
    /// that changed (what an overrun hid from us, the peer did not hear either). Nil when the
    /// table could not be read (then it is tried again a second later).
    @discardableResult
    public mutating func resyncWithKernel(reason: String, now: Int64, environment env: some SyncNodeEnvironment) -> FlowCache.ResyncResult? {
        let dumped: [Flow]
        do {
            dumped = try env.readKernelTable()
        } catch {
            env.log(.error, "resync with kernel table failed: \(error)")
            resyncDue = now + 1000
            return nil
        }
        if !silent.isEmpty {
            // Ended silent flows are found by their absence from the table.
            var present = Set<FlowKey>(minimumCapacity: dumped.count)
            for flow in dumped { present.insert(flow.key) }
            silent.formIntersection(present)
        }
        let result = internalCache.resync(with: dumped, now: now / 1000, accepts: settings.accepts)
        mirror.resyncs += 1
        mirror.resyncAdded += result.added.count
        mirror.resyncRemoved += result.removed.count
        // Ended while we did not hear it (polling, or events lost): logged all the same.
        if settings.logsEndedFlows { for flow in result.removed { env.flowEnded(flow) } }
        if mode != nil {
            for key in result.added { mode!.flowChanged(key, created: true) }
            for key in result.changed { mode!.flowChanged(key, created: false) }
            for flow in result.removed { mode!.flowDestroyed(flow) }
        }
        if reason == "requested" || reason == "event overrun" || !result.added.isEmpty || !result.removed.isEmpty {
            env.log(
                .notice,
                "resync with kernel table (\(reason)): \(internalCache.count) flows, \(result.added.count) added, \(result.removed.count) gone")
        }
        return result
    }

    /// The kernel's table was flushed by us (`-F`): flows without an event extension do not
    /// report their deletion, so the silent ones are looked for at once.
    public mutating func kernelFlushed(now: Int64, environment env: some SyncNodeEnvironment) {
        if !silent.isEmpty { checkSilentFlows(now: now, environment: env) }
    }

    /// With `nf_conntrack_events=2` (the kernel's default, "only if someone listens") a flow
    /// created while nobody listened has no event extension: it never reports an update or its
    /// end. The flows loaded at start are such suspects until each has reported an event or
    /// ended; meanwhile the table is re-read periodically, and only for them: those that ended
    /// leave the cache (and the peer's), changed ones are updated. A flow missing from the cache
    /// (after `-f internal`) is not brought back here.
    mutating func checkSilentFlows(now: Int64, environment env: some SyncNodeEnvironment) {
        let dumped: [Flow]
        do {
            dumped = try env.readKernelTable()
        } catch {
            env.log(.error, "re-reading the kernel table failed: \(error)")
            silentCheckDue = now + 1000
            return
        }
        let seconds = now / 1000
        var present = Set<FlowKey>(minimumCapacity: silent.count)
        var ended = 0
        for flow in dumped where silent.contains(flow.key) {
            present.insert(flow.key)
            if let cached = internalCache[flow.key], !cached.flow.sameState(as: flow) {
                announce(internalCache.apply(.update(flow, present: .all), now: seconds, accepts: settings.accepts))
            }
        }
        for key in silent where !present.contains(key) {
            if let cached = internalCache[key] {
                announce(internalCache.apply(.destroy(cached.flow), now: seconds, accepts: settings.accepts))
                ended += 1
            }
        }
        silent = present
        if ended > 0 { env.log(.notice, "\(ended) flows from before the start ended without an event: removed") }
        if silent.isEmpty {
            silentCheckDue = nil
            env.log(.notice, "every flow loaded at start has reported an event or ended")
        } else {
            silentCheckDue = now + Self.silentPeriod(flows: dumped.count)
        }
    }

    /// How often the silent flows are looked for: a dump costs about 1 ms per thousand flows,
    /// kept under 2 % of the time (at least a second, at most a minute).
    static func silentPeriod(flows: Int) -> Int64 {
        min(60_000, max(1000, Int64(flows) / 20))
    }

    /// Flows loaded at start that have neither reported an event nor ended yet.
    public var silentFlowCount: Int { silent.count }
}
