/// Distinct established TCP flows made from an index, for benchmarks and scale tests that must
/// write into the kernel (or feed a node) as fast as it takes them: no file, no parsing.
///
/// Flow `i` goes from 198.18.A.B (A = n / 250, B = n % 250 + 1, n = i / 60000) port 1024 + i % 60000
/// to 198.19.0.1 port 443: every address is inside the benchmarking range 198.18.0.0/15, and
/// the same index always gives the same flow, so a second run (or a `first` further on) gives
/// new flows or the same ones as wanted. The flows are ESTABLISHED, SEEN_REPLY and ASSURED,
/// with the given timeout (what an established connection through a firewall looks like).
public struct SyntheticFlows: RandomAccessCollection, Sendable {
    public let first: Int
    public let count: Int
    public let timeout: UInt32
    public let mark: UInt32

    /// Flows with an index above this would leave 198.18.0.0/16 for the source.
    public static let maximumIndex = 256 * 250 * 60000 - 1

    public init(first: Int = 0, count: Int, timeout: UInt32 = 600, mark: UInt32 = 0) {
        precondition(first >= 0 && count >= 0 && first + count - 1 <= Self.maximumIndex, "synthetic flow index out of range")
        self.first = first
        self.count = count
        self.timeout = timeout
        self.mark = mark
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> Flow {
        let index = first + position
        let (address, port) = index.quotientAndRemainder(dividingBy: 60000)
        let (third, fourth) = address.quotientAndRemainder(dividingBy: 250)
        let source = UInt32(198) << 24 | UInt32(18) << 16 | UInt32(third) << 8 | UInt32(fourth + 1)
        let destination = UInt32(198) << 24 | UInt32(19) << 16 | 1
        var flow = Flow(
            proto: .tcp,
            original: Tuple(
                source: IPAddress(ipv4: source), destination: IPAddress(ipv4: destination),
                sourcePort: UInt16(1024 + port), destinationPort: 443),
            tcp: TCPInfo(state: .established), status: [.seenReply, .assured], timeout: timeout, mark: mark)
        flow.family = .ipv4
        return flow
    }
}
