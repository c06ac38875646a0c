// libFuzzer harness for a SyncNode's FTFW receive path (scripts/fuzz/run.sh builds and runs it).
//
// Each input is a script for one fresh node (FTFW, window 30, resend queue 2000, HashLimit
// 10000, two links, an in-memory kernel table that starts empty). The script is a sequence of
// records; each starts with one byte `op`:
//
//   op & 3 == 0   datagram from the peer:  u16 (big-endian) length, then that many bytes (fewer
//                 if the input ends first), received on link (op >> 2) & 1
//   op & 3 == 1   time:                    u16 (big-endian) milliseconds the clock moves on
//   op & 3 == 2   kernel event:            u8 flow, u8 variant; (op >> 2) & 3 says NEW, UPDATE,
//                 DESTROY, or a change the node does not hear of followed by an overrun
//   op & 3 == 3   command:                 u8; its low 4 bits pick it (see `command`)
//
// After every record the clock moves (op >> 4) * 100 ms more and the node runs `tick` and
// `transmit`, as the daemon's loop does. The flows of kernel events are one of 256 fixed flows
// (TCP, UDP, ICMP, SCTP; some with NAT), varied in state, mark and timeout.
//
// Checked after each record, besides ASan's and Swift's own checks: the resend queue stays
// within its 2000, the transmit queue within what bounds it (a message per flow, 64 ACKs,
// 64 NACKs, a resync, an alive and a resent resync per resend-queue entry: 256 + 130 + 2000
// here), and is empty after a `transmit` the link allowed; the caches within HashLimit (the internal one
// within the 256 flows the kernel can hold); a resync with the kernel leaves exactly the
// kernel's flows in the internal cache. Every datagram the node sends must decode without error,
// fit the link's payload (or hold a single message) and continue the numbering of the previous
// one (a datagram a link refused is sent again as it was, on another link).
//
// With CTSYNC_FUZZ_STRICT set (run.sh's seed check) an input must also be well formed: whole
// records, and every datagram decoding without error.
//
// Speed: what does not depend on the input is done once per process (the 65,536 kernel flows),
// the kernel table hands out its last dump again until it changes, a sent datagram is decoded
// message by message without collecting the messages, and `check` reads the node in place. What
// is left is the node's own work, a few microseconds to tens of microseconds a record under ASan
// and libFuzzer's comparison tracing (docs/fuzzing.md).

import FlowModel
import Glibc
import SyncEngine
import SyncProtocol

let strict = getenv("CTSYNC_FUZZ_STRICT") != nil

let resendQueueSize = 2000
let hashLimit = 10_000
let payloadLimit = 1472
/// FTFWMode's transmit queue: one message per flow (256 here), at most 64 ACKs and 64 NACKs
/// (FTFWMode.pendingControlLimit), one resync request, one alive, and the resync requests of the
/// resend queue a NACK asks for again.
let transmitQueueBound = 256 + 64 + 64 + 1 + 1 + resendQueueSize
let settings: SyncNode.Settings = {
    var s = SyncNode.Settings(
        hashLimit: hashLimit,
        sync: SyncNode.Sync(
            mode: .ftfw(windowSize: 30, resendQueueSize: resendQueueSize), linkCount: 2, payloadLimit: payloadLimit,
            initialSequence: 1))
    // ExpectationSync on: the peer's expectation messages are decoded and cached too.
    s.expectations = { _ in true }
    return s
}()

func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("SyncNodeFuzz: \(what())") }
}

struct KernelReadFailure: Error {}

/// The world the node meets: two links, an in-memory kernel table, a log that is dropped.
final class FuzzEnvironment: SyncNodeEnvironment {
    /// The kernel table: the variant of flow `i` of the 256 at index `i`, or -1 when the kernel
    /// does not hold it (kept in index order, so dumps come in one order). The flows themselves
    /// come from `kernelFlows`, built once per process.
    private(set) var kernel = [Int16](repeating: -1, count: 256)
    private(set) var kernelCount = 0
    /// The last dump, while the table has not changed since (`readKernelTable` hands it out again).
    private var dump: [Flow]?
    var linkSends = true
    var linkUp = [true, true]
    var failReads = false
    /// The number the next message sent must carry (the node starts at 1).
    var nextSequence: UInt32 = 1
    /// The last datagram a link refused: the node may send it again on another link.
    var refused: [UInt8]?
    var datagramsSent = 0
    /// The sequence numbers of the datagram being checked (kept to save an allocation a send).
    private var sequences: [UInt32] = []

    /// Puts flow `index` in `variant` into the table, or (nil) takes it out.
    func setKernel(_ index: UInt8, _ variant: UInt8?) {
        let old = kernel[Int(index)]
        let new = variant.map(Int16.init) ?? -1
        if old == new { return }
        kernelCount += (new >= 0 ? 1 : 0) - (old >= 0 ? 1 : 0)
        kernel[Int(index)] = new
        dump = nil
    }

