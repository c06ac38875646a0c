import FlowModel

/// Whether a filter list names what to keep (`Accept`) or what to drop (`Ignore`).
public enum FilterPolicy: String, Sendable, Equatable {
    case accept = "Accept"
    case ignore = "Ignore"
}

/// An address with a prefix length: a single host when the prefix is the family's full width.
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    public init(address: IPAddress, prefixLength: Int? = nil) {
        self.address = address
        self.prefixLength = prefixLength ?? (address.family == .ipv4 ? 32 : 128)
    }

    public var family: AddressFamily { address.family }

    /// True for an address of the same family whose first `prefixLength` bits match.
    public func contains(_ other: IPAddress) -> Bool {
        other.matches(network: address, prefix: prefixLength)
    }

    public var description: String {
        let full = family == .ipv4 ? 32 : 128
        return prefixLength == full ? address.description : "\(address)/\(prefixLength)"
    }
}

/// `Protocol Accept|Ignore { ... }`: layer-4 protocols by number.
public struct ProtocolFilter: Sendable, Equatable {
    public var policy: FilterPolicy
    /// In file order, without repeats.
    public var protocols: [L4Protocol]

    public init(policy: FilterPolicy, protocols: [L4Protocol]) {
        self.policy = policy
        self.protocols = protocols
    }
}

/// `Address Accept|Ignore { IPv4_address ...; IPv6_address ... }`.
public struct AddressFilter: Sendable, Equatable {
    public var policy: FilterPolicy
    /// In file order, without repeats; hosts and networks of both families.
    public var networks: [IPNetwork]

    public init(policy: FilterPolicy, networks: [IPNetwork]) {
        self.policy = policy
        self.networks = networks
    }
}

/// `State Accept|Ignore { ... for TCP }`: TCP states (conntrackd filters no other protocol's).
public struct TCPStateFilter: Sendable, Equatable {
    public var policy: FilterPolicy
    /// In file order, without repeats.
    public var states: [TCPState]

    public init(policy: FilterPolicy, states: [TCPState]) {
        self.policy = policy
        self.states = states
    }
}

/// The `General { Filter }` block: which flows the daemon replicates.
///
/// `accepts(_:)` is conntrackd 1.4.7's user-space filter (src/filter.c: ct_filter_check)
/// exactly:
/// - no list at all (`isEmpty`, also for an empty `Filter { }`): every flow is accepted;
/// - the lists are checked in order protocol, address, state, and a flow must pass every list
///   that is present;
/// - a list that is present but empty still decides: `Protocol Accept { }` accepts nothing,
///   `Protocol Ignore { }` everything;
/// - addresses are matched against the original source and the **reply source** (the real
///   destination after DNAT), never the original destination; a flow matches when either
///   address is inside any listed host or network of its family. `Accept` keeps matching flows,
///   `Ignore` drops them. A family without entries never matches, so `Address Accept` with
///   only IPv4 entries drops every IPv6 flow;
/// - the state list applies to TCP flows that carry a state; other flows pass it.
///
/// With `fromKernelspace` conntrackd lets the kernel filter events (a BPF filter with the same
/// lists) and skips this check for events, but still applies it to kernel dumps (start-up,
/// resync, polling); `accepts(_:)` is the check to apply wherever ctsync filters in user space.
public struct FlowAcceptance: Sendable, Equatable {
    /// `Filter From Kernelspace` (true) versus `From Userspace` or plain `Filter` (false).
    public var fromKernelspace: Bool
    public var protocols: ProtocolFilter?
    public var addresses: AddressFilter?
    public var tcpStates: TCPStateFilter?

    public init(
        fromKernelspace: Bool = false, protocols: ProtocolFilter? = nil, addresses: AddressFilter? = nil,
        tcpStates: TCPStateFilter? = nil
    ) {
        self.fromKernelspace = fromKernelspace
        self.protocols = protocols
        self.addresses = addresses
        self.tcpStates = tcpStates
    }

    /// True when no list is configured: every flow is accepted.
    public var isEmpty: Bool { protocols == nil && addresses == nil && tcpStates == nil }

    public func accepts(_ flow: Flow) -> Bool {
        if let protocols {
            let listed = protocols.protocols.contains(flow.proto)
            if listed != (protocols.policy == .accept) { return false }
        }
        if let addresses {
            let source = flow.original.source
            let replySource = flow.reply.source
            let listed = addresses.networks.contains { network in
                network.family == flow.family && (network.contains(source) || network.contains(replySource))
            }
            if listed != (addresses.policy == .accept) { return false }
        }
        if let tcpStates, flow.proto == .tcp, let tcp = flow.tcp {
            let listed = tcpStates.states.contains(tcp.state)
            if listed != (tcpStates.policy == .accept) { return false }
        }
        return true
    }
}
