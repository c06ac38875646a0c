import Conntrack
import Foundation
@_exported import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension TestNamespace {
    /// Runs `body` with a kernel table opened inside the namespace.
    func table<T>(_ body: (KernelTable) throws -> T) throws -> T {
        let table = try NetworkNamespace.run(name) { try KernelTable() }
        return try body(table)
    }
}

/// One `conntrack -L` line split into its parts: protocol, number, timeout, state, and
/// key=value pairs per direction (the first src= starts the original tuple, the second the reply).
struct ConntrackLine: Equatable {
    var proto: String
    var timeout: Int
    var state: String?
    var original: [String: String] = [:]
    var reply: [String: String] = [:]
    var other: [String: String] = [:]
    var flags: Set<String> = []

    init?(_ line: String) {
        var tokens = line.split(separator: " ").map(String.init)
        if tokens.first?.hasPrefix("ipv") == true { tokens.removeFirst(2) }
        guard tokens.count > 3, UInt8(tokens[1]) != nil else { return nil }
        proto = tokens[0]
        // conntrackd's cache dumps (-i, -e) leave the timeout out.
        let timeout = Int(tokens[2])
        self.timeout = timeout ?? -1
        var rest = tokens.dropFirst(timeout == nil ? 2 : 3)
        if let first = rest.first, !first.contains("=") {
            state = first
            rest = rest.dropFirst()
        }
        var sources = 0
        var seenMark = false
        for token in rest {
            if token.hasPrefix("[") {
                flags.insert(token)
                continue
            }
            let kv = token.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "src" { sources += 1 }
            if kv[0] == "mark" { seenMark = true }
            // ICMP tuples carry an id= too; the flow's own id= comes after mark=.
            let flowWide = ["mark", "zone", "use", "helper", "labels"].contains(kv[0]) || (kv[0] == "id" && seenMark)
            switch (sources, kv[0]) {
            case (_, _) where flowWide: other[kv[0]] = kv[1]
            case (1, _): original[kv[0]] = kv[1]
            default: reply[kv[0]] = kv[1]
            }
        }
    }

    /// The same line with the timeout (which counts down between two reads) set aside.
    var withoutTimeout: ConntrackLine {
        var c = self
        c.timeout = 0
        return c
    }
}

let requiresNamespaces = Testing.ConditionTrait.enabled(
    if: Host.runs(if: Host.canUseNamespaces), "needs root and iproute2: creates network namespaces and writes the kernel conntrack table")
let requiresConntrackTool = Testing.ConditionTrait.enabled(
    if: Host.runs(if: Host.hasConntrackTool), "needs root and the conntrack tool (Debian package conntrack) to compare against")