    func holds(_ index: UInt8) -> Bool { kernel[Int(index)] >= 0 }

    /// The kernel flushed its table.
    func clearKernel() {
        guard kernelCount > 0 else { return }
        for index in 0..<256 { kernel[index] = -1 }
        kernelCount = 0
        dump = nil
    }

    func send(_ datagram: UnsafeRawBufferPointer, link: Int) -> Bool {
        require(link == 0 || link == 1, "send on link \(link)")
        // Decoded message by message (as `SyncWire.decodeDatagram` does), keeping only the numbers.
        sequences.removeAll(keepingCapacity: true)
        var offset = 0
        var error: WireError?
        while offset < datagram.count {
            do throws(WireError) {
                let (message, length) = try SyncWire.decodeMessage(UnsafeRawBufferPointer(rebasing: datagram[offset...]))
                sequences.append(message.sequence)
                offset += length
            } catch let failure {
                error = failure
                break
            }
        }
        require(error == nil, "the node sent a datagram that does not decode: \(error!)")
        require(!sequences.isEmpty, "the node sent an empty datagram")
        require(
            datagram.count <= payloadLimit || sequences.count == 1, "datagram of \(datagram.count) bytes with \(sequences.count) messages")
        if !isRefused(datagram) {
            for sequence in sequences {
                require(sequence == nextSequence, "message numbered \(sequence), expected \(nextSequence)")
                nextSequence &+= 1
            }
        }
        guard linkUp[link] else {
            refused = Array(datagram)
            return false
        }
        refused = nil
        datagramsSent += 1
        return true
    }

    /// The datagram is the one a link refused last (byte for byte).
    private func isRefused(_ datagram: UnsafeRawBufferPointer) -> Bool {
        guard let refused, refused.count == datagram.count else { return false }
        return refused.withUnsafeBytes { $0.elementsEqual(datagram) }
    }

    func canSend(link: Int) -> Bool { linkSends }
    func isRunning(link: Int) -> Bool { link >= 0 && link < 2 && linkUp[link] }

    func readKernelTable() throws -> [Flow] {
        if failReads { throw KernelReadFailure() }
        if let dump { return dump }
        var flows: [Flow] = []
        flows.reserveCapacity(kernelCount)
        for index in 0..<256 where kernel[index] >= 0 {
            flows.append(kernelFlows[index << 8 | Int(kernel[index])])
        }
        dump = flows
        return flows
    }

    func inject(_ changes: [(FlowMessageKind, Flow)]) {}
    func flowEnded(_ flow: Flow) {}
    func log(_ level: NodeLogLevel, _ message: String) {}
}

/// One of the 256 flows the kernel can hold, in one of its variants (state, mark, timeout, NAT).
func kernelFlow(_ index: UInt8, variant: UInt8) -> Flow {
    let proto: L4Protocol = [.tcp, .udp, .icmp, .sctp][Int(index & 3)]
    var original = Tuple(source: IPAddress(ipv4: 0xc612_0000 | UInt32(index)), destination: IPAddress(ipv4: 0xc613_0002))
    if proto.hasPorts {
        original.sourcePort = 40_000 + UInt16(index)
        original.destinationPort = index & 4 == 0 ? 80 : 5060
    }
    var reply = original.inverted
    var status: FlowStatus = [.confirmed]
    if variant & 1 != 0 { status.insert(.seenReply) }
    if variant & 2 != 0 { status.insert(.assured) }
    if index & 8 != 0 {
        // Source NAT, decided by the flow (its key), not the variant.
        reply.destination = IPAddress(ipv4: 0xc612_ff01)
        status.formUnion([.srcNAT, .srcNATDone])
    }
    var flow = Flow(
        proto: proto, original: original, reply: reply,
        icmp: proto == .icmp ? ICMPInfo(type: 8, code: 0, id: UInt16(index)) : nil,
        tcp: proto == .tcp ? TCPInfo(state: TCPState(rawValue: (variant >> 2) % 10)) : nil,
        status: status, timeout: 30 + UInt32(variant), mark: UInt32(variant >> 5))
    if proto == .sctp { flow.sctp = SCTPInfo(state: SCTPState(rawValue: (variant >> 2) % 8)) }
    return flow
}

/// Every flow `kernelFlow` makes, at `index << 8 | variant`: built once per process, not per input.
let kernelFlows: [Flow] = (0..<65536).map { kernelFlow(UInt8($0 >> 8), variant: UInt8($0 & 255)) }
/// Flow `i`'s key (the variant does not change it: it is not part of the key).
let kernelKeys: [FlowKey] = {
    let keys = (0..<256).map { kernelFlows[$0 << 8].key }
    for index in 0..<65536 { require(kernelFlows[index].key == keys[index >> 8], "flow \(index >> 8)'s key depends on its variant") }
    require(Set(keys).count == 256, "two of the 256 kernel flows share a key")
    return keys
}()

