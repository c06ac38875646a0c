import FlowModel

/// The `Sync` section: how flows are replicated to the peer (mode, dedicated links, options).
public struct SyncConfig: Sendable, Equatable {
    public var mode: ModeConfig
    /// Fixed timeout (seconds) given to committed entries; nil = derived from each entry's age.
    /// nil as well when `DisableExternalCache` is on, since conntrackd then ignores it.
    public var commitTimeout: Int?
    /// Seconds `-t` waits before flushing the kernel table.
    public var purgeTimeout: Int
    /// UDP, Multicast or TCP links in file order: one type only, at most four.
    public var channels: [ChannelConfig]
    /// `Options { TCPWindowTracking }`: keep TCP window tracking on committed flows.
    public var tcpWindowTracking: Bool
    /// `Options { ExpectationSync }`.
    public var expectationSync: ExpectationSync
    /// `Options { IgnoreReceived { ... } }` (new in ctsync): attributes of the peer's flows that
    /// are dropped on arrival, never cached, committed or injected.
    public var ignoredReceived: ReceivedAttributes = []
    /// Buffers a TCP channel keeps while it cannot send (`ErrorQueueLength`, global in conntrackd
    /// even though it is written inside a TCP block).
    public var errorQueueLength: Int
    /// `Auth { ... }` (new in ctsync): every frame on the links sealed and verified; nil = off,
    /// conntrackd's unauthenticated wire.
    public var auth: AuthConfig?
    /// `Options { UpdateDelay ms }` (new in ctsync): how long queued changes may wait for
    /// more before they go out (several updates of one flow become one message); 0 = off.
    public var updateDelayMilliseconds: Int = ConfigDefaults.updateDelayMilliseconds

    public init(
        mode: ModeConfig, commitTimeout: Int? = nil, purgeTimeout: Int = ConfigDefaults.purgeTimeout, channels: [ChannelConfig],
        tcpWindowTracking: Bool = false, expectationSync: ExpectationSync = .off,
        errorQueueLength: Int = ConfigDefaults.errorQueueLength
    ) {
        self.mode = mode
        self.commitTimeout = commitTimeout
        self.purgeTimeout = purgeTimeout
        self.channels = channels
        self.tcpWindowTracking = tcpWindowTracking
        self.expectationSync = expectationSync
        self.errorQueueLength = errorQueueLength
    }

    /// The channel used first: the one marked `Default`, else the first.
    public var defaultChannelIndex: Int { channels.firstIndex { $0.isDefault } ?? 0 }
}

/// Attributes of a received flow that `IgnoreReceived` can drop: host-local values (labels set by
/// a classifier such as nDPI have crashed kernels they were replayed on), helpers the backup
/// should assign itself, marks with a meaning on one host only, sequence adjustments.
public struct ReceivedAttributes: OptionSet, Sendable, Equatable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let labels = ReceivedAttributes(rawValue: 1)
    public static let helper = ReceivedAttributes(rawValue: 2)
    public static let mark = ReceivedAttributes(rawValue: 4)
    public static let sequenceAdjustment = ReceivedAttributes(rawValue: 8)

    /// The names the configuration takes (any case).
    public static let names: [(String, ReceivedAttributes)] = [
        ("Labels", .labels), ("Helper", .helper), ("Mark", .mark), ("SequenceAdjustment", .sequenceAdjustment),
    ]
}

/// The replication protocol and its options.
public enum ModeConfig: Sendable, Equatable {
    /// Reliable: sequence numbers, acknowledgements and retransmission.
    case ftfw(FTFWOptions)
    /// Best effort: send and forget.
    case notrack(NotrackOptions)
    /// Periodic refresh of every entry; the peer expires what is not refreshed.
    case alarm(AlarmOptions)

    /// `FTFW`, `NOTRACK` or `ALARM`.
    public var name: String {
        switch self {
        case .ftfw: return "FTFW"
        case .notrack: return "NOTRACK"
        case .alarm: return "ALARM"
        }
    }

