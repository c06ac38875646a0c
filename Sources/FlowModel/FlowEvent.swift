/// A conntrack event from the kernel.
public enum FlowEvent: Sendable, Equatable {
    case new(Flow)
    /// The kernel sends only what changed for some attributes (protocol state, labels,
    /// helper, sequence adjustment): `present` says which of them this message carried, so a
    /// mirror merges (`Flow.merging`) instead of losing them.
    case update(Flow, present: FlowAttributes)
    case destroy(Flow)
    /// Events were lost (the kernel reported ENOBUFS, or a message did not fit):
    /// whoever mirrors the table owes a resync from a dump.
    case overrun

    public var flow: Flow? {
        switch self {
        case .new(let f), .update(let f, _), .destroy(let f): return f
        case .overrun: return nil
        }
    }

    public var name: String {
        switch self {
        case .new: return "NEW"
        case .update: return "UPDATE"
        case .destroy: return "DESTROY"
        case .overrun: return "OVERRUN"
        }
    }
}

/// Which event kinds to subscribe to.
public struct EventTypes: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let new = EventTypes(rawValue: 1)  // NF_NETLINK_CONNTRACK_NEW
    public static let update = EventTypes(rawValue: 2)  // NF_NETLINK_CONNTRACK_UPDATE
    public static let destroy = EventTypes(rawValue: 4)  // NF_NETLINK_CONNTRACK_DESTROY
    public static let all: EventTypes = [.new, .update, .destroy]

    /// Parses `NEW,UPDATE,DESTROY` (case-insensitive), as conntrack's `-e`.
    public init?(list: String) {
        var result: EventTypes = []
        for part in list.split(separator: ",") {
            switch part.uppercased() {
            case "NEW": result.insert(.new)
            case "UPDATE", "UPDATES": result.insert(.update)
            case "DESTROY": result.insert(.destroy)
            case "ALL": result.formUnion(.all)
            default: return nil
            }
        }
        if result.isEmpty { return nil }
        self = result
    }
}
