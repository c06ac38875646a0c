import CNetfilter
import TestSupport
import Testing

@testable import Conntrack

#if canImport(Glibc)
    import Glibc
#endif

/// Builds the netlink message the kernel layer would send for a flow, parses it back
/// through libnetfilter_conntrack, and returns the flow: the conversion tested without root.
func throughNetlink(_ flow: Flow, purpose: NFConntrack.Purpose = .create) throws -> Flow? {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    defer { buffer.deallocate() }
    let header = try NFConntrack.buildMessage(
        at: buffer.baseAddress!, flow: flow, type: IPCTNL_MSG_CT_NEW, flags: UInt16(NLM_F_REQUEST), sequence: 1,
        purpose: purpose)
    let message = NetlinkMessage(
        type: header.pointee.nlmsg_type, flags: header.pointee.nlmsg_flags, sequence: 1,
        bytes: UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(header.pointee.nlmsg_len)))
    return KernelTable.parseFlow(message)
}

@Suite struct ConversionTests {
    @Test(arguments: Samples.all)
    func flowSurvivesNetlinkEncoding(_ flow: Flow) throws {
        let back = try #require(try throughNetlink(flow))
        var expected = flow
        // Kernel-owned fields are never sent; the kernel keeps CONFIRMED set itself.
        expected.use = nil
        expected.id = nil
        expected.status.insert(.confirmed)
        // A NATed flow is created un-NATed with the NAT as CTA_NAT_SRC/DST: the kernel derives
        // the reply tuple itself (checked against the kernel in KernelTableTests).
        if flow.isNATed { expected.reply = flow.original.inverted }
        #expect(back == expected)
    }

    @Test func deleteCarriesOnlyTheIdentity() throws {
        var flow = Samples.all[1]
        flow.id = 1234
        let back = try #require(try throughNetlink(flow, purpose: .delete))
        #expect(back.key == flow.key)
        #expect(back.id == 1234)
        #expect(back.mark == 0 && back.timeout == nil && back.tcp == nil && back.labels.isEmpty)
    }

    @Test func updateLeavesTheHelperAlone() throws {
        let back = try #require(try throughNetlink(Samples.all[1], purpose: .update))
        #expect(back.helper == nil)
        #expect(back.labels == Samples.all[1].labels)
    }
}

/// A transport that plays the kernel: it reads the sequence numbers of what is sent and
/// answers with an error for chosen flows (by order of arrival) and an acknowledgement
/// where NLM_F_ACK was asked for, or fails the way it is told to.
final class RecordedKernel: NetlinkTransport {
    let portID: UInt32 = 4242
    var failWith: [Int: Int32] = [:]
    var overrunAfterAnswers: Int?
    var corruptReplies = false
    private(set) var sentBuffers = 0
    private(set) var sentMessages = 0
    private var queue: [[UInt8]] = []
    private var answered = 0

    func send(_ buffer: UnsafeRawBufferPointer) throws(KernelError) {
        sentBuffers += 1
        var offset = 0
        while offset + 16 <= buffer.count {
            let length = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let flags = buffer.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self)
            let seq = buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
            let index = sentMessages
            sentMessages += 1
            if let e = failWith[index] {
                queue.append(Self.errorMessage(seq: seq, errno: e))
            } else if flags & UInt16(NLM_F_ACK) != 0 {
                queue.append(Self.errorMessage(seq: seq, errno: 0))
            }
            offset += (length + 3) & ~3
        }
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(KernelError) -> Int {
        if let limit = overrunAfterAnswers, answered >= limit {
            overrunAfterAnswers = nil
            queue.removeAll()
            throw .overrun
        }
        guard !queue.isEmpty else { return 0 }
        var message = queue.removeFirst()
        answered += 1
        if corruptReplies { message[0] = 200 }  // a length beyond the datagram
        buffer.copyBytes(from: message)
        return message.count
    }

    static func errorMessage(seq: UInt32, errno: Int32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 36)
        bytes.withUnsafeMutableBytes { p in
            p.storeBytes(of: UInt32(36), toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: UInt16(2), toByteOffset: 4, as: UInt16.self)
            p.storeBytes(of: seq, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: -errno, toByteOffset: 16, as: Int32.self)
            p.storeBytes(of: seq, toByteOffset: 28, as: UInt32.self)
        }
        return bytes
    }
}

