import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `ctsync kernel ...` as an operator runs it: exit codes, counts printed, events streamed.
@Suite(.serialized, requiresNamespaces) struct KernelCLITests {
    func insertFlows(_ ns: TestNamespace, count: Int, family: AddressFamily = .ipv4, markEvery: Int = 2) throws {
        var lines: [String] = []
        for i in 0..<count {
            var flow = Flow(
                proto: .udp,
                original: Tuple(
                    source: family == .ipv4 ? IPAddress("198.18.5.1")! : IPAddress("2001:db8::5")!,
                    destination: family == .ipv4 ? IPAddress("198.18.5.2")! : IPAddress("2001:db8::6")!,
                    sourcePort: UInt16(2000 + i), destinationPort: 53),
                timeout: 300)
            flow.mark = i % markEvery == 0 ? 1 : 0
            lines.append(FlowJSON.encode(flow))
        }
        let r = try ns.ctsync(["kernel", "insert", "--file", "-"], input: lines.joined(separator: "\n"))
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("\(count) flow entries have been created."))
    }

    @Test func deleteByFilterRemovesExactlyTheMatches() throws {
        let ns = try TestNamespace("del")
        defer { ns.remove() }
        try insertFlows(ns, count: 20)
        let r = try ns.ctsync(["kernel", "delete", "-m", "1"])
        #expect(r.status == 0)
        #expect(r.stderr.contains("10 flow entries have been deleted."), "\(r.stderr)")
        let left = try ns.ctsync(["kernel", "list", "-o", "json"]).lines.map(FlowJSON.decode)
        #expect(left.count == 10 && left.allSatisfy { $0.mark == 0 })
        // Nothing matched: said, and exit 1 as conntrack -D (scripts run `conntrack -D ... &&`).
        let none = try ns.ctsync(["kernel", "delete", "-m", "1", "-o", "json"])
        #expect(none.status == 1 && none.stdout == "{\"deleted\":0}\n", "\(none.status) \(none.stderr)")
        let noneText = try ns.ctsync(["kernel", "delete", "-m", "1"])
        #expect(noneText.status == 1 && noneText.stderr == "ctsync: 0 flow entries have been deleted.\n", "\(noneText.stderr)")
        let byPort = try ns.ctsync(["kernel", "delete", "-p", "udp", "--sport", "2001"])
        #expect(byPort.stderr.contains("1 flow entries have been deleted."))
        #expect(try ns.ctsync(["kernel", "count"]).stdout == "9\n")
    }

    @Test func flushEmptiesTheTableAndSaysHowMany() throws {
        let ns = try TestNamespace("fl")
        defer { ns.remove() }
        try insertFlows(ns, count: 30)
        try insertFlows(ns, count: 5, family: .ipv6)
        let v6 = try ns.ctsync(["kernel", "flush", "-f", "ipv6"])
        #expect(v6.status == 0 && v6.stderr.contains("5 flow entries have been flushed."), "\(v6.stderr)")
        #expect(try ns.ctsync(["kernel", "count"]).stdout == "30\n")
        let all = try ns.ctsync(["kernel", "flush", "-o", "json"])
        #expect(all.stdout == "{\"flushed\":30}\n")
        #expect(try ns.ctsync(["kernel", "count"]).stdout == "0\n")
    }

    @Test func updateChangesTheMatchingFlows() throws {
        let ns = try TestNamespace("cup")
        defer { ns.remove() }
        try insertFlows(ns, count: 6)
        let r = try ns.ctsync(["kernel", "update", "-p", "udp", "--sport", "2003", "-m", "77", "-t", "1000"])
        #expect(r.status == 0 && r.stderr.contains("1 flow entries have been updated."), "\(r.stderr)")
        let flow = try FlowJSON.decode(try #require(try ns.ctsync(["kernel", "list", "-o", "json", "-m", "77"]).lines.first))
        #expect(flow.original.sourcePort == 2003 && flow.timeout! > 990)
        // Nothing matched, or nothing the change would alter: exit 1 as conntrack -U.
        let none = try ns.ctsync(["kernel", "update", "-p", "udp", "--sport", "9999", "-m", "77"])
        #expect(none.status == 1 && none.stderr == "ctsync: 0 flow entries have been updated.\n", "\(none.status) \(none.stderr)")
        let same = try ns.ctsync(["kernel", "update", "-p", "udp", "--sport", "2003", "-m", "77"])
        #expect(same.status == 1 && same.stderr.contains("0 flow entries have been updated."), "\(same.status) \(same.stderr)")
        let json = try ns.ctsync(["kernel", "update", "-p", "udp", "--sport", "9999", "-m", "77", "-o", "json"])
        #expect(json.status == 1 && json.stdout.hasPrefix("{\"updated\":0,"), "\(json.stdout)")
    }

    @Test func eventsPrintOneLinePerEvent() throws {
        let ns = try TestNamespace("cev")
        defer { ns.remove() }
        let watcher = try BackgroundCommand(
            ns, [Host.ctsync, "kernel", "events", "-o", "json", "--count", "3", "--timeout", "20"], tag: "events")
        // Wait (bounded) until it has subscribed.
        _ = watcher.waitForStderr(containing: "listening", within: 15)
        let insert = try ns.ctsync([
            "kernel", "insert", "-p", "tcp", "-s", "198.18.7.1", "-d", "198.18.7.2", "--sport", "1", "--dport", "2",
            "--state", "SYN_SENT", "-t", "60",
        ])
        #expect(insert.status == 0)
        // conntrack -L -o xml's document: a header, one <flow> a line, the closing tag.
        let xml = try ns.ctsync(["kernel", "list", "-o", "xml"])
        let xmlLines = xml.stdout.split(separator: "\n").map(String.init)
        #expect(xml.status == 0 && xmlLines.count == 4, "\(xml.stdout)")
        #expect(xmlLines.first == "<?xml version=\"1.0\" encoding=\"utf-8\"?>" && xmlLines[1] == "<conntrack>" && xmlLines.last == "</conntrack>")
        #expect(xmlLines.count == 4 && xmlLines[2].hasPrefix("<flow><meta direction=\"original\">") && xmlLines[2].contains("198.18.7.1"))
        #expect(try ns.ctsync(["kernel", "update", "-p", "tcp", "-m", "5"]).status == 0)
        #expect(try ns.ctsync(["kernel", "delete", "-p", "tcp"]).status == 0)
        #expect(watcher.waitForExit(within: 20))
        #expect(watcher.process.terminationStatus == 0)
        let lines = watcher.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.map { $0["event"] as? String } == ["new", "update", "destroy"])
        #expect(objects.allSatisfy { ($0["timestamp"] as? Double ?? 0) > 1_600_000_000 })
        #expect(objects[1]["mark"] as? Int == 5)
        #expect(watcher.stderr.contains("3 flow events have been shown."))
    }

    @Test func failuresAreNamedAndExitNonZero() throws {
        let ns = try TestNamespace("err")
        defer { ns.remove() }
        let args = ["kernel", "insert", "-p", "udp", "-s", "198.18.8.1", "-d", "198.18.8.2", "--sport", "1", "--dport", "2", "-t", "30"]
        #expect(try ns.ctsync(args).status == 0)
        let again = try ns.ctsync(args)
        #expect(again.status == 1)
        #expect(again.stderr.contains("File exists"), "\(again.stderr)")
        let usage = try ns.ctsync(["kernel", "list", "-s", "nonsense"])
        #expect(usage.status == 2)
        #expect(
            usage.stderr == "ctsync: The value 'nonsense' is invalid for '-s <src>': expected an IPv4 or IPv6 address, optionally with /prefix"
                + " (see 'ctsync kernel list --help')\n", "\(usage.stderr)")
        let badFile = try ns.ctsync(
            ["kernel", "insert", "--file", "-"], input: "{\"proto\":\"udp\"}\n{\"proto\":\"udp\",\"original\":{\"src\":\"1.2.3.4\",\"dst\":\"x\"}}\n")
        #expect(badFile.status == 2)
        #expect(badFile.stderr.contains("-:1: field 'original': missing"), "\(badFile.stderr)")
        if Host.runs(if: Host.has("setpriv")) {
            let notRoot = try ns.exec(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", Host.ctsync, "kernel", "list"])
            #expect(notRoot.status == 1)
            #expect(notRoot.stderr.contains("needs root"), "\(notRoot.stderr)")
        }
    }

    @Test func batchedFileInsertIsExactAndReportsItsRate() throws {
        let ns = try TestNamespace("bfile")
        defer { ns.remove() }
        try insertFlows(ns, count: 3000)
        let json = try ns.ctsync(["kernel", "list", "-o", "json"])
        #expect(json.lines.count == 3000)
        try ns.ctsync(["kernel", "flush"])
        // What list -o json printed can be inserted back as it is (a save/restore path).
        let restore = try ns.ctsync(["kernel", "insert", "--file", "-", "-o", "json", "--batch-size", "100"], input: json.stdout)
        #expect(restore.status == 0, "\(restore.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(restore.stdout.utf8)) as? [String: Any]
        #expect(report?["created"] as? Int == 3000)
        #expect(report?["sendmsg_calls"] as? Int == 30)
        #expect(try ns.ctsync(["kernel", "count"]).stdout == "3000\n")
        // The same flows came back, whole (the countdown of timeouts and kernel ids aside).
        func contents(_ lines: [String]) throws -> Set<Flow> {
            Set(
                try lines.map(FlowJSON.decode).map { flow -> Flow in
                    var f = flow
                    f.timeout = nil
                    f.id = nil
                    f.use = nil
                    return f
                })
        }
        let restored = try ns.ctsync(["kernel", "list", "-o", "json"])
        #expect(try contents(restored.lines) == contents(json.lines))
    }
}
