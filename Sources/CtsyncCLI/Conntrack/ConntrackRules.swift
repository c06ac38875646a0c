import Conntrack

/// conntrack's rules for which options go with which command (its `commands_v_options`
/// table), checked in conntrack's order so the first problem named is the one conntrack names.
extension ConntrackArguments {
    struct Rule {
        var required: Set<Option> = []
        var allowed: Set<Option> = []
        /// `-s` with `-d`, or `-r` with `-q`: one whole pair is needed.
        var pairs = false
    }

    static let tupleOptions: Set<Option> = [.src, .dst, .replySrc, .replyDst]

    static func rule(for command: Command, table: Table) -> Rule {
        if table == .expect {
            switch command {
            case .list: return Rule(allowed: [.family, .output])
            case .event: return Rule(allowed: [.output])
            case .create:
                return Rule(
                    required: [.src, .dst, .protonum, .timeout, .tupleSrc, .tupleDst, .maskSrc, .maskDst], allowed: [.replySrc, .replyDst, .status])
            case .delete, .get: return Rule(required: [.src, .dst, .protonum], allowed: [.replySrc, .replyDst])
            default: return Rule()
            }
        }
        switch command {
        case .list:
            return Rule(allowed: [
                .src, .dst, .replySrc, .replyDst, .protonum, .status, .zero, .maskSrc, .maskDst, .mark, .family, .srcNat, .dstNat,
                .output, .secmark, .anyNat, .zone, .label, .origZone, .replyZone, .labelmap,
            ])
        case .create, .add:
            return Rule(
                required: [.protonum, .timeout],
                allowed: tupleOptions.union([.status, .natRange, .mark, .srcNat, .dstNat, .zone, .labelAdd, .origZone, .replyZone]),
                pairs: true)
        case .update:
            return Rule(allowed: [
                .src, .dst, .replySrc, .replyDst, .protonum, .timeout, .status, .maskSrc, .maskDst, .mark, .id, .family, .srcNat,
                .dstNat, .output, .label, .labelAdd, .labelDel, .labelmap,
            ])
        case .delete:
            return Rule(allowed: [
                .src, .dst, .replySrc, .replyDst, .protonum, .timeout, .status, .maskSrc, .maskDst, .mark, .id, .family, .srcNat,
                .dstNat, .output, .zone, .label, .origZone, .replyZone, .labelmap,
            ])
        case .get:
            return Rule(required: [.protonum], allowed: tupleOptions.union([.id, .output, .label, .labelmap]), pairs: true)
        case .flush:
            return Rule(allowed: [.family])
        case .event:
            return Rule(allowed: [
                .src, .dst, .replySrc, .replyDst, .protonum, .eventMask, .maskSrc, .maskDst, .mark, .family, .srcNat, .dstNat, .output,
                .secmark, .bufferSize, .anyNat, .zone, .label, .origZone, .replyZone, .labelmap,
            ])
        case .help:
            return Rule(allowed: [.protonum])
        case .version, .count, .stats:
            return Rule()
        }
    }

    /// Checks the parsed line against conntrack's rules.
    func check() throws(Problem) {
        guard let command else { return }
        if table == .dying || table == .unconfirmed, command != .list {
            throw Problem("Can't do that command with tables `dying' and `unconfirmed'")
        }
        if table == .expect {
            switch command {
            case .update: throw Problem("Can't do --update on expectations")
            case .add: throw Problem("Can't do --add on expectations")
            default: break
            }
        }
        if given.contains(.anyNat) && (given.contains(.srcNat) || given.contains(.dstNat)) {
            throw Problem("cannot specify `--src-nat' or `--dst-nat' with `--any-nat'")
        }
        let rule = Self.rule(for: command, table: table)
        for option in Option.allCases {
            let present = given.contains(option)
            if !present && rule.required.contains(option) {
                throw Problem("You need to supply the `--\(option.rawValue)' option for this command")
            }
            if present && !rule.required.contains(option) && !rule.allowed.contains(option) {
                throw Problem("Illegal option `--\(option.rawValue)' with this command")
            }
        }
        if rule.pairs {
            let original = given.contains(.src) && given.contains(.dst)
            let reply = given.contains(.replySrc) && given.contains(.replyDst)
            if !original && !reply {
                if given.contains(.replySrc) || given.contains(.replyDst) {
                    throw Problem("you have to specify `--reply-src' and `--reply-dst'")
                }
                throw Problem("you have to specify `--src' and `--dst'")
            }
        }
        if command != .help, let proto {
            if table == .expect { try checkExpectationPorts(command, proto) } else { try checkProtocolOptions(command, proto) }
        }
        if command == .list && given.contains(.zero) {
            let filtering: Set<Option> = [
                .protonum, .src, .dst, .replySrc, .replyDst, .mark, .secmark, .status, .id, .zone, .label, .origZone, .replyZone,
            ]
            if !given.isDisjoint(with: filtering) { throw Problem("Can't use -z with filtering parameters") }
        }
        if [.list, .delete, .update, .event].contains(command) {
            if given.contains(.maskSrc) && !given.contains(.src) { throw Problem("Can't use --mask-src without --src") }
            if given.contains(.maskDst) && !given.contains(.dst) { throw Problem("Can't use --mask-dst without --dst") }
        }
        if given.contains(.labelAdd) && labelDelete != nil {
            throw Problem("cannot use --label-add and --label-del at the same time")
        }
        if output.contains(.save) && output != .save {
            throw Problem("cannot combine save output with any other output type, use -o save only")
        }
    }

