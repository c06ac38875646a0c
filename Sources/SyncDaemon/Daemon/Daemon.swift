import Conntrack
import Foundation
import Logging
import SyncEngine

#if canImport(Glibc)
    import Glibc
#endif

nonisolated(unsafe) private var signalPipeWrite: Int32 = -1

/// Milliseconds on the monotonic clock.
func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// `ctsyncd`: keeps an internal cache that is exactly the local kernel's conntrack table
/// (what the filter accepts), and answers on a UNIX control socket.
///
/// One thread owns everything: a `poll` loop over a signal pipe, the netlink event socket
/// and the control socket. Events are read and applied in batches; an overrun (lost
/// events) is repaired by a dump that makes the cache equal the kernel again — ghosts
/// removed, missing flows added — as soon as the event stream goes quiet.
public final class Daemon {
    public let config: DaemonConfig
    private let logSink: DaemonLogSink
    private let log: Logger
    private var cache: FlowCache
    private var replication: Replication?
    private var committer: Committer?
    /// `DisableExternalCache on`: writes the peer's flows into the kernel as they arrive.
    private var injector: KernelTable?
    /// Stats mode: the log of flows that ended.
    private var flowLog: FlowLog?
    /// The event groups were left for a commit; joined again (and the table re-read) after it.
    private var eventsSuspended = false
    private var nextToken = 0
    private var stats = RuntimeStats()
    private var lock: LockFile?
    private var control: ControlServer?
    private var listener: EventListener?
    private let filter: FlowAcceptance
    private let notifier = SystemdNotifier()
    private var running = true
    /// When a resync from a dump is owed (after an overrun), the deadline by which it runs.
    private var resyncDue: Int64?
    /// The last time an event arrived, to resync once the stream goes quiet.
    private var lastEventAt: Int64 = 0
    private var nextPoll: Int64?
    /// Flows loaded from the kernel's table at start that have not reported an event since.
    /// With `nf_conntrack_events=2` (the kernel's default, "only if someone listens") a flow
    /// created while nobody listened has no event extension: it never reports an update or
    /// its end. Until each has proved otherwise (an event) or ended, the table is re-read
    /// periodically, so no such flow lingers as a ghost here or at the peer.
    private var silent: Set<FlowKey> = []
    private var silentCheckDue: Int64?
    private var silentPeriod: Int64 = 1000
    private var nextWatchdog: Int64?
    private var bufferSize: Int
    private let foreground: Bool

    /// The event socket's buffer when the configuration sets no usable size.
    static let defaultBufferSize = 4 << 20
    /// Quiet time after the last event before an owed resync runs.
    static let resyncQuietMilliseconds: Int64 = 200

    public init(config: DaemonConfig, foreground: Bool) throws {
        self.config = config
        logSink = try DaemonLogSink(stderr: foreground, filePath: config.general.logFile, syslogFacility: config.general.syslogFacility)
        let sink = logSink
        log = Logger(label: "ctsyncd") { _ in DaemonLogHandler(sink: sink) }
        cache = FlowCache(limit: config.general.hashLimit, expectedCount: min(config.general.hashSize, config.general.hashLimit))
        filter = config.general.filter
        // conntrackd keeps the system default (about 208 KiB) when no usable size is set; a
        // burst overflows that at once, so ctsync starts larger.
        bufferSize = config.general.effectiveNetlinkBufferSize ?? Self.defaultBufferSize
        self.foreground = foreground
    }

    /// Runs until SIGTERM/SIGINT or `-k`. Returns the exit status.
    public func run(onReady: () -> Void = {}) -> Int32 {
        do {
            try start()
        } catch {
            log.error("\(error)")
            // In the background the log may go nowhere the operator looks: say it where
            // the starting parent reads it too.
            if !foreground { writeStandardError("ctsyncd: \(error)\n") }
            shutdown()
            return 1
        }
        onReady()
        loop()
        shutdown()
        log.notice("---- shutdown received ----")
        return 0
    }

    // MARK: - Start and stop

