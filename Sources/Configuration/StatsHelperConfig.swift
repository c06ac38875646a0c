import FlowModel

/// The `Stats` section: conntrackd as a statistics collector that logs destroyed flows.
/// Parsed; ctsync does not run a stats mode yet.
public struct StatsConfig: Sendable, Equatable {
    /// nil = no log file; `LogFile on` = `ConfigDefaults.statsLogFile`.
    public var logFile: String?
    /// nil = off; `Syslog on` = `daemon`.
    public var syslogFacility: String?

    public init(logFile: String? = nil, syslogFacility: String? = nil) {
        self.logFile = logFile
        self.syslogFacility = syslogFacility
    }
}

/// The `Helper` section: user-space connection-tracking helpers fed through NFQUEUE.
/// Parsed; ctsync does not run helpers.
public struct HelperConfig: Sendable, Equatable {
    /// `Setup on`: register the helper's private data size with the kernel.
    public var setup: Bool
    /// `Type NAME FAMILY PROTOCOL { ... }` blocks in file order.
    public var types: [HelperType]

    public init(setup: Bool = false, types: [HelperType] = []) {
        self.setup = setup
        self.types = types
    }
}

/// One `Type` block of the `Helper` section.
public struct HelperType: Sendable, Equatable {
    /// One of the helpers conntrack-tools 1.4.7 ships (amanda, dhcpv6, ftp, mdns, rpc, sane,
    /// slp, ssdp, tftp, tns), for a protocol it supports.
    public var name: String
    /// `inet` or `inet6`.
    public var family: AddressFamily
    /// `tcp` or `udp`.
    public var proto: L4Protocol
    /// NFQUEUE number (`QueueNum`, 0 when not written).
    public var queueNumber: Int
    /// `QueueLen`; nil = kernel default (1024).
    public var queueLength: Int?
    public var policies: [HelperPolicy]

    public init(
        name: String, family: AddressFamily, proto: L4Protocol, queueNumber: Int = 0, queueLength: Int? = nil,
        policies: [HelperPolicy] = []
    ) {
        self.name = name
        self.family = family
        self.proto = proto
        self.queueNumber = queueNumber
        self.queueLength = queueLength
        self.policies = policies
    }
}

/// `Policy NAME { ExpectMax ...; ExpectTimeout ... }`. conntrackd replaces the helper's whole
/// built-in policy with this one, so a field left out becomes 0 there.
public struct HelperPolicy: Sendable, Equatable {
    public var name: String
    public var expectMax: Int?
    public var expectTimeout: Int?

    public init(name: String, expectMax: Int? = nil, expectTimeout: Int? = nil) {
        self.name = name
        self.expectMax = expectMax
        self.expectTimeout = expectTimeout
    }
}
