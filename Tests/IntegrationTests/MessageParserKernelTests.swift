import Foundation
import Testing

@testable import Conntrack

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon reads the kernel's messages itself (`FlowMessageParser`); here every message the
/// kernel sends for a varied table, its events (new, update, destroy) and its dump, with
/// accounting, timestamps and labels on, reads exactly as libnetfilter_conntrack reads it.
@Suite(.serialized, requiresNamespaces) struct MessageParserKernelTests {
    @Test func kernelMessagesReadAsTheLibraryReadsThem() throws {
        let ns = try TestNamespace("psr")
        defer { ns.remove() }
        for setting in ["nf_conntrack_acct", "nf_conntrack_timestamp"] {
            _ = try ns.exec(["sh", "-c", "echo 1 > /proc/sys/net/netfilter/\(setting)"])
        }
        if Host.runs(if: Host.has("nft")) {
            // Label space is attached to flows once a rule in the namespace uses labels.
            let rules = "table inet ctt {\n chain c {\n type filter hook input priority 0;\n ct label 100 accept\n }\n}\n"
            _ = try ns.exec(["nft", "-f", "-"], input: rules)
        }
        var flows = KernelSamples.varied
        flows[0].labels = FlowLabels(bits: [0, 5, 100])

        let events = try NetworkNamespace.run(ns.name) { try MnlSocket(groups: 7, receiveBufferSize: 4 << 20) }
        var compared = 0
        func compare(_ message: NetlinkMessage) {
            guard message.type >> 8 == 1 else { return }  // conntrack messages only
            let ours = FlowMessageParser.parse(message.bytes)
            let library = KernelTable.parseFlowAttributesWithLibrary(message)
            #expect(ours != nil)
            #expect(ours?.0 == library?.0, "\(ours.map { FlowJSON.encode($0.0) } ?? "nil") vs \(library.map { FlowJSON.encode($0.0) } ?? "nil")")
            #expect(ours?.1 == library?.1)
            compared += 1
        }
        func readEvents() throws {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
            defer { buffer.deallocate() }
            while true {
                let n = try events.receive(into: buffer, wait: false)
                if n == 0 { return }
                for message in try NetlinkMessage.split(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n), operation: "test") {
                    compare(message)
                }
            }
        }
        try ns.table { table in
            let report = try table.write(flows, operation: .create)
            #expect(report.failures.isEmpty)
            var changed = flows.map { flow -> Flow in
                var f = flow
                f.mark = 77
                f.timeout = 500
                return f
            }
            changed[0].labels = FlowLabels(bits: [1, 127])
            _ = try table.write(changed, operation: .update)
            try table.dumpMessages { compare($0) }
            _ = try table.write(Array(flows.prefix(4)), operation: .delete)
        }
        try readEvents()
        // Every flow's dump entry, its NEW, its update and (for four) its DESTROY.
        #expect(compared >= flows.count * 3 + 4)
    }
}
