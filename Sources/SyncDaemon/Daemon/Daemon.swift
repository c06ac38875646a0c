import Configuration
import Conntrack
import ControlProtocol
import Foundation
import Logging
import SyncEngine
import SyncProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `ctsyncd`: the thin shell around a `SyncNode`. It owns the I/O and nothing else: the kernel
/// event socket, the sync links, the control socket, the signal pipe, the committer's thread.
///
/// One thread runs everything in a `poll` loop over the registered sources, with one deadline:
/// the earliest of the node's (`SyncNode.nextDeadline`) and the shell's own (watchdog, control
/// timeouts, TCP reconnection). Each source hands its input to the node in batches (events up to
/// `EventIterationLimit`, datagrams as they come), and after each turn the node's queued
/// messages go out. Every decision about flows is the node's; the files of this folder are
/// one concept each: signals, the kernel mirror's socket, control requests, statistics,
/// injection, commit.
public final class Daemon {
    public let config: DaemonConfig
    let logSink: DaemonLogSink
    let log: Logger
    var node: SyncNode
    var environment: DaemonEnvironment
    var committer: Committer?
    /// The event groups were left for a commit; joined again (and the table re-read) after it.
    var eventsSuspended = false
    var nextToken = 0
    var stats = RuntimeStats()
    var lock: LockFile?
    var control: ControlServer?
    /// The `Metrics` endpoint and its metrics, when configured.
    var metricsServer: MetricsServer?
    var metrics: DaemonMetrics?
    var listener: EventListener?
    /// `ExpectationSync`: the kernel's expectation events.
    var expectationListener: ExpectationListener?
    /// The commit running includes the expectations (`-c`), after the flows.
    var commitIncludesExpectations = false
    let filter: FlowAcceptance
    let notifier = SystemdNotifier()
    var running = true
    var nextWatchdog: Int64?
    /// When `HeapTrim.trim` runs next.
    var nextHeapTrim: Int64 = 0
    /// When the event queue's spare memory is given back next (it is kept through a burst).
    var nextSpareRelease: Int64 = 0
    var bufferSize: Int
    let foreground: Bool
    var signals: SignalPipe?

    /// Datagrams read from a link in one turn of the loop (into the external cache, injecting).
    static let datagramsPerTurn = 32
    static let datagramsPerTurnInjecting = 4
    /// The event socket's buffer when the configuration sets no usable size.
    static let defaultBufferSize = 4 << 20
    /// How long a stopping daemon waits for queued messages to leave and a commit to end.
    static let drainMilliseconds: Int64 = 2000
    static let commitDrainMilliseconds: Int64 = 30_000

    public init(config: DaemonConfig, foreground: Bool) throws {
        self.config = config
        logSink = try DaemonLogSink(stderr: foreground, filePath: config.general.logFile, syslogFacility: config.general.syslogFacility)
        let sink = logSink
        let log = Logger(label: "ctsyncd") { _ in DaemonLogHandler(sink: sink) }
        self.log = log
        filter = config.general.filter
        // conntrackd keeps the system default (about 208 KiB) when no usable size is set; a
        // burst overflows that at once, so ctsync starts larger.
        bufferSize = config.general.effectiveNetlinkBufferSize ?? Self.defaultBufferSize
        self.foreground = foreground
        // A placeholder until `start` opens the links: it reserves nothing. (A first node sized
        // for HashSize, freed at start, raised glibc's mmap threshold and left the external
        // cache's growth fragmenting the heap: twice the RSS per replicated flow.)
        var placeholder = Self.nodeSettings(config, links: nil)
        placeholder.expectedFlows = 0
        placeholder.hashLimit = 0
        node = SyncNode(settings: placeholder, now: monotonicMilliseconds())
        environment = DaemonEnvironment(links: nil, log: log, flowLog: nil, injector: nil)
    }

