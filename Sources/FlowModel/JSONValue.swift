/// A JSON value as read by `JSONValue.parse`: a small reader for ctsync's own line formats (a
/// flow per line), several times faster than Foundation's JSONSerialization on them (no
/// NSNumber, no NSDictionary, keys and short strings held inline).
public enum JSONValue: Equatable, Sendable {
    case object([Member])
    case array([JSONValue])
    case string(String)
    /// An integer as written (within Int64 or UInt64), or another number.
    case integer(Int64)
    case unsigned(UInt64)
    case number(Double)
    case bool(Bool)
    case null

    public struct Member: Equatable, Sendable {
        public var key: String
        public var value: JSONValue
    }

    /// The member named `key` of an object (the last one, if repeated); nil otherwise.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// What is wrong with the text, and at which byte.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var offset: Int
        public var problem: String
        public var description: String { "\(problem) at byte \(offset + 1)" }
    }

    /// Parses one JSON value filling the whole text (white space around it allowed).
    public static func parse(_ text: String) throws(ParseError) -> JSONValue {
        var copy = text
        let result: Result<JSONValue, ParseError> = copy.withUTF8 { bytes in
            Result { () throws(ParseError) -> JSONValue in try parse(UnsafeRawBufferPointer(bytes)) }
        }
        return try result.get()
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(ParseError) -> JSONValue {
        var reader = Reader(bytes: bytes)
        reader.skipSpace()
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.offset == bytes.count else { throw ParseError(offset: reader.offset, problem: "text after the value") }
        return value
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0
        static let maximumDepth = 64

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func fail(_ problem: String) -> ParseError { ParseError(offset: offset, problem: problem) }

        var peek: UInt8? { offset < bytes.count ? bytes[offset] : nil }

        mutating func skipSpace() {
            while offset < bytes.count, bytes[offset] == 0x20 || bytes[offset] == 0x09 || bytes[offset] == 0x0a || bytes[offset] == 0x0d {
                offset += 1
            }
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws(ParseError) {
            guard peek == byte else { throw fail("expected \(what)") }
            offset += 1
        }

        mutating func value(depth: Int) throws(ParseError) -> JSONValue {
            guard depth < Self.maximumDepth else { throw fail("nested too deeply") }
            guard let byte = peek else { throw fail("unexpected end") }
            switch byte {
            case UInt8(ascii: "{"):
                offset += 1
                var members: [Member] = []
                skipSpace()
                if peek == UInt8(ascii: "}") {
                    offset += 1
                    return .object(members)
                }
                while true {
                    skipSpace()
                    guard peek == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                    let key = try string()
                    skipSpace()
                    try expect(UInt8(ascii: ":"), "':'")
                    skipSpace()
                    members.append(Member(key: key, value: try value(depth: depth + 1)))
                    skipSpace()
                    if peek == UInt8(ascii: ",") {
                        offset += 1
                        continue
                    }
                    try expect(UInt8(ascii: "}"), "',' or '}'")
                    return .object(members)
                }
            case UInt8(ascii: "["):
                offset += 1
                var elements: [JSONValue] = []
                skipSpace()
                if peek == UInt8(ascii: "]") {
                    offset += 1
                    return .array(elements)
                }
                while true {
                    skipSpace()
                    elements.append(try value(depth: depth + 1))
                    skipSpace()
                    if peek == UInt8(ascii: ",") {
                        offset += 1
                        continue
                    }
                    try expect(UInt8(ascii: "]"), "',' or ']'")
                    return .array(elements)
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): return try word("true", .bool(true))
            case UInt8(ascii: "f"): return try word("false", .bool(false))
            case UInt8(ascii: "n"): return try word("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return try number()
            default:
                throw fail("unexpected character")
            }
        }

        mutating func word(_ text: StaticString, _ value: JSONValue) throws(ParseError) -> JSONValue {
            let length = text.utf8CodeUnitCount
            guard bytes.count - offset >= length else { throw fail("unexpected end") }
            for i in 0..<length where bytes[offset + i] != text.utf8Start[i] { throw fail("unknown word") }
            offset += length
            return value
        }

        mutating func number() throws(ParseError) -> JSONValue {
            let start = offset
            let negative = peek == UInt8(ascii: "-")
            if negative { offset += 1 }
            var magnitude: UInt64 = 0
            var overflow = false
            var digits = 0
            while let b = peek, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") {
                let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (m2, o2) = m1.addingReportingOverflow(UInt64(b - UInt8(ascii: "0")))
                overflow = overflow || o1 || o2
                magnitude = m2
                digits += 1
                offset += 1
            }
            guard digits > 0 else { throw fail("expected a digit") }
            if digits > 1 && bytes[negative ? start + 1 : start] == UInt8(ascii: "0") { throw fail("leading zero") }
            var fractional = false
            if peek == UInt8(ascii: ".") {
                fractional = true
                offset += 1
                guard let b = peek, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { throw fail("expected a digit") }
                while let b = peek, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { offset += 1 }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                fractional = true
                offset += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { offset += 1 }
                guard let b = peek, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { throw fail("expected a digit") }
                while let b = peek, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { offset += 1 }
            }
            if !fractional && !overflow {
                if !negative { return magnitude <= UInt64(Int64.max) ? .integer(Int64(magnitude)) : .unsigned(magnitude) }
                if magnitude <= UInt64(Int64.max) + 1 { return .integer(magnitude == UInt64(Int64.max) + 1 ? .min : -Int64(magnitude)) }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
            guard let double = Double(text) else { throw ParseError(offset: start, problem: "bad number") }
            return .number(double)
        }

        mutating func string() throws(ParseError) -> String {
            offset += 1  // the opening quote
            let start = offset
            // The common case: no escapes, taken as it stands.
            while let b = peek, b != UInt8(ascii: "\""), b != UInt8(ascii: "\\") {
                guard b >= 0x20 else { throw fail("control character in a string") }
                offset += 1
            }
            guard let stop = peek else { throw fail("unterminated string") }
            if stop == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
                offset += 1
                return text
            }
            var scalars = String.UnicodeScalarView()
            scalars.append(contentsOf: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self).unicodeScalars)
            var pending: [UInt8] = []
            func flushPending() {
                if !pending.isEmpty {
                    scalars.append(contentsOf: String(decoding: pending, as: UTF8.self).unicodeScalars)
                    pending.removeAll()
                }
            }
            while true {
                guard let b = peek else { throw fail("unterminated string") }
                offset += 1
                switch b {
                case UInt8(ascii: "\""):
                    flushPending()
                    return String(scalars)
                case UInt8(ascii: "\\"):
                    flushPending()
                    guard let e = peek else { throw fail("unterminated string") }
                    offset += 1
                    switch e {
                    case UInt8(ascii: "\""): scalars.append("\"")
                    case UInt8(ascii: "\\"): scalars.append("\\")
                    case UInt8(ascii: "/"): scalars.append("/")
                    case UInt8(ascii: "b"): scalars.append("\u{8}")
                    case UInt8(ascii: "f"): scalars.append("\u{c}")
                    case UInt8(ascii: "n"): scalars.append("\n")
                    case UInt8(ascii: "r"): scalars.append("\r")
                    case UInt8(ascii: "t"): scalars.append("\t")
                    case UInt8(ascii: "u"):
                        var code = try hex4()
                        if (0xD800..<0xDC00).contains(code) {
                            guard peek == UInt8(ascii: "\\"), offset + 1 < bytes.count, bytes[offset + 1] == UInt8(ascii: "u") else {
                                throw fail("lone surrogate")
                            }
                            offset += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw fail("lone surrogate") }
                            code = 0x10000 + (code - 0xD800) << 10 + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw fail("bad \\u escape") }
                        scalars.append(scalar)
                    default:
                        throw fail("bad escape")
                    }
                default:
                    guard b >= 0x20 else { throw fail("control character in a string") }
                    pending.append(b)
                }
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard bytes.count - offset >= 4 else { throw fail("bad \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[offset]
                let digit: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
                default: throw fail("bad \\u escape")
                }
                value = value << 4 | UInt32(digit)
                offset += 1
            }
            return value
        }
    }
}