/// Reads the input record by record.
struct Reader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    var truncated = false

    var atEnd: Bool { offset >= bytes.count }

    mutating func u8() -> UInt8 {
        guard offset < bytes.count else {
            truncated = true
            return 0
        }
        offset += 1
        return bytes[offset - 1]
    }

    mutating func u16() -> Int { Int(u8()) << 8 | Int(u8()) }

    mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let available = min(count, bytes.count - offset)
        if available < count { truncated = true }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + available)])
        offset += available
        return slice
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func syncNodeFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    var input = Reader(bytes: UnsafeRawBufferPointer(start: data, count: size))
    let env = FuzzEnvironment()
    var now: Int64 = 1_000_000
    var node = SyncNode(settings: settings, now: now)
    do {
        try node.start(now: now, environment: env)
    } catch {
        fatalError("SyncNodeFuzz: start failed on an empty kernel table: \(error)")
    }
    check(&node)

    while !input.atEnd {
        let op = input.u8()
        switch op & 3 {
        case 0:
            let datagram = input.take(input.u16())
            if strict {
                require(SyncWire.decodeDatagram(datagram).error == nil, "strict: a datagram does not decode")
            }
            node.receive(datagram, link: Int(op >> 2) & 1, now: now, environment: env)
        case 1:
            now += Int64(input.u16())
        case 2:
            let index = input.u8()
            let variant = input.u8()
            let flow = kernelFlows[Int(index) << 8 | Int(variant)]
            let event: FlowEvent
            switch (op >> 2) & 3 {
            case 0:
                env.setKernel(index, variant)
                event = .new(flow)
            case 1:
                env.setKernel(index, variant)
                event = .update(flow, present: .all)
            case 2:
                env.setKernel(index, nil)
                event = .destroy(flow)
            default:
                // A change the node does not hear of: only a resync finds it.
                env.setKernel(index, env.holds(index) ? nil : variant)
                event = .overrun
            }
            node.kernelEvents([event], now: now, environment: env)
        default:
            command(input.u8(), &node, env, now: now)
        }
        if strict { require(!input.truncated, "strict: the last record is cut short") }
        now += Int64(op >> 4) * 100
        node.tick(now: now, environment: env)
        check(&node)
        node.transmit(now: now, environment: env)
        let transmitQueue = check(&node)
        if env.linkSends {
            require(transmitQueue == 0, "\(transmitQueue) messages left after a transmit the link allowed")
        }
    }
    return 0
}

func command(_ byte: UInt8, _ node: inout SyncNode, _ env: FuzzEnvironment, now: Int64) {
    switch byte & 15 {
    case 0: env.linkSends.toggle()
    case 1: env.linkUp[0].toggle()
    case 2: env.linkUp[1].toggle()
    case 3: env.failReads.toggle()
    case 4: _ = node.sendBulk(environment: env)
    case 5: _ = node.requestPeerResync()
    case 6: _ = node.flushCaches(internal: true, external: false)
    case 7: _ = node.flushCaches(internal: false, external: true)
    case 8:
        if node.resyncWithKernel(reason: "requested", now: now, environment: env) != nil {
            // The same keys: as many, and each of the kernel's in the cache (keys are unique in both).
            var same = node.internalCache.count == env.kernelCount
            for index in 0..<256 where same && env.holds(UInt8(index)) { same = node.internalCache[kernelKeys[index]] != nil }
            require(same, "the internal cache differs from the kernel after a resync")
        }
    case 9: node.kernelFlushed(now: now, environment: env)
    case 10:
        // The kernel flushed behind the node's back (conntrack -F elsewhere), then lost events.
        env.clearKernel()
        node.kernelEvents([.overrun], now: now, environment: env)
    default:
        break  // 11...15: nothing
    }
}

/// The bounds that hold after every step; returns the transmit queue's length. `inout` only to
/// read the node in place (passed by value, the whole struct was copied, its storage retained,
/// on every call).
@discardableResult
func check(_ node: inout SyncNode) -> Int {
    guard let mode = node.mode else { fatalError("SyncNodeFuzz: the node has no mode") }
    let resendQueue = mode.resendQueueLength
    let transmitQueue = mode.transmitQueueLength
    require(resendQueue >= 0 && resendQueue <= resendQueueSize, "resend queue holds \(resendQueue)")
    require(transmitQueue >= 0 && transmitQueue <= transmitQueueBound, "transmit queue holds \(transmitQueue)")
    require(node.externalCache.count <= hashLimit, "external cache holds \(node.externalCache.count)")
    require(node.internalCache.count <= 256, "internal cache holds \(node.internalCache.count) of 256 possible flows")
    require(node.currentLink == 0 || node.currentLink == 1, "current link \(node.currentLink)")
    return transmitQueue
}