    /// False when the received state is injected straight into the kernel.
    public var usesExternalCache: Bool {
        switch self {
        case .ftfw(let o): return !o.disableExternalCache
        case .notrack(let o): return !o.disableExternalCache
        case .alarm: return true
        }
    }

    public var usesInternalCache: Bool {
        if case .notrack(let o) = self { return !o.disableInternalCache }
        return true
    }

    public var startupResync: Bool {
        switch self {
        case .ftfw(let o): return o.startupResync
        case .notrack(let o): return o.startupResync
        case .alarm: return false
        }
    }
}

/// `Mode FTFW { ... }`.
public struct FTFWOptions: Sendable, Equatable {
    /// Messages kept until acknowledged.
    public var resendQueueSize: Int
    /// Messages received in sequence before an acknowledgement is sent.
    public var ackWindowSize: Int
    public var disableExternalCache: Bool
    /// Ask the peer for a full resync at start-up.
    public var startupResync: Bool

    public init(
        resendQueueSize: Int = ConfigDefaults.resendQueueSize, ackWindowSize: Int = ConfigDefaults.ackWindowSize,
        disableExternalCache: Bool = false, startupResync: Bool = false
    ) {
        self.resendQueueSize = resendQueueSize
        self.ackWindowSize = ackWindowSize
        self.disableExternalCache = disableExternalCache
        self.startupResync = startupResync
    }
}

/// `Mode NOTRACK { ... }`.
public struct NotrackOptions: Sendable, Equatable {
    /// Send kernel events straight to the peer without keeping them.
    public var disableInternalCache: Bool
    public var disableExternalCache: Bool
    public var startupResync: Bool

    public init(disableInternalCache: Bool = false, disableExternalCache: Bool = false, startupResync: Bool = false) {
        self.disableInternalCache = disableInternalCache
        self.disableExternalCache = disableExternalCache
        self.startupResync = startupResync
    }
}

/// `Mode ALARM { ... }`.
public struct AlarmOptions: Sendable, Equatable {
    /// Each entry is re-sent within this many seconds.
    public var refreshTime: Int
    /// Received entries not refreshed for this many seconds are dropped.
    public var cacheTimeout: Int

    public init(refreshTime: Int = ConfigDefaults.refreshTime, cacheTimeout: Int = ConfigDefaults.cacheTimeout) {
        self.refreshTime = refreshTime
        self.cacheTimeout = cacheTimeout
    }
}

/// Which expectations are replicated (`Options { ExpectationSync ... }`).
public enum ExpectationSync: Sendable, Equatable {
    /// Expectations are not replicated.
    case off
    /// Every expectation (`ExpectationSync on`, and an empty list, as in conntrackd).
    case all
    /// Expectations created by these helpers (names in file order, no repeats).
    case helpers([String])

    public var isEnabled: Bool { self != .off }

    /// conntrackd's test (src/filter.c: exp_filter_find): a listed name matches a helper name
    /// that starts with it, ignoring case (so `sip` covers `sip-5060`); an expectation without
    /// a helper name matches no list.
    public func accepts(helperName: String?) -> Bool {
        switch self {
        case .off: return false
        case .all: return true
        case .helpers(let names):
            guard let helperName else { return false }
            let lowered = helperName.lowercased()
            return names.contains { lowered.hasPrefix($0.lowercased()) }
        }
    }
}

/// The transport of a dedicated link.
public enum ChannelKind: String, Sendable, Equatable {
    case udp = "UDP"
    case multicast = "Multicast"
    case tcp = "TCP"
}

/// One dedicated link to the peer, as written in a `UDP`, `Multicast` or `TCP` block.
public enum ChannelConfig: Sendable, Equatable {
    case udp(UnicastChannel)
    case multicast(MulticastChannel)
    case tcp(UnicastChannel)

    public var kind: ChannelKind {
        switch self {
        case .udp: return .udp
        case .multicast: return .multicast
        case .tcp: return .tcp
        }
    }

