import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Errors of the kernel layer. Each carries the operation and the errno, and its
/// description says what an operator can do about it.
public enum KernelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A socket call failed (open, bind, setsockopt, send, receive).
    case socket(operation: String, errno: Int32)
    /// The kernel refused a request.
    case request(operation: String, errno: Int32)
    /// The kernel dropped event messages because our receive buffer was full (ENOBUFS).
    case overrun
    /// A message did not fit the receive buffer and was cut (it is lost).
    case truncated(operation: String)
    /// A reply from the kernel did not parse as netlink.
    case malformedReply(operation: String, detail: String)
    /// A flow could not be turned into a netlink message.
    case build(detail: String)
    /// A network namespace could not be entered.
    case namespace(name: String, errno: Int32)

    public var errno: Int32? {
        switch self {
        case .socket(_, let e), .request(_, let e), .namespace(_, let e): return e
        case .overrun: return ENOBUFS
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .socket(let op, let e):
            return "netlink \(op) failed: \(errnoText(e))\(hint(e))"
        case .request(let op, let e):
            return "conntrack \(op) failed: \(errnoText(e))\(hint(e))"
        case .overrun:
            return "event overrun: the kernel dropped events (ENOBUFS); a resync from a dump is owed"
        case .truncated(let op):
            return "netlink \(op): a message was larger than the receive buffer and was lost"
        case .malformedReply(let op, let detail):
            return "netlink \(op): malformed reply from the kernel: \(detail)"
        case .build(let detail):
            return "cannot build a conntrack message: \(detail)"
        case .namespace(let name, let e):
            return "cannot enter network namespace '\(name)': \(errnoText(e))"
        }
    }

    private func hint(_ e: Int32) -> String {
        switch e {
        case EPERM, EACCES:
            return " (not root: ctsync needs CAP_NET_ADMIN)"
        case EOPNOTSUPP, EPROTONOSUPPORT, EAFNOSUPPORT:
            return " (no conntrack netlink in this namespace: is nf_conntrack_netlink loaded?)"
        default:
            return ""
        }
    }
}
