/// The values conntrackd 1.4.7 uses for options a file leaves out (read_config_yy.y:init_config,
/// include/conntrackd.h, src/local.c, src/run.c), plus the two ctsync chooses where conntrackd
/// has none. docs/configuration.md lists the same table.
public enum ConfigDefaults {
    /// Buckets of each cache's hash table.
    public static let hashSize = 65536
    /// Maximum entries in each cache.
    public static let hashLimit = 262144
    /// `LogFile on`.
    public static let logFile = "/var/log/conntrackd.log"
    /// `LogFile on` inside `Stats`.
    public static let statsLogFile = "/var/log/conntrackd-stats.log"
    /// `Syslog on`.
    public static let syslogFacility = "daemon"
    /// conntrackd's DEFAULT_LOCKFILE (the man page says /var/lock/conntrack.lock; the code wins).
    public static let lockFile = "/var/lock/conntrackd.lock"
    /// conntrackd has no default and fails to start without `UNIX { Path }`; ctsync uses the
    /// path every conntrackd example and the man page use.
    public static let unixPath = "/var/run/conntrackd.ctl"
    /// conntrackd's fixed listen backlog (UNIX_SOCKET_BACKLOG); its `Backlog` option is ignored.
    public static let unixBacklog = 100
    /// `NetlinkOverrunResync on`, and what an unset or zero value means.
    public static let netlinkOverrunResync = 30
    public static let eventIterationLimit = 100
    /// conntrackd built with systemd support (as Debian builds it) enables it unless told not to.
    public static let systemd = true
    /// `Priority` when a `Scheduler` block sets none: sched_get_priority_max(SCHED_RR).
    public static let schedulerPriority = 99
    public static let resendQueueSize = 131072
    public static let ackWindowSize = 300
    public static let refreshTime = 60
    public static let cacheTimeout = 180
    public static let purgeTimeout = 60
    /// Buffers kept for a TCP channel that cannot send (the global `ErrorQueueLength`).
    public static let errorQueueLength = 128
    /// At most this many UDP/Multicast/TCP blocks (MULTICHANNEL_MAX).
    public static let maximumChannels = 4
    /// `Sync.Options.UpdateDelay`: queued changes wait at most this long (ms) for more.
    public static let updateDelayMilliseconds = 20
}
