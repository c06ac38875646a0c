import Foundation
import TestSupport
import Testing

@testable import FlowModel

/// The JSON reader behind `insert --file`: what Foundation's JSONSerialization reads, it reads
/// the same; what JSON does not allow, it refuses with the byte where it went wrong.
@Suite struct JSONValueTests {
    /// A Foundation value as a JSONValue, to compare the two readers.
    static func converted(_ any: Any) -> JSONValue? {
        switch any {
        case let d as [String: Any]:
            // JSONSerialization forgets member order: compare objects sorted by key.
            var members: [JSONValue.Member] = []
            for key in d.keys.sorted() {
                guard let v = converted(d[key]!) else { return nil }
                members.append(.init(key: key, value: v))
            }
            return .object(members)
        case let a as [Any]:
            var out: [JSONValue] = []
            for e in a {
                guard let v = converted(e) else { return nil }
                out.append(v)
            }
            return .array(out)
        case let s as String: return .string(s)
        case is NSNull: return .null
        case let n as NSNumber:
            let text = n.stringValue
            if let u = UInt64(text), u > UInt64(Int64.max) { return .unsigned(u) }
            return .number(n.doubleValue)
        default: return nil
        }
    }

    /// Objects sorted by key (last member wins), numbers (and booleans, which Foundation reads
    /// as numbers) as doubles: what both readers must agree on.
    static func normalized(_ v: JSONValue) -> JSONValue {
        switch v {
        case .object(let members):
            var latest: [String: JSONValue] = [:]
            for m in members { latest[m.key] = normalized(m.value) }
            return .object(latest.keys.sorted().map { .init(key: $0, value: latest[$0]!) })
        case .array(let elements): return .array(elements.map(normalized))
        case .integer(let n): return .number(Double(n))
        case .unsigned(let n): return n > UInt64(Int64.max) ? v : .number(Double(n))
        case .bool(let b): return .number(b ? 1 : 0)
        default: return v
        }
    }

    @Test(arguments: [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e\"f\\g\/h\n\u00e9\ud83d\ude00"},"n":-42,"big":18446744073709551615}"#,
        #"  [ 1 , 2.5 , -0.5e3 , 1E2, "x y" ]  "#,
        #"{"proto":"tcp","state":"ESTABLISHED","timeout":600,"original":{"src":"198.18.0.1","dst":"198.19.0.1","sport":1024,"dport":443}}"#,
        #"{}"#, #"[]"#, #""""#, #"0"#, #"-9223372036854775808"#, #"{"k":"\t"}"#,
    ])
    func readsWhatFoundationReads(_ text: String) throws {
        let ours = try JSONValue.parse(text)
        let theirs = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        let expected = try #require(Self.converted(theirs))
        #expect(Self.normalized(ours) == Self.normalized(expected))
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru", "\"abc", "\"\u{1}\"", "[1] x", "{\"a\":\"\\q\"}",
        "\"\\ud800\"", "{'a':1}", String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
    ])
    func refusesWhatIsNotJSON(_ text: String) {
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(text) }
    }

    @Test func lastMemberWinsAndNumbersKeepTheirKind() throws {
        let v = try JSONValue.parse(#"{"a":1,"a":2,"u":18446744073709551615,"d":1.5,"huge":1e400}"#)
        #expect(v["a"] == .integer(2))
        #expect(v["u"] == .unsigned(.max))
        #expect(v["d"] == .number(1.5))
        #expect(v["missing"] == nil)
        if case .number(let d) = v["huge"]! { #expect(d.isInfinite) } else { Issue.record("1e400 is a number") }
    }

    /// Every sample flow survives encode → the new reader → decode, as it did through Foundation.
    @Test func flowsRoundTrip() throws {
        for flow in Samples.all {
            var expected = flow
            expected.use = nil
            expected.counters = nil
            var back = try FlowJSON.decode(FlowJSON.encode(flow))
            back.use = nil
            #expect(back == expected, "\(FlowJSON.encode(flow))")
        }
    }
}
