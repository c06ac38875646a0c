/// The blocks of conntrackd.conf and the keywords each accepts (read_config_yy.y). The parser
/// checks every option against this table first, so an option in the wrong block gets a message
/// saying where it belongs.
enum ConfigBlock: CaseIterable, Sendable {
    case top
    case general
    case unix
    case scheduler
    case filter
    case addressList
    case sync
    case ftfw
    case notrack
    case alarm
    case udp
    case multicast
    case tcp
    case options
    case auth
    case stats
    case metrics
    case helper
    case helperType
    case helperPolicy

    /// How messages name the block.
    var label: String {
        switch self {
        case .top: return "the top level"
        case .general: return "General"
        case .unix: return "General.UNIX"
        case .scheduler: return "General.Scheduler"
        case .filter: return "General.Filter"
        case .addressList: return "General.Filter.Address"
        case .sync: return "Sync"
        case .ftfw: return "Sync.Mode FTFW"
        case .notrack: return "Sync.Mode NOTRACK"
        case .alarm: return "Sync.Mode ALARM"
        case .udp: return "Sync.UDP"
        case .multicast: return "Sync.Multicast"
        case .tcp: return "Sync.TCP"
        case .options: return "Sync.Options"
        case .auth: return "Sync.Auth"
        case .stats: return "Stats"
        case .metrics: return "Metrics"
        case .helper: return "Helper"
        case .helperType: return "Helper.Type"
        case .helperPolicy: return "Helper.Type.Policy"
        }
    }

    var keywords: Set<ConfigKeyword> {
        switch self {
        case .top: return [.general, .sync, .stats, .metrics, .helper]
        case .general:
            return [
                .hashSize, .hashLimit, .logFile, .syslog, .lockFile, .unix, .netlinkBufferSize, .socketBufferSize,
                .netlinkBufferSizeMaxGrowth, .socketBufferSizeMaxGrown, .socketBufferSizeMaxGrowth, .eventIterationLimit,
                .pollSecs, .filter, .netlinkOverrunResync, .netlinkEventsReliable, .nice, .scheduler, .systemd,
            ]
        case .unix: return [.path, .backlog]
        case .scheduler: return [.type, .priority]
        case .filter: return [.protocolKeyword, .address, .state]
        case .addressList: return [.ipv4Address, .ipv6Address]
        case .sync: return [.refreshTime, .cacheTimeout, .commitTimeout, .purgeTimeout, .multicast, .udp, .tcp, .mode, .options, .auth]
        case .ftfw: return [.resendQueueSize, .commitTimeout, .purgeTimeout, .ackWindowSize, .disableExternalCache, .startupResync]
        case .notrack: return [.commitTimeout, .purgeTimeout, .disableInternalCache, .disableExternalCache, .startupResync]
        case .alarm: return [.refreshTime, .cacheTimeout, .commitTimeout, .purgeTimeout]
        case .udp:
            return [
                .ipv4Address, .ipv6Address, .ipv4DestinationAddress, .ipv6DestinationAddress, .interface, .port, .sndSocketBuffer,
                .rcvSocketBuffer, .checksum,
            ]
        case .tcp:
            return [
                .ipv4Address, .ipv6Address, .ipv4DestinationAddress, .ipv6DestinationAddress, .interface, .port, .sndSocketBuffer,
                .rcvSocketBuffer, .checksum, .errorQueueLength,
            ]
        case .multicast:
            return [
                .ipv4Address, .ipv6Address, .ipv4Interface, .ipv6Interface, .interface, .group, .sndSocketBuffer, .rcvSocketBuffer,
                .checksum,
            ]
        case .options: return [.tcpWindowTracking, .expectationSync, .ignoreReceived, .updateDelay]
        case .auth: return [.keyFile, .algorithm, .nodeId]
        case .metrics: return [.ipv4Address, .ipv6Address, .port]
        case .stats: return [.logFile, .syslog]
        // conntrackd's grammar also takes QueueNum, QueueLen and Policy directly in Helper and
        // a Type inside a Type (helper_type doubles as helper_type_line); their values then
        // land on whichever Type block closes next. ctsync only takes them inside a Type.
        case .helper: return [.type, .setup]
        case .helperType: return [.queueNum, .queueLen, .policy]
        case .helperPolicy: return [.expectMax, .expectTimeout]
        }
    }

    /// The blocks where a keyword is an option, for "belongs in" hints.
    static func blocks(accepting keyword: ConfigKeyword) -> [ConfigBlock] {
        allCases.filter { $0 != .top && $0.keywords.contains(keyword) }
    }
}