    /// Marked `Default`: the link used first.
    public var isDefault: Bool {
        switch self {
        case .udp(let c), .tcp(let c): return c.isDefault
        case .multicast(let c): return c.isDefault
        }
    }

    /// The interface the link is bound to (its MTU sizes the send buffer).
    public var interface: String {
        switch self {
        case .udp(let c), .tcp(let c): return c.interface
        case .multicast(let c): return c.interface
        }
    }

    public var family: AddressFamily {
        switch self {
        case .udp(let c), .tcp(let c): return c.localAddress.family
        case .multicast(let c): return c.group.family
        }
    }
}

/// A UDP or TCP link: listen on `localAddress:port`, send to `destination:port`.
public struct UnicastChannel: Sendable, Equatable {
    public var isDefault: Bool
    /// `IPv4_address` / `IPv6_address`.
    public var localAddress: IPAddress
    /// `IPv4_Destination_Address` / `IPv6_Destination_Address`.
    public var destination: IPAddress
    public var port: UInt16
    public var interface: String
    /// `SndSocketBuffer`; nil = system default.
    public var sendBufferSize: Int?
    /// `RcvSocketBuffer`; nil = system default.
    public var receiveBufferSize: Int?
    /// UDP checksums on sent datagrams (`Checksum`, on unless turned off).
    public var checksum: Bool
    /// `ErrorQueueLength` as written in this TCP block; nil for UDP or when not written.
    public var errorQueueLength: Int?

    public init(
        isDefault: Bool = false, localAddress: IPAddress, destination: IPAddress, port: UInt16, interface: String,
        sendBufferSize: Int? = nil, receiveBufferSize: Int? = nil, checksum: Bool = true, errorQueueLength: Int? = nil
    ) {
        self.isDefault = isDefault
        self.localAddress = localAddress
        self.destination = destination
        self.port = port
        self.interface = interface
        self.sendBufferSize = sendBufferSize
        self.receiveBufferSize = receiveBufferSize
        self.checksum = checksum
        self.errorQueueLength = errorQueueLength
    }
}

/// A multicast link: join `group` on `interface`, send to and receive on `group:port`.
public struct MulticastChannel: Sendable, Equatable {
    public var isDefault: Bool
    /// `IPv4_address` / `IPv6_address`: the multicast group address.
    public var group: IPAddress
    /// `Group`: the UDP port (conntrackd's name for it).
    public var port: UInt16
    /// `IPv4_interface`: the local address to join and send from (IPv4 only); nil = kernel's choice.
    public var interfaceAddress: IPAddress?
    public var interface: String
    public var sendBufferSize: Int?
    public var receiveBufferSize: Int?
    public var checksum: Bool

    public init(
        isDefault: Bool = false, group: IPAddress, port: UInt16, interfaceAddress: IPAddress? = nil, interface: String,
        sendBufferSize: Int? = nil, receiveBufferSize: Int? = nil, checksum: Bool = true
    ) {
        self.isDefault = isDefault
        self.group = group
        self.port = port
        self.interfaceAddress = interfaceAddress
        self.interface = interface
        self.sendBufferSize = sendBufferSize
        self.receiveBufferSize = receiveBufferSize
        self.checksum = checksum
    }
}

/// The `Auth` block of the Sync section.
public struct AuthConfig: Sendable, Equatable {
    public enum Algorithm: String, Sendable, CaseIterable {
        case hmacSHA256 = "HMAC-SHA256"
        case chacha20Poly1305 = "ChaCha20-Poly1305"
    }
    /// The key file: `ID SECRET` lines (see docs/security.md); checked when the daemon starts.
    public var keyFile: String
    public var algorithm: Algorithm
    /// This node's id in its frames; nil = derived from the first link's local address.
    public var nodeId: UInt32?
    public init(keyFile: String, algorithm: Algorithm = .hmacSHA256, nodeId: UInt32? = nil) {
        self.keyFile = keyFile
        self.algorithm = algorithm
        self.nodeId = nodeId
    }
}
