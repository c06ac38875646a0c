import Conntrack
import Foundation
import SystemCalls
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel layer against the real kernel table, in namespaces made per test.
@Suite(.serialized, requiresNamespaces) struct KernelTableTests {
    /// Every protocol and field a firewall pair carries survives create → dump.
    @Test func flowsRoundTripThroughTheKernel() throws {
        let ns = try TestNamespace("rt")
        defer { ns.remove() }
        let flows = KernelSamples.varied

        try ns.table { table in
            let report = try table.write(flows, operation: .create)
            #expect(report.failures.isEmpty, "\(report.failures.map { "\($0.index): \(errnoText($0.errno))" })")
            let dumped = try table.dump()
            #expect(dumped.count == flows.count)
            for flow in flows {
                let back = dumped.first { $0.key == flow.key }
                #expect(back != nil, "missing \(FlowTextFormat().line(flow))")
                guard var back else { continue }
                #expect(back.timeout.map { $0 <= flow.timeout! && $0 + 3 >= flow.timeout! } == true)
                #expect(back.status.contains(.confirmed))
                back.status.remove(.confirmed)
                back.timeout = flow.timeout
                #expect(back.id != nil)
                // The kernel set up the NAT itself (from CTA_NAT_SRC/DST), so it marks it.
                if flow.sourceNAT != nil || flow.sourcePortNAT != nil { #expect(back.status.isSuperset(of: [.srcNAT, .srcNATDone])) }
                if flow.destinationNAT != nil || flow.destinationPortNAT != nil { #expect(back.status.isSuperset(of: [.dstNAT, .dstNATDone])) }
                back.status.subtract([.srcNAT, .dstNAT, .srcNATDone, .dstNATDone])
                // Kernel-owned fields aside, the flow is what was written.
                #expect(back.sameState(as: flow), "\(FlowJSON.encode(back)) vs \(FlowJSON.encode(flow))")
                #expect(try table.get(flow)?.key == flow.key)
            }
            #expect(try table.count() == flows.count)
            #expect(try table.dump(family: .ipv6).count == 2)
        }
    }

    @Test func labelsRoundTripWhereTheNamespaceUsesThem() throws {
        guard Host.runs(if: Host.has("nft")) else { return }
        let ns = try TestNamespace("lbl")
        defer { ns.remove() }
        // The kernel attaches label space to flows only once a rule in the namespace uses labels.
        let rules = "table inet ctt {\n chain c {\n type filter hook input priority 0;\n ct label 100 accept\n }\n}\n"
        let nft = try ns.exec(["nft", "-f", "-"], input: rules)
        try #require(nft.status == 0, "nft: \(nft.stderr)")
        var flow = Flow(
            proto: .udp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1, destinationPort: 2),
            timeout: 100)
        flow.labels = FlowLabels(bits: [0, 5, 100, 127])
        try ns.table { table in
            try table.create(flow)
            #expect(try table.get(flow)?.labels.bits == [0, 5, 100, 127])
        }
    }

    @Test func updateChangesWhatTheKernelAllows() throws {
        let ns = try TestNamespace("upd")
        defer { ns.remove() }
        var flow = Flow(
            proto: .tcp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 1, destinationPort: 2),
            tcp: TCPInfo(state: .synSent), timeout: 50, mark: 1)
        try ns.table { table in
            try table.create(flow)
            #expect(throws: KernelError.request(operation: "create", errno: EEXIST)) { try table.create(flow) }
            flow.mark = 2
            flow.timeout = 900
            flow.tcp?.state = .established
            flow.status = [.seenReply, .assured]
            try table.update(flow)
            let back = try #require(try table.get(flow))
            #expect(back.mark == 2 && back.tcp?.state == .established && back.status.contains(.assured))
            #expect(back.timeout! > 850)
            try table.delete(back)
            #expect(try table.get(flow) == nil)
            #expect(throws: KernelError.request(operation: "update", errno: ENOENT)) { try table.update(flow) }
        }
    }

    /// 50k flows in batches: every one created, and the kernel's count agrees exactly.
    @Test func batchedInsertOf50kFlows() throws {
        let ns = try TestNamespace("b50k")
        defer { ns.remove() }
        var flows: [Flow] = []
        flows.reserveCapacity(50_000)
        for i in 0..<50_000 {
            let original = Tuple(
                source: IPAddress(ipv4: 0xC612_0000 | UInt32(i >> 14)), destination: IPAddress(ipv4: 0xC613_0001),
                sourcePort: UInt16(1024 + (i & 0x3fff)), destinationPort: 443)
            flows.append(
                Flow(
                    proto: .tcp, original: original, tcp: TCPInfo(state: .established), status: [.seenReply, .assured],
                    timeout: 600, mark: UInt32(i)))
        }
        try ns.table { table in
            let report = try table.write(flows, operation: .create, batchSize: 256)
            #expect(report.created == 50_000)
            #expect(report.failures.isEmpty)
            #expect(report.sends == (50_000 + 255) / 256)
            #expect(try table.count() == 50_000)
            let dumped = try table.dump()
            #expect(dumped.count == 50_000)
            #expect(Set(dumped.map(\.key)) == Set(flows.map(\.key)))
            #expect(Set(dumped.map(\.mark)) == Set((0..<50_000).map(UInt32.init)))

            // Written again: every flow already exists, and each failure is reported, none thrown.
            let again = try table.write(flows[0..<1000], operation: .create)
            #expect(again.created == 0 && again.failures.count == 1000)
            #expect(again.failures.allSatisfy { $0.errno == EEXIST })
            // createOrUpdate turns those into updates.
            let committed = try table.write(
                Array(flows[0..<1000]).map {
                    var f = $0
                    f.mark = 7
                    return f
                }, operation: .createOrUpdate)
            #expect(committed.updated == 1000 && committed.created == 0 && committed.failures.isEmpty)
            #expect(try table.get(flows[10])?.mark == 7)
            // Batched delete of half, then the rest by flush.
            let deleted = try table.write(dumped.filter { $0.mark % 2 == 1 }, operation: .delete)
            #expect(deleted.deleted == 25_000)
            #expect(try table.count() == 25_000)
            try table.flush()
            #expect(try table.count() == 0)
        }
    }
}
