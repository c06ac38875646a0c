/// The `General` section: caches, logging, the lock file, the control socket, the netlink
/// event socket, scheduling and the event filter. Every field holds a value even when the file
/// sets nothing (see `ConfigDefaults`); an optional field is nil when the feature is off.
public struct GeneralConfig: Sendable, Equatable {
    /// Buckets of each cache's hash table (`HashSize`; 0 in the file means the default).
    public var hashSize: Int
    /// Maximum entries of each cache (`HashLimit`; 0 means the default).
    public var hashLimit: Int
    /// nil = no log file; `LogFile on` resolves to `ConfigDefaults.logFile`.
    public var logFile: String?
    /// nil = off; `Syslog on` = `ConfigDefaults.syslogFacility`; else `daemon` or `local0`...`local7`.
    public var syslogFacility: String?
    public var lockFile: String
    /// The control socket (`UNIX { Path }`).
    public var unixPath: String
    /// Listen backlog of the control socket (`UNIX { Backlog }`; conntrackd ignores it).
    public var unixBacklog: Int
    /// Requested receive buffer of the netlink event socket in bytes; 0 = not set.
    /// conntrackd applies it only when it is not larger than `netlinkBufferSizeMaxGrowth`
    /// (see `effectiveNetlinkBufferSize`).
    public var netlinkBufferSize: Int
    /// Upper bound when the buffer is doubled after an overrun; 0 = not set (never grow).
    public var netlinkBufferSizeMaxGrowth: Int
    /// Seconds after an overrun before resynchronising from a kernel dump; nil = off.
    public var netlinkOverrunResync: Int?
    /// NETLINK_BROADCAST_SEND_ERROR + NETLINK_NO_ENOBUFS on the event socket.
    public var netlinkEventsReliable: Bool
    /// Poll the kernel table every N seconds instead of listening to events; 0 = event-driven.
    public var pollSeconds: Int
    /// Events handled per wake-up before other work gets a turn.
    public var eventIterationLimit: Int
    /// Process nice value (-20...19); nil = leave it.
    public var nice: Int?
    /// Real-time scheduling; nil = no `Scheduler` block (ctsync keeps the system scheduler,
    /// where conntrackd always switches to SCHED_RR 99).
    public var scheduler: SchedulerConfig?
    /// Notify systemd (Type=notify, watchdog).
    public var systemd: Bool
    /// Which flows are replicated (`Filter`).
    public var filter: FlowAcceptance

    public init(
        hashSize: Int = ConfigDefaults.hashSize, hashLimit: Int = ConfigDefaults.hashLimit, logFile: String? = nil,
        syslogFacility: String? = nil, lockFile: String = ConfigDefaults.lockFile, unixPath: String = ConfigDefaults.unixPath,
        unixBacklog: Int = ConfigDefaults.unixBacklog, netlinkBufferSize: Int = 0, netlinkBufferSizeMaxGrowth: Int = 0,
        netlinkOverrunResync: Int? = ConfigDefaults.netlinkOverrunResync, netlinkEventsReliable: Bool = false,
        pollSeconds: Int = 0, eventIterationLimit: Int = ConfigDefaults.eventIterationLimit, nice: Int? = nil,
        scheduler: SchedulerConfig? = nil, systemd: Bool = ConfigDefaults.systemd, filter: FlowAcceptance = FlowAcceptance()
    ) {
        self.hashSize = hashSize
        self.hashLimit = hashLimit
        self.logFile = logFile
        self.syslogFacility = syslogFacility
        self.lockFile = lockFile
        self.unixPath = unixPath
        self.unixBacklog = unixBacklog
        self.netlinkBufferSize = netlinkBufferSize
        self.netlinkBufferSizeMaxGrowth = netlinkBufferSizeMaxGrowth
        self.netlinkOverrunResync = netlinkOverrunResync
        self.netlinkEventsReliable = netlinkEventsReliable
        self.pollSeconds = pollSeconds
        self.eventIterationLimit = eventIterationLimit
        self.nice = nice
        self.scheduler = scheduler
        self.systemd = systemd
        self.filter = filter
    }

    /// The receive buffer to request, as conntrackd decides it (src/netlink.c): the configured
    /// size when it is set and not larger than `netlinkBufferSizeMaxGrowth`, otherwise nil
    /// (keep the system default). Setting only `NetlinkBufferSize` therefore has no effect.
    public var effectiveNetlinkBufferSize: Int? {
        netlinkBufferSize > 0 && netlinkBufferSize <= netlinkBufferSizeMaxGrowth ? netlinkBufferSize : nil
    }

    /// True when the daemon should poll (`PollSecs`) rather than listen to events.
    public var isPolling: Bool { pollSeconds > 0 }
}

/// A real-time scheduling policy for the daemon (`Scheduler { Type ... Priority ... }`).
public struct SchedulerConfig: Sendable, Equatable {
    public enum Policy: String, Sendable, Equatable {
        /// SCHED_RR (`Type RR`, the default).
        case roundRobin = "RR"
        /// SCHED_FIFO (`Type FIFO`).
        case fifo = "FIFO"
    }

    public var policy: Policy
    /// 1...99. conntrackd accepts 0 and then fails at sched_setscheduler; ctsync rejects it.
    public var priority: Int

    /// `RR` or `FIFO`, as written in `Type`.
    public var type: String { policy.rawValue }

    public init(policy: Policy = .roundRobin, priority: Int = ConfigDefaults.schedulerPriority) {
        self.policy = policy
        self.priority = priority
    }
}
