#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An address family the kernel tracks flows for.
public enum AddressFamily: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case ipv4 = 2
    case ipv6 = 10

    public var description: String { self == .ipv4 ? "ipv4" : "ipv6" }

    /// Parses `ipv4`/`ipv6` (also `inet`/`inet6`, `4`/`6`).
    public init?(name: String) {
        switch name.lowercased() {
        case "ipv4", "inet", "4": self = .ipv4
        case "ipv6", "inet6", "6": self = .ipv6
        default: return nil
        }
    }
}

/// An IPv4 or IPv6 address held by value (no allocation), in host order.
///
/// IPv4 addresses use `low` only; `high` is zero. Comparison and hashing are
/// by family then bits, so addresses of different families never compare equal.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: AddressFamily
    /// Bits 127..64 of an IPv6 address; zero for IPv4.
    public let high: UInt64
    /// Bits 63..0 of an IPv6 address, or the 32 bits of an IPv4 address.
    public let low: UInt64

    public init(ipv4 value: UInt32) {
        family = .ipv4
        high = 0
        low = UInt64(value)
    }

    public init(ipv6High high: UInt64, low: UInt64) {
        family = .ipv6
        self.high = high
        self.low = low
    }

    /// The IPv4 value in host order; zero for IPv6.
    public var ipv4: UInt32 { UInt32(truncatingIfNeeded: low) }

    /// The all-zero address of a family.
    public static func zero(_ family: AddressFamily) -> IPAddress {
        family == .ipv4 ? IPAddress(ipv4: 0) : IPAddress(ipv6High: 0, low: 0)
    }

    /// Parses dotted-quad IPv4 or any textual IPv6 form `inet_pton` accepts.
    public init?(_ text: String) {
        if text.contains(":") {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
            self = withUnsafeBytes(of: &raw) { IPAddress(ipv6Bytes: $0) }
        } else {
            var raw = in_addr()
            guard inet_pton(AF_INET, text, &raw) == 1 else { return nil }
            self.init(ipv4: UInt32(bigEndian: raw.s_addr))
        }
    }

    /// Builds an IPv6 address from 16 bytes in network order.
    public init(ipv6Bytes bytes: UnsafeRawBufferPointer) {
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<8 { h = (h << 8) | UInt64(bytes[i]) }
        for i in 8..<16 { l = (l << 8) | UInt64(bytes[i]) }
        self.init(ipv6High: h, low: l)
    }

    /// The 16 network-order bytes of an IPv6 address (IPv4: the v4 value in the last 4 bytes).
    public var ipv6Bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    public var description: String {
        switch family {
        case .ipv4:
            let v = ipv4
            return "\(v >> 24).\((v >> 16) & 0xff).\((v >> 8) & 0xff).\(v & 0xff)"
        case .ipv6:
            var raw = in6_addr()
            let bytes = ipv6Bytes
            withUnsafeMutableBytes(of: &raw) { dst in
                for i in 0..<16 { dst[i] = bytes[i] }
            }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count)) != nil else { return "::" }
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        (a.family.rawValue, a.high, a.low) < (b.family.rawValue, b.high, b.low)
    }

    /// True when the first `prefix` bits of `self` equal those of `network`.
    public func matches(network: IPAddress, prefix: Int) -> Bool {
        guard family == network.family else { return false }
        let total = family == .ipv4 ? 32 : 128
        let bits = max(0, min(prefix, total))
        if family == .ipv4 {
            if bits == 0 { return true }
            let mask = UInt32.max << UInt32(32 - bits)
            return ipv4 & mask == network.ipv4 & mask
        }
        let highBits = min(bits, 64)
        let lowBits = max(0, bits - 64)
        let highMask: UInt64 = highBits == 0 ? 0 : UInt64.max << UInt64(64 - highBits)
        let lowMask: UInt64 = lowBits == 0 ? 0 : UInt64.max << UInt64(64 - lowBits)
        return high & highMask == network.high & highMask && low & lowMask == network.low & lowMask
    }

    /// The netmask of a prefix length: `/24` is 255.255.255.0.
    public static func mask(prefix: Int, family: AddressFamily) -> IPAddress {
        let total = family == .ipv4 ? 32 : 128
        let bits = max(0, min(prefix, total))
        if family == .ipv4 { return IPAddress(ipv4: bits == 0 ? 0 : UInt32.max << UInt32(32 - bits)) }
        let highBits = min(bits, 64)
        let lowBits = max(0, bits - 64)
        return IPAddress(
            ipv6High: highBits == 0 ? 0 : UInt64.max << UInt64(64 - highBits), low: lowBits == 0 ? 0 : UInt64.max << UInt64(64 - lowBits))
    }

    /// True when `self` and `network` agree on every bit set in `mask` (any netmask, as
    /// conntrack's `--mask-src`, not only a prefix).
    public func matches(network: IPAddress, mask: IPAddress) -> Bool {
        guard family == network.family, family == mask.family else { return false }
        return high & mask.high == network.high & mask.high && low & mask.low == network.low & mask.low
    }
}