    /// The node's settings from the configuration (and the opened links' figures).
    static func nodeSettings(_ config: DaemonConfig, links: SyncLinks?) -> SyncNode.Settings {
        let general = config.general
        let filter = general.filter
        var sync: SyncNode.Sync?
        if let s = config.sync {
            let mode: SyncModeSettings
            switch s.mode {
            case .ftfw(let o): mode = .ftfw(windowSize: o.ackWindowSize, resendQueueSize: o.resendQueueSize)
            case .notrack: mode = .notrack
            case .alarm(let o): mode = .alarm(refreshTime: o.refreshTime, cacheTimeout: o.cacheTimeout)
            }
            sync = SyncNode.Sync(
                mode: mode, linkCount: links?.count ?? s.channels.count, initialLink: s.defaultChannelIndex, linkNames: links?.names ?? [],
                payloadLimit: links?.payloadLimit ?? 1472,
                encodeOptions: EncodeOptions(includeTimeout: s.commitTimeout == nil, includeWindowScale: s.tcpWindowTracking),
                injects: !s.mode.usesExternalCache, startupResync: s.mode.startupResync,
                initialSequence: UInt32(truncatingIfNeeded: time(nil)))
            sync?.updateDelayMilliseconds = Int64(s.updateDelayMilliseconds)
            sync?.bypassesInternalCache = !s.mode.usesInternalCache
        }
        let expectationSync = config.sync?.expectationSync ?? .off
        var settings = SyncNode.Settings(
            hashLimit: general.hashLimit, expectedFlows: general.hashSize, accepts: { filter.accepts($0) },
            listensToEvents: general.pollSeconds <= 0, pollMilliseconds: general.pollSeconds > 0 ? Int64(general.pollSeconds) * 1000 : nil,
            overrunResyncSeconds: general.netlinkOverrunResync,
            logsEndedFlows: config.stats.map { $0.logFile != nil || $0.syslogFacility != nil } ?? false, sync: sync)
        if expectationSync.isEnabled { settings.expectations = { expectationSync.accepts(helperName: $0.helper) } }
        if let ignored = config.sync?.ignoredReceived, !ignored.isEmpty {
            settings.receivedTransform = { flow in
                var f = flow
                if ignored.contains(.labels) { f.labels = FlowLabels() }
                if ignored.contains(.helper) {
                    f.helper = nil
                    f.status.remove(.helper)
                }
                if ignored.contains(.mark) { f.mark = 0 }
                if ignored.contains(.sequenceAdjustment) {
                    f.sequenceAdjustment = nil
                    f.status.remove(.seqAdjust)
                }
                return f
            }
        }
        return settings
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
        drain()
        shutdown()
        log.notice("---- shutdown received ----")
        return 0
    }

    // MARK: - Start and stop

    private func start() throws {
        HeapTrim.configure()
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
        if config.helper != nil {
            log.notice(
                "Helper: user-space helpers are out of scope for ctsyncd (protocol parsers on NFQUEUE in the packet path, not state sync); use the kernel's helpers (nft ct helper), whose expectations ExpectationSync replicates, or run conntrackd's cthelper beside ctsyncd"
            )
        }
        if let nice = general.nice, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Int32(nice)) != 0 {
            log.warning("cannot set Nice \(nice): \(errnoText(errno))")
        }
        if let scheduler = general.scheduler { applyScheduler(scheduler) }
        signals = try SignalPipe()

        do {
            control = try ControlServer(path: general.unixPath, backlog: general.unixBacklog)
        } catch {
            throw DaemonError.startup("control socket: \(error)")
        }
        if let metricsConfig = config.metrics {
            metricsServer = try MetricsServer(metricsConfig)
            metrics = DaemonMetrics()
            log.notice("metrics: serving GET /metrics on \(metricsServer!.address)")
        }
        stats.startedAt = monotonicMilliseconds() / 1000

