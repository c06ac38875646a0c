import ArgumentParser
import Conntrack

/// Argument parsers shared by every subcommand. Their errors say only what was expected: the
/// argument parser puts the value and the option in front ("The value 'tpc' is invalid for
/// '-p <proto>': unknown protocol: expected tcp, ..."), so nothing is said twice.
enum ArgumentParsing {
    static func address(_ option: String) -> @Sendable (String) throws -> AddressMatch {
        { text in
            guard let a = AddressMatch(text) else {
                throw ValidationError("expected an IPv4 or IPv6 address, optionally with /prefix")
            }
            return a
        }
    }

    static func exactAddress(_ option: String) -> @Sendable (String) throws -> IPAddress {
        { text in
            guard let a = IPAddress(text) else {
                throw ValidationError("expected an IPv4 or IPv6 address")
            }
            return a
        }
    }

    static func port(_ option: String) -> @Sendable (String) throws -> UInt16 {
        { text in
            guard let p = UInt16(text) else { throw ValidationError("expected a port number 0-65535") }
            return p
        }
    }

    static func proto(_ text: String) throws -> L4Protocol {
        guard let p = L4Protocol(name: text) else {
            throw ValidationError(
                "unknown protocol: expected tcp, udp, udplite, icmp, icmpv6, sctp, dccp, gre or a number 0-255")
        }
        return p
    }

    static func family(_ text: String) throws -> AddressFamily {
        guard let f = AddressFamily(name: text) else {
            throw ValidationError("unknown family: expected ipv4 or ipv6")
        }
        return f
    }

    static func mark(_ option: String) -> @Sendable (String) throws -> MarkMatch {
        { text in
            guard let m = MarkMatch(text) else {
                throw ValidationError("expected a 32-bit number, optionally /mask (decimal or 0x hex)")
            }
            return m
        }
    }

    static func status(_ text: String) throws -> FlowStatus {
        guard let s = FlowStatus(list: text) else {
            throw ValidationError(
                "unknown status: expected a comma list of \(FlowStatus.bitNames.joined(separator: ", ")) or UNSET")
        }
        return s
    }

    static func uint<T: FixedWidthInteger & SendableMetatype>(_ option: String, _ what: String) -> @Sendable (String) throws -> T {
        { text in
            let value: T? = text.lowercased().hasPrefix("0x") ? T(text.dropFirst(2), radix: 16) : T(text)
            guard let value else {
                throw ValidationError("expected a number 0-\(T.max)")
            }
            return value
        }
    }

    static func label(_ text: String) throws -> Int {
        guard let bit = ConnLabelMap.bit(text, path: nil) else {
            throw ValidationError("expected a bit number 0-\(FlowLabels.maxBit) or a name from \(ConnLabelMap.defaultPath)")
        }
        return bit
    }

    /// Checks a state name against the protocol (TCP when none is given).
    static func checkState(_ state: String, proto: L4Protocol?) throws {
        let p = proto ?? .tcp
        let known: [String]
        let valid: Bool
        switch p {
        case .tcp: (known, valid) = (TCPState.stateNames + ["LISTEN"], TCPState(name: state) != nil)
        case .sctp: (known, valid) = (SCTPState.stateNames, SCTPState(name: state) != nil)
        case .dccp: (known, valid) = (DCCPState.stateNames, DCCPState(name: state) != nil)
        default:
            throw ValidationError("--state needs -p tcp, sctp or dccp; \(p.name) flows have no state")
        }
        if !valid {
            throw ValidationError("unknown \(p.name) state '\(state)' for --state: expected one of \(known.joined(separator: ", "))")
        }
    }
}
