/// The attributes of a flow message (conntrackd's `enum nta_attr`), with the length rules its
/// receiver enforces. Lengths are `nta_len`: the 4-byte attribute header plus the payload, before
/// padding.
public enum FlowAttribute: UInt16, CaseIterable, Sendable {
    case ipv4 = 0
    case ipv6 = 1
    case l4proto = 2
    case port = 3
    case tcpState = 4
    case status = 5
    case timeout = 6
    case mark = 7
    case masterIPv4 = 8
    case masterIPv6 = 9
    case masterL4proto = 10
    case masterPort = 11
    case snatIPv4 = 12
    case dnatIPv4 = 13
    case spatPort = 14
    case dpatPort = 15
    case natSequenceAdjustment = 16
    case sctpState = 17
    case sctpVerificationTagOriginal = 18
    case sctpVerificationTagReply = 19
    case dccpState = 20
    case dccpRole = 21
    case icmpType = 22
    case icmpCode = 23
    case icmpID = 24
    case tcpWindowScaleOriginal = 25
    case tcpWindowScaleReply = 26
    case helperName = 27
    case labels = 28
    case snatIPv6 = 29
    case dnatIPv6 = 30
    case synproxy = 31
    case zone = 32

    /// `NTA_MAX`: ids from here on make conntrackd reject the whole message.
    public static let limit: UInt16 = 33

    /// conntrackd's name for the attribute.
    public var name: String { "NTA_" + Self.names[Int(rawValue)] }

    private static let names = [
        "IPV4", "IPV6", "L4PROTO", "PORT", "TCP_STATE", "STATUS", "TIMEOUT", "MARK", "MASTER_IPV4", "MASTER_IPV6",
        "MASTER_L4PROTO", "MASTER_PORT", "SNAT_IPV4", "DNAT_IPV4", "SPAT_PORT", "DPAT_PORT", "NAT_SEQ_ADJ", "SCTP_STATE",
        "SCTP_VTAG_ORIG", "SCTP_VTAG_REPL", "DCCP_STATE", "DCCP_ROLE", "ICMP_TYPE", "ICMP_CODE", "ICMP_ID",
        "TCP_WSCALE_ORIG", "TCP_WSCALE_REPL", "HELPER_NAME", "LABELS", "SNAT_IPV6", "DNAT_IPV6", "SYNPROXY", "ZONE",
    ]

    /// The exact `nta_len` of a fixed-size attribute; nil for the variable ones (helper, labels).
    public var fixedLength: Int? { Self.fixedLengths[Int(rawValue)] }

    /// The largest `nta_len` of a variable attribute: 16 for the helper name (conntrackd compares
    /// `NFCT_HELPER_NAME_MAX` with the length including the header, so 11 characters and the NUL),
    /// 1028 for labels (`NTA_LABELS_MAX_SIZE` plus the header).
    public var maximumLength: Int? {
        switch self {
        case .helperName: return 16
        case .labels: return 4 + 1024
        default: return nil
        }
    }

    private static let fixedLengths: [Int?] = [
        12, 36, 5, 8, 5, 8, 8, 8, 12, 36,
        5, 8, 8, 8, 6, 6, 28, 5, 8, 8,
        5, 5, 5, 5, 6, 5, 5, nil, nil, 20,
        20, 16, 6,
    ]
}

/// The attributes of an expectation message (conntrackd's `enum nta_exp_attr`).
public enum ExpectationAttribute: UInt16, CaseIterable, Sendable {
    case masterIPv4 = 0
    case masterIPv6 = 1
    case masterL4proto = 2
    case masterPort = 3
    case expectIPv4 = 4
    case expectIPv6 = 5
    case expectL4proto = 6
    case expectPort = 7
    case maskIPv4 = 8
    case maskIPv6 = 9
    case maskL4proto = 10
    case maskPort = 11
    case timeout = 12
    case flags = 13
    case expectationClass = 14
    case natIPv4 = 15
    case natPort = 16
    case natL4proto = 17
    case natDirection = 18
    case helperName = 19
    case function = 20

    /// `NTA_EXP_MAX`.
    public static let limit: UInt16 = 21

    public var name: String { "NTA_EXP_" + Self.names[Int(rawValue)] }

    private static let names = [
        "MASTER_IPV4", "MASTER_IPV6", "MASTER_L4PROTO", "MASTER_PORT", "EXPECT_IPV4", "EXPECT_IPV6", "EXPECT_L4PROTO",
        "EXPECT_PORT", "MASK_IPV4", "MASK_IPV6", "MASK_L4PROTO", "MASK_PORT", "TIMEOUT", "FLAGS", "CLASS", "NAT_IPV4",
        "NAT_PORT", "NAT_L4PROTO", "NAT_DIR", "HELPER_NAME", "FN",
    ]

    /// The exact `nta_len` of a fixed-size attribute; nil for the two strings.
    public var fixedLength: Int? { Self.fixedLengths[Int(rawValue)] }

    /// The largest `nta_len` of a string: 16 for the helper name, 32 for the function name.
    public var maximumLength: Int? {
        switch self {
        case .helperName: return 16
        case .function: return 32
        default: return nil
        }
    }

    private static let fixedLengths: [Int?] = [
        12, 36, 5, 8, 12, 36, 5, 8, 12, 36,
        5, 8, 8, 8, 8, 12, 8, 5, 8, nil,
        nil,
    ]
}