    /// An expectation's ports: the master's (`--sport`, `--dport`), and to create one also the
    /// expected tuple's and the mask's (`--tuple-port-*`, `--mask-port-*`).
    private func checkExpectationPorts(_ command: Command, _ proto: L4Protocol) throws(Problem) {
        guard proto.hasPorts else { return }
        var required: [ProtoOption] = [.sport, .dport]
        if command == .create { required += [.tuplePortSrc, .tuplePortDst, .maskPortSrc, .maskPortDst] }
        for option in required where !givenProto.contains(option) {
            throw Problem("You need to supply the `--\(option.rawValue)' option for this command")
        }
    }

    /// The protocol's own options: ports (or GRE keys) in whole pairs and the state where a
    /// flow is made, ICMP type and code where one flow is named.
    private func checkProtocolOptions(_ command: Command, _ proto: L4Protocol) throws(Problem) {
        let makes = command == .create || command == .add
        let names = command == .get
        var allowed: Set<ProtoOption> = []
        if proto.hasPorts {
            allowed = [.sport, .dport, .replyPortSrc, .replyPortDst]
            if proto == .tcp || proto == .sctp || proto == .dccp { allowed.insert(.state) }
            if proto == .sctp && (makes || command == .update || names) { allowed.formUnion([.origVtag, .replyVtag]) }
            if proto == .dccp && makes { allowed.insert(.role) }
        } else if proto.isICMP {
            allowed = [.icmpType, .icmpCode, .icmpID]
        }
        if [.flush, .count, .stats, .version].contains(command) { allowed = [] }
        for option in ProtoOption.allCases where givenProto.contains(option) && !allowed.contains(option) {
            throw Problem("Illegal option `--\(option.rawValue)' with this command")
        }
        guard makes || names else { return }
        if proto.hasPorts {
            let original = givenProto.contains(.sport) && givenProto.contains(.dport)
            let reply = givenProto.contains(.replyPortSrc) && givenProto.contains(.replyPortDst)
            let anyOriginal = givenProto.contains(.sport) || givenProto.contains(.dport)
            let anyReply = givenProto.contains(.replyPortSrc) || givenProto.contains(.replyPortDst)
            if !original && !reply || anyOriginal && !original && !reply || anyReply && !reply && !original {
                if proto == .gre { throw Problem("you have to specify `--srckey' and `--dstkey'") }
                throw Problem("you have to specify `--sport' and `--dport'")
            }
            if makes && (proto == .tcp || proto == .sctp || proto == .dccp) && !givenProto.contains(.state) {
                throw Problem("You need to supply the `--state' option for this command")
            }
            if makes && proto == .sctp {
                for option in [ProtoOption.origVtag, .replyVtag] where !givenProto.contains(option) {
                    throw Problem("You need to supply the `--\(option.rawValue)' option for this command")
                }
            }
            if makes && proto == .dccp && !givenProto.contains(.role) {
                throw Problem("You need to supply the `--role' option for this command")
            }
            if let state {
                let known: [String]
                let valid: Bool
                switch proto {
                case .tcp: (known, valid) = (TCPState.stateNames + ["LISTEN"], TCPState(name: state) != nil)
                case .sctp: (known, valid) = (SCTPState.stateNames, SCTPState(name: state) != nil)
                default: (known, valid) = (DCCPState.stateNames, DCCPState(name: state) != nil)
                }
                if !valid {
                    throw Problem("unknown \(proto.name.uppercased()) state `\(state)' (one of \(known.joined(separator: ", ")))")
                }
            }
        } else if proto.isICMP {
            for option in [ProtoOption.icmpType, .icmpCode] where !givenProto.contains(option) {
                throw Problem(
                    "You need to supply the `--\(proto == .icmpv6 ? "icmpv6" : "icmp")-\(option == .icmpType ? "type" : "code")' option for this command"
                )
            }
        }
    }
}