@Suite struct BatchTests {
    func flows(_ n: Int) -> [Flow] {
        (0..<n).map { Samples.tcp("198.18.0.1", "198.18.0.2", sport: UInt16(1000 + $0), dport: 80) }
    }

    @Test func packsManyMessagesPerSend() throws {
        let kernel = RecordedKernel()
        let report = try KernelTable(transport: kernel).write(flows(1000), operation: .create, batchSize: 256)
        #expect(report.created == 1000 && report.failures.isEmpty)
        #expect(kernel.sentBuffers == 4 && report.sends == 4)
        #expect(kernel.sentMessages == 1000)
    }

    @Test func reportsEachFailureWithoutStopping() throws {
        let kernel = RecordedKernel()
        kernel.failWith = [3: EEXIST, 300: EINVAL, 999: EEXIST]
        let report = try KernelTable(transport: kernel).write(flows(1000), operation: .create, batchSize: 256)
        #expect(report.created == 997)
        #expect(report.failures == [.init(index: 3, errno: EEXIST), .init(index: 300, errno: EINVAL), .init(index: 999, errno: EEXIST)])
    }

    @Test func createOrUpdateUpdatesTheExistingOnes() throws {
        let kernel = RecordedKernel()
        kernel.failWith = [1: EEXIST, 5: EEXIST, 7: ENOMEM]
        let report = try KernelTable(transport: kernel).write(flows(10), operation: .createOrUpdate, batchSize: 4)
        #expect(report.created == 7 && report.updated == 2)
        #expect(report.failures == [.init(index: 7, errno: ENOMEM)])
        #expect(kernel.sentMessages == 12)
    }

    @Test func oneMessagePerSendWhenBatchSizeIsOne() throws {
        let kernel = RecordedKernel()
        let report = try KernelTable(transport: kernel).write(flows(5), operation: .delete, batchSize: 1)
        #expect(report.deleted == 5 && kernel.sentBuffers == 5)
    }

    @Test func lostAnswersCountAsFailures() throws {
        let kernel = RecordedKernel()
        kernel.failWith = [0: EEXIST]
        kernel.overrunAfterAnswers = 1
        let report = try KernelTable(transport: kernel).write(flows(10), operation: .create, batchSize: 10)
        #expect(report.failures.first == .init(index: 0, errno: EEXIST))
        #expect(report.failures.count == 10)
        #expect(report.failures.dropFirst().allSatisfy { $0.errno == ENOBUFS })
    }

    @Test func malformedReplyIsAnErrorNotACrash() throws {
        let kernel = RecordedKernel()
        kernel.corruptReplies = true
        #expect(throws: KernelError.self) {
            try KernelTable(transport: kernel).write(flows(3), operation: .create)
        }
    }

    @Test func splitRejectsBadLengths() {
        let bytes: [UInt8] = [8, 0, 0, 0] + [UInt8](repeating: 0, count: 12)
        _ = bytes.withUnsafeBytes { raw in
            #expect(throws: KernelError.self) { try NetlinkMessage.split(raw, operation: "test") }
        }
        let short: [UInt8] = [1, 2, 3]
        short.withUnsafeBytes { raw in
            #expect((try? NetlinkMessage.split(raw, operation: "test"))?.isEmpty == true)
        }
    }
}

@Suite struct EventParsingTests {
    func message(_ type: cntl_msg_types, flags: Int32, flow: Flow, _ body: (NetlinkMessage) -> Void) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        let header = try NFConntrack.buildMessage(
            at: buffer.baseAddress!, flow: flow, type: type, flags: UInt16(flags), sequence: 0, purpose: .create)
        body(
            NetlinkMessage(
                type: header.pointee.nlmsg_type, flags: header.pointee.nlmsg_flags, sequence: 0,
                bytes: UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(header.pointee.nlmsg_len))))
    }

    @Test func classifiesEvents() throws {
        let flow = Samples.tcp()
        try message(IPCTNL_MSG_CT_NEW, flags: NLM_F_CREATE | NLM_F_EXCL, flow: flow) {
            #expect(EventListener.event(from: $0)?.name == "NEW")
        }
        try message(IPCTNL_MSG_CT_NEW, flags: 0, flow: flow) {
            #expect(EventListener.event(from: $0)?.name == "UPDATE")
        }
        try message(IPCTNL_MSG_CT_DELETE, flags: 0, flow: flow) {
            let event = EventListener.event(from: $0)
            #expect(event?.name == "DESTROY")
            #expect(event?.flow?.key == flow.key)
        }
    }
}