        if general.pollSeconds > 0 {
            log.notice("polling the kernel table every \(general.pollSeconds) s (PollSecs)")
        } else {
            // Subscribe before the dump: anything that changes meanwhile is queued, not lost.
            ensureEventsForEveryFlow()
            let listener = try EventListener(receiveBufferSize: bufferSize)
            if general.netlinkEventsReliable { try listener.makeReliable() }
            stats.bufferSize = listener.receiveBufferSize
            self.listener = listener
        }
        var flowLog: FlowLog?
        if let stats = config.stats, stats.logFile != nil || stats.syslogFacility != nil {
            flowLog = try FlowLog(stats)
            log.notice("logging every flow that ends to \(stats.logFile ?? "syslog") (Stats)")
        }
        var links: SyncLinks?
        var injector: Injector?
        if let sync = config.sync {
            let authenticator = try SyncAuthSetup.authenticator(sync)
            links = try SyncLinks(sync, auth: authenticator)
            if let authenticator {
                log.notice(
                    "sync frames sealed with \(authenticator.algorithm.name), key id \(authenticator.keys[0].id)\(authenticator.keys.count > 1 ? " (key id \(authenticator.keys[1].id) also accepted)" : ""), node id \(authenticator.nodeId); frames that do not verify are dropped"
                )
            }
            if !sync.mode.usesExternalCache {
                let made = try Injector(windowTracking: sync.tcpWindowTracking)
                // The kernel's events for what we inject carry the injector's port: not ours to replicate.
                listener?.ignoredPort = made.portID
                injector = made
            }
        }
        var expectationWriter: KernelTable?
        if injector != nil && syncsExpectations { expectationWriter = try KernelTable() }
        try openExpectationListener(ignoring: expectationWriter?.portID)
        let now = monotonicMilliseconds()
        node = SyncNode(settings: Self.nodeSettings(config, links: links), now: now)
        environment = DaemonEnvironment(links: links, log: log, flowLog: flowLog, injector: injector, expectationWriter: expectationWriter)
        try node.start(now: now, environment: environment)
        if let links, let sync = config.sync {
            let names = links.names.enumerated().map { $0.element + ($0.offset == node.currentLink ? " (current)" : "") }
            log.notice(
                "replicating in \(sync.mode.name) mode over \(links[node.currentLink].config.kind) link\(names.count > 1 ? "s" : "") \(names.joined(separator: ", ")) (\(links.payloadLimit)-byte datagrams)"
            )
            if injector != nil {
                log.notice("DisableExternalCache on: the peer's flows are written into the kernel table as they arrive")
            }
            switch sync.expectationSync {
            case .off: break
            case .all: log.notice("replicating expectations (ExpectationSync on): \(node.internalExpectations.count) held")
            case .helpers(let names):
                log.notice(
                    "replicating the expectations of \(names.joined(separator: ", ")) (ExpectationSync): \(node.internalExpectations.count) held")
            }
        }
        if let interval = notifier.watchdogIntervalMilliseconds { nextWatchdog = monotonicMilliseconds() + interval }
        if general.systemd { notifier.notify("READY=1\nSTATUS=tracking \(node.internalCache.count) flows") }
        log.notice("control socket at \(general.unixPath); ready")
    }

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

    /// After the loop ends (SIGTERM, `-k`): what the node has queued goes out, a stream link's
    /// backlog gets a moment to leave, and a running commit ends or is reported as cut short.
    private func drain() {
        let started = monotonicMilliseconds()
        node.transmit(now: started, environment: environment)
        if let links = environment.links {
            while links.links.contains(where: \.hasPendingOutput), monotonicMilliseconds() - started < Self.drainMilliseconds {
                var descriptors = links.links.flatMap { $0.pollDescriptors() }
                for index in descriptors.indices { descriptors[index].events |= Int16(POLLOUT) }
                guard poll(&descriptors, nfds_t(descriptors.count), 100) >= 0 || errno == EINTR else { break }
                for (index, link) in links.links.enumerated() {
                    for ready in link.pollDescriptors() {
                        if let result = descriptors.first(where: { $0.fd == ready.fd }), result.revents != 0 {
                            link.handle(result, now: monotonicMilliseconds(), limit: 1) { bytes in
                                node.receive(bytes, link: index, now: monotonicMilliseconds(), environment: environment)
                            }
                        }
                    }
                }
            }
            if links.links.contains(where: \.hasPendingOutput) {
                log.warning("stopping with messages for the peer still queued on the link (waited \(Self.drainMilliseconds) ms)")
            }
        }
        if let committer, committer.running {
            log.notice("waiting for the running commit to end before stopping")
            var descriptor = pollfd(fd: committer.wakeDescriptor, events: Int16(POLLIN), revents: 0)
            let deadline = monotonicMilliseconds() + Self.commitDrainMilliseconds
            while committer.running, monotonicMilliseconds() < deadline {
                if poll(&descriptor, 1, 100) > 0 { commitFinished(committer) }
            }
            if committer.running {
                log.error(
                    "stopping while a commit still runs (\(Self.commitDrainMilliseconds / 1000) s): the kernel holds part of the external cache")
            }
        }
    }

    private func shutdown() {
        if config.general.systemd { notifier.notify("STOPPING=1") }
        control?.close()
        control = nil
        metricsServer?.close()
        metricsServer = nil
        listener = nil
        expectationListener = nil
        lock?.release()
        lock = nil
        signals?.close()
        signals = nil
        logSink.close()
    }

    // MARK: - The loop

    /// The sources polled in one turn, in order, and what each one is.
    private enum Source: Equatable {
        case signals
        case events
        case expectationEvents
        case link(Int)
        case commit
        case control
        case metrics
    }

    private func loop() {
        while running {
            let now = monotonicMilliseconds()
            var descriptors: [pollfd] = []
            var sources: [Source] = []
            func register(_ fd: Int32, _ source: Source) {
                descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                sources.append(source)
            }
            if let signals { register(signals.readDescriptor, .signals) }
            if let listener { register(listener.fileDescriptor, .events) }
            if let expectationListener { register(expectationListener.fileDescriptor, .expectationEvents) }
            for (index, link) in (environment.links?.links ?? []).enumerated() {
                for descriptor in link.pollDescriptors() {
                    descriptors.append(descriptor)
                    sources.append(.link(index))
                }
            }
            if let committer, committer.running { register(committer.wakeDescriptor, .commit) }
            let controlStart = descriptors.count
            if let control {
                for descriptor in control.pollDescriptors() {
                    descriptors.append(descriptor)
                    sources.append(.control)
                }
            }
            let metricsStart = descriptors.count
            if let metricsServer {
                for descriptor in metricsServer.pollDescriptors() {
                    descriptors.append(descriptor)
                    sources.append(.metrics)
                }
            }
            let deadline = [node.nextDeadline, nextWatchdog, control?.nextDeadline, environment.links?.nextDeadline, metricsServer?.nextDeadline]
                .compactMap { $0 }.min()
            // Events already queued (drained, not yet handled) are work to do now.
            let eventsQueued = (listener?.pendingCount ?? 0) > 0
            let timeout = eventsQueued ? 0 : deadline.map { Int32(clamping: max(0, $0 - now)) } ?? 1000
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready < 0 && errno != EINTR {
                log.error("poll failed: \(errnoText(errno))")
                return
            }
            for (index, source) in sources.enumerated() where descriptors[index].revents != 0 || (source == .events && eventsQueued) {
                switch source {
                case .signals: handleSignals()
                case .events: if let listener { readEvents(listener) }
                case .expectationEvents: if let expectationListener { readExpectationEvents(expectationListener) }
                case .link(let link): receiveFromPeer(link: link, ready: descriptors[index])
                case .commit: if let committer { commitFinished(committer) }
                case .control, .metrics: break  // serviced together below
                }
            }
            control?.service(Array(descriptors[controlStart..<metricsStart]), now: monotonicMilliseconds(), handle: handleRequest)
            if let metricsServer, let metrics {
                metricsServer.service(Array(descriptors[metricsStart...]), now: monotonicMilliseconds()) { metrics.render(statistics()) }
            }
            runTimers()
            node.transmit(now: monotonicMilliseconds(), environment: environment)
        }
    }

    private func receiveFromPeer(link: Int, ready: pollfd) {
        guard let links = environment.links else { return }
        let now = monotonicMilliseconds()
        // Injecting (hot standby), a few datagrams a turn (each up to 21 flows): what they carry
        // is in the kernel before the next ones are read. Into the external cache, more a turn.
        let perTurn = environment.injector != nil ? Self.datagramsPerTurnInjecting : Self.datagramsPerTurn
        links[link].handle(ready, now: now, limit: min(perTurn, max(1, config.general.eventIterationLimit))) { bytes in
            node.receive(bytes, link: link, now: now, environment: environment)
        }
    }

    private func runTimers() {
        let now = monotonicMilliseconds()
        node.tick(now: now, environment: environment)
        environment.links?.tick(now: now)
        environment.links?.reportUnknownPeers(now: now, log: log)
        if let due = nextWatchdog, now >= due {
            notifier.notify("WATCHDOG=1")
            nextWatchdog = now + (notifier.watchdogIntervalMilliseconds ?? 1000)
        }
        if now >= nextSpareRelease {
            listener?.releaseSpareCapacity()
            nextSpareRelease = now + 1000
        }
        if now >= nextHeapTrim {
            HeapTrim.trim()
            nextHeapTrim = now + HeapTrim.intervalMilliseconds
        }
    }
}