    private func start() throws {
        let general = config.general
        do {
            lock = try LockFile(path: general.lockFile)
        } catch {
            throw DaemonError.startup("\(error)")
        }
        log.notice("---- starting ctsyncd \(CtsyncVersion.string) with \(config.path) ----")
        for warning in config.warnings { log.warning("\(warning)") }
        // Blocks are named by their options; log the options (leaves) only.
        let inactive = config.inactiveSettings()
        for setting in inactive where !inactive.contains(where: { $0.path.hasPrefix(setting.path + ".") }) {
            log.notice("\(config.path):\(setting.line):\(setting.column): option '\(setting.path)' is parsed but not acted on yet")
        }
        if let nice = general.nice, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Int32(nice)) != 0 {
            log.warning("cannot set Nice \(nice): \(errnoText(errno))")
        }
        if let scheduler = general.scheduler { applyScheduler(scheduler) }

        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw DaemonError.startup("pipe: \(errnoText(errno))") }
        for fd in pipeFDs {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        signalPipeWrite = pipeFDs[1]
        signalPipeRead = pipeFDs[0]
        // A parent may have left these blocked (some process launchers do): a daemon that
        // cannot hear SIGTERM cannot stop in order.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&unblock, sig) }
        sigprocmask(SIG_UNBLOCK, &unblock, nil)
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig) { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWrite, &byte, 1)
            }
        }
        signal(SIGPIPE, SIG_IGN)

        do {
            control = try ControlServer(path: general.unixPath, backlog: general.unixBacklog)
        } catch {
            throw DaemonError.startup("control socket: \(error)")
        }
        stats.startedAt = monotonicMilliseconds() / 1000
        let now = stats.startedAt

        if general.pollSeconds > 0 {
            log.notice("polling the kernel table every \(general.pollSeconds) s (PollSecs)")
            nextPoll = monotonicMilliseconds()
        } else {
            // Subscribe before the dump: anything that changes meanwhile is queued, not lost.
            ensureEventsForEveryFlow()
            let listener = try EventListener(receiveBufferSize: bufferSize)
            if general.netlinkEventsReliable { try listener.makeReliable() }
            stats.bufferSize = listener.receiveBufferSize
            self.listener = listener
        }
        if let stats = config.stats, stats.logFile != nil || stats.syslogFacility != nil {
            flowLog = try FlowLog(stats)
            log.notice("logging every flow that ends to \(stats.logFile ?? "syslog") (Stats)")
        }
        let table = try KernelTable()
        let dumped = try table.dump()
        let result = cache.resync(with: dumped, now: now, accepts: filter.accepts)
        log.notice(
            "internal cache loaded: \(cache.count) flows from the kernel (\(dumped.count - cache.count) filtered out\(result.rejected > 0 ? ", \(result.rejected) over HashLimit" : ""))"
        )
        if listener != nil && cache.count > 0 {
            silent = Set(cache.keys)
            silentCheckDue = monotonicMilliseconds() + silentPeriod
        }
        if let sync = config.sync {
            let replication = try Replication(config: sync, hashLimit: general.hashLimit, now: monotonicMilliseconds(), log: log)
            // Announce what we hold (a restarted node's peer may have missed changes), and ask
            // for the peer's table when configured to.
            replication.engine.enqueueAll(cache.keys)
            if sync.mode.startupResync {
                replication.engine.requestResync()
                log.notice("resync requested from the peer (StartupResync)")
            }
            let links = replication.channels.enumerated().map { $0.element.config.interface + ($0.offset == replication.current ? " (current)" : "") }
            log.notice(
                "replicating in \(replication.modeName) mode over \(replication.channel.config.kind) link\(links.count > 1 ? "s" : "") \(links.joined(separator: ", ")) (\(replication.payloadLimit)-byte datagrams)"
            )
            self.replication = replication
            if replication.injecting {
                let injector = try KernelTable()
                // The kernel's events for what we inject carry the injector's port: not ours to replicate.
                listener?.ignoredPort = injector.portID
                self.injector = injector
                log.notice("DisableExternalCache on: the peer's flows are written into the kernel table as they arrive")
            }
        }
        if let interval = notifier.watchdogIntervalMilliseconds { nextWatchdog = monotonicMilliseconds() + interval }
        if general.systemd { notifier.notify("READY=1\nSTATUS=tracking \(cache.count) flows") }
        log.notice("control socket at \(general.unixPath); ready")
    }

    private var signalPipeRead: Int32 = -1

    private func applyScheduler(_ scheduler: SchedulerConfig) {
        var param = sched_param(sched_priority: Int32(scheduler.priority))
        let policy: Int32
        switch scheduler.type.uppercased() {
        case "RR": policy = SCHED_RR
        case "FIFO": policy = SCHED_FIFO
        default: policy = SCHED_OTHER
        }
        if sched_setscheduler(0, policy, &param) != 0 {
            log.warning("cannot set scheduler \(scheduler.type) priority \(scheduler.priority): \(errnoText(errno))")
        }
    }

    private func shutdown() {
        if config.general.systemd { notifier.notify("STOPPING=1") }
        control?.close()
        control = nil
        listener = nil
        lock?.release()
        lock = nil
        if signalPipeRead >= 0 {
            close(signalPipeRead)
            close(signalPipeWrite)
            signalPipeRead = -1
            signalPipeWrite = -1
        }
        logSink.close()
    }

    // MARK: - The loop

    private func loop() {
        while running {
            let now = monotonicMilliseconds()
            var descriptors = [pollfd(fd: signalPipeRead, events: Int16(POLLIN), revents: 0)]
            if let listener { descriptors.append(pollfd(fd: listener.fileDescriptor, events: Int16(POLLIN), revents: 0)) }
            let channelIndex = descriptors.count
            var linkOwners: [Int] = []
            for (index, link) in (replication?.channels ?? []).enumerated() {
                for descriptor in link.pollDescriptors() {
                    descriptors.append(descriptor)
                    linkOwners.append(index)
                }
            }
            let commitIndex = descriptors.count
            if let committer, committer.running { descriptors.append(pollfd(fd: committer.wakeDescriptor, events: Int16(POLLIN), revents: 0)) }
            let controlStart = descriptors.count
            if let control { descriptors += control.pollDescriptors() }
            let deadlines = [
                resyncDue, nextPoll, nextWatchdog, control?.nextDeadline, replication?.engine.nextTick, replication?.sweepDue, replication?.alarmDue,
                replication?.linkCheckDue, replication?.linkDeadline,
            ]
            .compactMap { $0 }
            let timeout = deadlines.min().map { Int32(clamping: max(0, $0 - now)) } ?? 1000
            let ready = poll(&descriptors, nfds_t(descriptors.count), resyncDue != nil ? min(timeout, Int32(Self.resyncQuietMilliseconds)) : timeout)
            if ready < 0 && errno != EINTR {
                log.error("poll failed: \(errnoText(errno))")
                return
            }
            if descriptors[0].revents != 0 { handleSignals() }
            if let listener, descriptors.count > 1, descriptors[1].revents != 0 { readEvents(listener) }
            if let replication {
                for (offset, owner) in linkOwners.enumerated() where descriptors[channelIndex + offset].revents != 0 {
                    receiveFromPeer(replication, link: owner, ready: descriptors[channelIndex + offset])
                }
            }
            if let committer, commitIndex < controlStart, descriptors[commitIndex].revents != 0 { commitFinished(committer) }
            control?.service(Array(descriptors[controlStart...]), now: monotonicMilliseconds(), handle: handleRequest)
            runTimers()
            replication?.flush(now: monotonicMilliseconds(), cache: cache)
        }
    }

    private func handleSignals() {
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = buffer.withUnsafeMutableBytes { read(signalPipeRead, $0.baseAddress, $0.count) }
        for byte in buffer.prefix(max(0, n)) {
            switch Int32(byte) {
            case SIGTERM, SIGINT:
                log.notice("signal \(byte) received, stopping")
                running = false
            case SIGHUP:
                log.notice("SIGHUP received (configuration is read at start; restart to apply changes)")
            default: break
            }
        }
    }

    private func readEvents(_ listener: EventListener) {
        let now = monotonicMilliseconds()
        let seconds = now / 1000
        // EventIterationLimit events per turn of the loop (conntrackd's "per wakeup"), read
        // as one batch; then the control socket gets its turn.
        let limit = max(1, config.general.eventIterationLimit)
        let events: [FlowEvent]
        do {
            events = try listener.next(timeoutMilliseconds: 0, limit: limit)
        } catch {
            log.error("reading events: \(error)")
            return
        }
        if events.isEmpty { return }
        lastEventAt = now
        for event in events {
            if event == .overrun {
                overrun(listener, now: now)
                continue
            }
            stats.eventsReceived += 1
            if let flowLog, case .destroy(let flow) = event, filter.accepts(flow) { flowLog.ended(flow) }
            if !silent.isEmpty, let flow = event.flow { silent.remove(flow.key) }
            let change = cache.apply(event, now: seconds, accepts: filter.accepts)
            announce(change)
            if case .rejected = change { continue }
            if let flow = event.flow, !filter.accepts(flow) { stats.eventsFiltered += 1 }
        }
    }

    /// Tells the peer about a change of the internal cache.
    private func announce(_ change: CacheChange) {
        guard let replication else { return }
        switch change {
        case .created(let key): replication.engine.flowChanged(key, created: true)
        case .updated(let key): replication.engine.flowChanged(key, created: false)
        case .destroyed(let flow): replication.engine.flowDestroyed(flow)
        case .rejected, .none: break
        }
    }

    private func receiveFromPeer(_ replication: Replication, link: Int, ready: pollfd) {
        let now = monotonicMilliseconds()
        defer { if !replication.injectQueue.isEmpty { inject(replication, now: now) } }
        for action in replication.receive(from: link, ready: ready, now: now, limit: max(1, config.general.eventIterationLimit)) {
            switch action {
            case .bulkRequested:
                log.notice("resync requested by the peer: sending \(cache.count) flows")
                replication.engine.enqueueAll(cache.keys)
            case .peerRestarted:
                // Ask for its table and send ours; what it does not announce again is swept.
                log.notice("the peer restarted: requesting its table, sending ours (\(cache.count) flows)")
                replication.peerRestarted(now: now)
                replication.engine.requestResync()
                replication.engine.enqueueAll(cache.keys)
            case .apply:
                break
            }
        }
    }

    private func overrun(_ listener: EventListener, now: Int64) {
        stats.overruns += 1
        let maxGrowth = max(config.general.netlinkBufferSizeMaxGrowth, bufferSize)
        if bufferSize < maxGrowth {
            bufferSize = min(maxGrowth, bufferSize * 2)
            try? listener.setReceiveBufferSize(bufferSize)
            stats.bufferSize = listener.receiveBufferSize
            log.warning("netlink event overrun: receive buffer grown to \(bufferSize) bytes")
        } else {
            log.warning("netlink event overrun (buffer at NetlinkBufferSizeMaxGrowth, \(maxGrowth) bytes)")
        }
        guard let delay = config.general.netlinkOverrunResync else {
            log.warning("events were lost and NetlinkOverrunResync is off: the internal cache may differ from the kernel until `ctsyncd -R`")
            return
        }
        // conntrackd waits the full delay; ctsync resyncs once the burst is over and uses the
        // configured delay only as the latest time.
        let latest = now + Int64(delay) * 1000
        resyncDue = min(resyncDue ?? latest, latest)
    }

    private func runTimers() {
        let now = monotonicMilliseconds()
        if let due = resyncDue, now >= due || now - lastEventAt >= Self.resyncQuietMilliseconds {
            resyncDue = nil
            resyncWithKernel(reason: "event overrun")
        }
        if let due = silentCheckDue, now >= due { checkSilentFlows() }
        if let due = nextPoll, now >= due {
            resyncWithKernel(reason: "poll")
            nextPoll = now + Int64(config.general.pollSeconds) * 1000
        }
        if let replication, now >= replication.engine.nextTick { replication.engine.tick(now: now) }
        if let replication, let due = replication.linkCheckDue, now >= due { replication.checkLinks(now: now) }
        if let replication, let due = replication.linkDeadline, now >= due { replication.tickLinks(now: now) }
        if let replication, let due = replication.alarmDue, now >= due {
            let expired = replication.alarmTick(now: now, cache: cache)
            if expired > 0 { log.notice("\(expired) flows of the peer not refreshed for CacheTimeout: removed from the external cache") }
        }
        if let replication, let removed = replication.sweepStale(now: now) {
            log.notice("after the peer's restart: \(removed) flows it no longer has removed from the external cache")
        }
        if let due = nextWatchdog, now >= due {
            notifier.notify("WATCHDOG=1")
            nextWatchdog = now + (notifier.watchdogIntervalMilliseconds ?? 1000)
        }
    }

    /// The kernel gives a flow its event extension when it is created and someone listens,
    /// or always with `nf_conntrack_events=1`. Set that (in this namespace) so flows created
    /// while the daemon is not running, e.g. during a restart, still report their end.
    private func ensureEventsForEveryFlow() {
        guard Self.eventsSetting == "2" else { return }
        if (try? "1\n".write(toFile: Self.eventsSettingPath, atomically: false, encoding: .utf8)) != nil {
            log.notice("net.netfilter.nf_conntrack_events was 2 (events only for flows created while someone listens): set to 1")
        } else {
            log.warning("net.netfilter.nf_conntrack_events is 2: flows created while ctsyncd is not running will not report their end")
        }
    }

    /// Re-reads the table while flows from before the subscription have not reported: those
    /// that ended leave the cache (and the peer's), changed ones are updated. Only those: a
    /// flow missing from the cache (after `-f internal`) is not brought back here.
    private func checkSilentFlows() {
        let started = monotonicMilliseconds()
        let dumped: [Flow]
        do {
            dumped = try KernelTable().dump()
        } catch {
            log.error("re-reading the kernel table failed: \(error)")
            silentCheckDue = started + silentPeriod
            return
        }
        let now = started / 1000
        var present = Set<FlowKey>(minimumCapacity: silent.count)
        var ended = 0
        for flow in dumped where silent.contains(flow.key) {
            present.insert(flow.key)
            if let cached = cache[flow.key], !cached.flow.sameState(as: flow) {
                announce(cache.apply(.update(flow, present: .all), now: now, accepts: filter.accepts))
            }
        }
        for key in silent where !present.contains(key) {
            if let cached = cache[key] {
                announce(cache.apply(.destroy(cached.flow), now: now, accepts: filter.accepts))
                ended += 1
            }
        }
        silent = present
        if ended > 0 { log.notice("\(ended) flows from before the start ended without an event: removed") }
        // Re-reading costs about 1 ms per thousand flows: keep it under 2 % of the time.
        silentPeriod = min(60_000, max(1000, (monotonicMilliseconds() - started) * 50))
        if silent.isEmpty {
            silentCheckDue = nil
            log.notice("every flow loaded at start has reported an event or ended")
        } else {
            silentCheckDue = monotonicMilliseconds() + silentPeriod
        }
    }

    @discardableResult
    private func resyncWithKernel(reason: String) -> FlowCache.ResyncResult? {
        do {
            let dumped = try KernelTable().dump()
            if !silent.isEmpty {
                // Ended silent flows are found by their absence from the table.
                var present = Set<FlowKey>(minimumCapacity: dumped.count)
                for flow in dumped { present.insert(flow.key) }
                silent.formIntersection(present)
            }
            let result = cache.resync(with: dumped, now: monotonicMilliseconds() / 1000, accepts: filter.accepts)
            stats.resyncs += 1
            stats.resyncAdded += result.added.count
            stats.resyncRemoved += result.removed.count
            // Ended while we did not hear it (polling, or events lost): logged all the same.
            if let flowLog { for flow in result.removed { flowLog.ended(flow) } }
            if let replication {
                // What the overrun hid from us, the peer did not hear either.
                for key in result.added { replication.engine.flowChanged(key, created: true) }
                for key in result.changed { replication.engine.flowChanged(key, created: false) }
                for flow in result.removed { replication.engine.flowDestroyed(flow) }
            }
            if reason == "requested" || reason == "event overrun" || !result.added.isEmpty || !result.removed.isEmpty {
                log.notice("resync with kernel table (\(reason)): \(cache.count) flows, \(result.added.count) added, \(result.removed.count) gone")
            }
            return result
        } catch {
            log.error("resync with kernel table failed: \(error)")
            resyncDue = monotonicMilliseconds() + 1000
            return nil
        }
    }

    // MARK: - Control requests

    private func handleRequest(_ request: ControlRequest, legacy: Bool) -> ControlReply {
        stats.localRequests += 1
        switch request {
        case .dump(let which, let format, let filter):
            if which == .external {
                guard let replication else { return .success() }
                return .success(bytes: dump(replication.external, format: format, filter: filter))
            }
            return .success(bytes: dump(cache, format: format, filter: filter))
        case .stats(let section, let json):
            return .success(json ? statsJSON() : statsText(section))
        case .flushCache(let which):
            var flushed = 0
            if which != .external { flushed += cache.flush() }
            if which != .internal, let replication { flushed += replication.external.flush() }
            log.notice("flushing caches (\(which.map(\.rawValue) ?? "internal and external")): \(flushed) flows")
            return .success(legacy ? "" : "{\"flushed\":\(flushed)}\n")
        case .flushKernel:
            do {
                let removed = try KernelTable().delete(matching: filter.accepts)
                stats.kernelFlushes += 1
                // Flows without an event extension do not report their deletion.
                if !silent.isEmpty { checkSilentFlows() }
                log.notice("flushed \(removed) flows from the kernel table")
                return .success(legacy ? "" : "{\"flushed\":\(removed)}\n")
            } catch {
                return .failure("flushing the kernel table failed: \(error)")
            }
        case .resync:
            guard let result = resyncWithKernel(reason: "requested") else { return .failure("resync with the kernel table failed") }
            return .success(
                legacy ? "" : "{\"flows\":\(cache.count),\"added\":\(result.added.count),\"removed\":\(result.removed.count)}\n")
        case .resetTimers:
            return resetTimers(legacy: legacy)
        case .kill:
            log.notice("stop requested on the control socket")
            running = false
            return .success()
        case .sendBulk:
            guard let replication else { return .failure("bulk send (-B) needs a Sync section") }
            replication.engine.enqueueAll(cache.keys)
            log.notice("sending bulk update: \(cache.count) flows")
            return .success(legacy ? "" : "{\"queued\":\(cache.count)}\n")
        case .requestResync:
            guard let replication else { return .failure("resync request (-n) needs a Sync section") }
            replication.engine.requestResync()
            log.notice("resync requested from the peer")
            return .success()
        case .commit:
            return commit()
        case .expectations:
            return .success()
        }
    }

    private static func name(of request: ControlRequest) -> String {
        switch request {
        case .commit: return "commit (-c)"
        case .sendBulk: return "bulk send (-B)"
        case .requestResync: return "resync request to the peer (-n)"
        default: return "this request"
        }
    }

    private func dump(_ cache: FlowCache, format: DumpFormat, filter: FlowFilter?) -> [UInt8] {
        let now = monotonicMilliseconds() / 1000
        let text = FlowTextFormat()
        var out: [UInt8] = []
        out.reserveCapacity(cache.count * 160)
        for entry in cache.entries {
            if let filter, !filter.matches(entry.flow) { continue }
            var flow = entry.flow
            let age = max(0, now - entry.since)
            switch format {
            case .text:
                // conntrackd hides the cached timeout: it only says when the cache learnt it.
                flow.timeout = nil
                out.append(contentsOf: (text.line(flow) + " [active since \(age)s]\n").utf8)
            case .xml:
                flow.timeout = nil
                out.append(contentsOf: (FlowXML.element(flow) + "\n").utf8)
            case .json:
                out.append(contentsOf: (FlowJSON.encode(flow, extra: [("active_since", "\(age)")]) + "\n").utf8)
            }
        }
        return out
    }

    private func statsText(_ section: StatsSection) -> String {
        let now = monotonicMilliseconds() / 1000
        switch section {
        case .general:
            return StatsReport.cacheSummary(name: "internal", active: cache.count, counters: cache.counters)
                + (replication?.injecting == true
                    ? StatsReport.injectSummary(replication!.injected)
                    : StatsReport.cacheSummary(
                        name: "external", active: replication?.external.count ?? 0, counters: replication?.external.counters ?? CacheCounters()))
                + StatsReport.traffic(bytes: cache.trafficBytes, packets: cache.trafficPackets)
                + (replication.map { StatsReport.channel($0.channel.counters, device: $0.channel.config.interface, kind: $0.channel.config.kind) }
                    ?? "")
                + StatsReport.messageTracking(
                    malformed: replication?.malformed.values.reduce(0, +) ?? 0, lost: replication?.engine.counters.lost ?? 0)
        case .cache:
            return StatsReport.cacheDetail(name: "internal", active: cache.count, counters: cache.counters)
                + StatsReport.cacheDetail(
                    name: "external", active: replication?.external.count ?? 0, counters: replication?.external.counters ?? CacheCounters())
        case .runtime:
            return StatsReport.runtime(stats, now: now, readFailures: control?.readFailures ?? 0, unknownRequests: control?.unknownRequests ?? 0)
        case .network:
            return StatsReport.network(
                malformed: replication?.malformed ?? [:], lost: replication?.engine.counters.lost ?? 0,
                before: replication?.engine.counters.before ?? 0)
                + (replication.map { StatsReport.channel($0.channel.counters, device: $0.channel.config.interface, kind: $0.channel.config.kind) }
                    ?? "")
        case .rsqueue:
            return "resent queue (len=\(replication?.engine.resendQueueLength ?? 0))\n"
        case .queue:
            return StatsReport.queues()
        case .link:
            guard let replication else { return "" }
            return replication.channels.enumerated().map { index, c in
                StatsReport.channel(
                    c.counters, device: c.config.interface, kind: c.config.kind, link: true,
                    status: Replication.status(c.config.interface), active: index == replication.current)
            }.joined()
        case .process, .expect:
            return ""
        }
    }

    private func statsJSON() -> String {
        func counters(_ c: CacheCounters, active: Int) -> String {
            "{\"active\":\(active),\"created\":\(c.created),\"create_failed\":\(c.createFailed),\"updated\":\(c.updated),"
                + "\"update_failed\":\(c.updateFailed),\"destroyed\":\(c.destroyed),\"destroy_failed\":\(c.destroyFailed),"
                + "\"no_space\":\(c.noSpace)}"
        }
        let now = monotonicMilliseconds() / 1000
        return "{\"uptime_seconds\":\(max(0, now - stats.startedAt)),"
            + "\"internal\":\(counters(cache.counters, active: cache.count)),"
            + "\"external\":\(counters(replication?.external.counters ?? CacheCounters(), active: replication?.external.count ?? 0)),"
            + (replication.map { r in
                let c = r.channel.counters
                let e = r.engine.counters
                return "\"sync\":{\"mode\":\"\(r.modeName)\",\"sent\":\(e.sent),\"received\":\(e.received),\"retransmitted\":\(e.retransmitted),"
                    + "\"acks_sent\":\(e.acksSent),\"nacks_sent\":\(e.nacksSent),\"nacks_received\":\(e.nacksReceived),\"lost\":\(e.lost),"
                    + "\"before\":\(e.before),\"peer_restarts\":\(e.peerRestarts),\"resend_queue\":\(r.engine.resendQueueLength),"
                    + "\"resend_queue_overflows\":\(e.resendQueueOverflows),\"malformed\":\(r.malformed.values.reduce(0, +)),"
                    + "\"datagrams_sent\":\(c.datagramsSent),\"datagrams_received\":\(c.datagramsReceived),\"bytes_sent\":\(c.bytesSent),"
                    + "\"bytes_received\":\(c.bytesReceived),\"send_errors\":\(c.sendErrors)},"
            } ?? "")
            + "\"hash_limit\":\(cache.limit),"
            + "\"traffic\":{\"bytes\":\(cache.trafficBytes),\"packets\":\(cache.trafficPackets)},"
            + "\"netlink\":{\"events_received\":\(stats.eventsReceived),\"events_filtered\":\(stats.eventsFiltered),"
            + "\"overruns\":\(stats.overruns),\"resyncs\":\(stats.resyncs),\"resync_added\":\(stats.resyncAdded),"
            + "\"resync_removed\":\(stats.resyncRemoved),\"kernel_flushes\":\(stats.kernelFlushes),"
            + "\"buffer_size\":\(stats.bufferSize)},"
            + (replication.map { r in
                r.injecting
                    ? "\"inject\":{\"created\":\(r.injected.created),\"updated\":\(r.injected.updated),\"failed\":\(r.injected.createFailed),"
                        + "\"destroyed\":\(r.injected.destroyed),\"destroy_failed\":\(r.injected.destroyFailed),\"events_ignored\":\(listener?.ignoredEvents ?? 0)},"
                    : ""
            } ?? "")
            + "\"commit\":{\"commits\":\(stats.commits),\"running\":\(committer?.running ?? false),\"created\":\(stats.commitCreated),"
            + "\"updated\":\(stats.commitUpdated),\"failed\":\(stats.commitFailed)},"
            + "\"control\":{\"requests\":\(stats.localRequests),\"read_failed\":\(control?.readFailures ?? 0),"
            + "\"unknown\":\(control?.unknownRequests ?? 0)}}\n"
    }

    // MARK: - Injection (DisableExternalCache)

    /// Writes what the peer sent into the kernel, in order, batched by runs of the same kind:
    /// new and updated flows created (or updated when they exist), destroyed ones deleted
    /// (one already gone is no failure).
    private func inject(_ replication: Replication, now: Int64) {
        guard let injector, let sync = config.sync else {
            replication.injectQueue.removeAll()
            return
        }
        let queue = replication.injectQueue
        replication.injectQueue.removeAll(keepingCapacity: true)
        var start = 0
        while start < queue.count {
            let deleting = queue[start].0 == .destroy
            var end = start
            while end < queue.count && (queue[end].0 == .destroy) == deleting { end += 1 }
            let flows = queue[start..<end].map {
                Committer.prepare(
                    CacheEntry(flow: $0.1, since: now / 1000, lastUpdate: now / 1000), now: now / 1000, commitTimeout: nil,
                    windowTracking: sync.tcpWindowTracking)
            }
            do {
                let report = try injector.write(flows, operation: deleting ? .delete : .createOrUpdate)
                if deleting {
                    replication.injected.destroyed += report.deleted
                    replication.injected.destroyFailed += report.failures.filter { $0.errno != ENOENT }.count
                } else {
                    replication.injected.created += report.created
                    replication.injected.updated += report.updated
                    replication.injected.createFailed += report.failures.count
                }
            } catch {
                log.error("injecting \(flows.count) flows from the peer failed: \(error)")
                if deleting { replication.injected.destroyFailed += flows.count } else { replication.injected.createFailed += flows.count }
            }
            start = end
        }
    }

    // MARK: - Commit

    /// Starts committing the external cache into the kernel; the answer goes out when it ends.
    private func commit() -> ControlReply {
        guard let replication, let sync = config.sync else { return .failure("commit (-c) needs a Sync section") }
        if replication.injecting {
            log.notice("commit requested: nothing to do, DisableExternalCache is on (the peer's flows are injected as they arrive)")
            return .success(CommitReport().json + "\n")
        }
        if let committer, committer.running {
            log.warning("commit requested while one is running: refused")
            return .failure("a commit is already in progress; wait for it to finish")
        }
        do {
            if committer == nil { committer = try Committer() }
        } catch {
            return .failure("commit: \(error)")
        }
        log.notice("committing the external cache: \(replication.external.count) flows")
        // Our own listener would make the kernel build an event per committed flow (and us
        // read and replicate each) while the commit runs: leave the event groups for the
        // commit and re-read the table when it ends. Only when every new flow gets its event
        // extension anyway (nf_conntrack_events=1), or the committed flows would stay silent.
        if let listener, Self.eventsForEveryFlow {
            do {
                try listener.suspend()
                eventsSuspended = true
            } catch {
                log.warning("could not pause events for the commit: \(error)")
            }
        }
        nextToken += 1
        committer!.waitingToken = nextToken
        committer!.start(
            replication.external.entries, now: monotonicMilliseconds() / 1000, commitTimeout: sync.commitTimeout,
            windowTracking: sync.tcpWindowTracking, batchSize: KernelTable.defaultBatchSize)
        stats.commits += 1
        return .deferred(token: nextToken)
    }

    private func commitFinished(_ committer: Committer) {
        guard let report = committer.collect() else { return }
        stats.commitCreated += report.created
        stats.commitUpdated += report.updated
        stats.commitFailed += report.failed
        log.notice("\(report.summary)")
        let reply: ControlReply
        if report.failed > 0 && report.created + report.updated == 0 && report.attempted > 0 {
            reply = .failure("commit failed: \(report.summary)")
        } else {
            reply = .success(report.json + "\n")
        }
        if let token = committer.waitingToken {
            committer.waitingToken = nil
            control?.complete(token: token, with: reply)
        }
        if eventsSuspended, let listener {
            eventsSuspended = false
            do {
                try listener.resume()
            } catch {
                log.error("could not resume events after the commit: \(error)")
            }
            // Subscribed again first, then the table: nothing that changed meanwhile is missed.
            resyncWithKernel(reason: "after commit")
        }
    }

    private static let eventsSettingPath = "/proc/sys/net/netfilter/nf_conntrack_events"
    /// `nf_conntrack_events` in this namespace: "1" every new flow gets its event extension,
    /// "2" only while someone listens.
    private static var eventsSetting: String? {
        (try? String(contentsOfFile: eventsSettingPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    private static var eventsForEveryFlow: Bool { eventsSetting == "1" }

    private func resetTimers(legacy: Bool) -> ControlReply {
        let purge = UInt32(clamping: config.sync?.purgeTimeout ?? 60)
        do {
            let table = try KernelTable()
            var changed: [Flow] = []
            try table.dump { flow in
                guard filter.accepts(flow), (flow.timeout ?? 0) > purge else { return }
                var f = flow
                f.timeout = purge
                changed.append(f)
            }
            let report = try table.write(changed, operation: .update)
            log.notice("reset the timers of \(report.updated) kernel flows to \(purge) s (PurgeTimeout)")
            return .success(legacy ? "" : "{\"updated\":\(report.updated),\"timeout\":\(purge)}\n")
        } catch {
            return .failure("resetting kernel timers failed: \(error)")
        }
    }
}
