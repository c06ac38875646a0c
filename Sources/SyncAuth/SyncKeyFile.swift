#if canImport(Glibc)
    import Glibc
#endif

/// Why a key file was refused; the message names the file, the line and the fix.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The sync key file: one or two lines `ID SECRET`, the key id (1-255) and 32 to 64 bytes of
/// secret in hex (`openssl rand -hex 32`); `#` starts a comment. The first key seals what this
/// node sends; both open what it receives, so a pair rolls its key over without a gap: add the
/// new key as the second line on both nodes, then make it the first, then remove the old one.
///
/// Refused unless it is a regular file owned by root (or by the daemon's own user) that
/// neither group nor others may read or write: a key anyone on the host can read is no key.
public enum SyncKeyFile {
    public static let minimumSecretBytes = 32
    public static let maximumSecretBytes = 64
    public static let maximumKeys = 2

    public static func load(_ path: String) throws(KeyFileError) -> [SyncKey] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            let e = errno
            throw KeyFileError("key file \(path): \(String(cString: strerror(e)))\(e == ELOOP ? " (a symbolic link is not accepted)" : "")")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw KeyFileError("key file \(path): \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw KeyFileError("key file \(path) is not a regular file") }
        let owner = info.st_uid
        guard owner == 0 || owner == geteuid() else {
            throw KeyFileError("key file \(path) is owned by uid \(owner), not by root: chown root: \(path)")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw KeyFileError(
                "key file \(path) has mode \(String(mode, radix: 8)): group or others may access it; chmod 600 \(path)")
        }
        guard info.st_size <= 64 * 1024 else { throw KeyFileError("key file \(path) is larger than 64 KiB: not a key file") }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes[filled...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            filled += n
        }
        defer { for index in bytes.indices { bytes[index] = 0 } }
        return try parse(String(decoding: bytes[0..<filled], as: UTF8.self), path: path)
    }

    /// Parses a key file's text; `path` names it in errors.
    public static func parse(_ text: String, path: String) throws(KeyFileError) -> [SyncKey] {
        var keys: [SyncKey] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            let at = "\(path):\(index + 1)"
            guard fields.count == 2 else {
                throw KeyFileError(
                    "\(at): expected 'ID SECRET' (a key id 1-255 and the secret in hex), got \(fields.count) field\(fields.count == 1 ? "" : "s")")
            }
            guard let id = UInt8(fields[0]), id > 0 else { throw KeyFileError("\(at): key id '\(fields[0])' is not a number from 1 to 255") }
            guard let secret = hex(fields[1]) else { throw KeyFileError("\(at): the secret is not hexadecimal (0-9, a-f; two digits a byte)") }
            guard secret.count >= minimumSecretBytes, secret.count <= maximumSecretBytes else {
                throw KeyFileError(
                    "\(at): the secret has \(secret.count) bytes; it needs \(minimumSecretBytes) to \(maximumSecretBytes) (openssl rand -hex 32)")
            }
            guard !keys.contains(where: { $0.id == id }) else { throw KeyFileError("\(at): key id \(id) appears twice") }
            guard keys.count < maximumKeys else {
                throw KeyFileError("\(at): at most \(maximumKeys) keys (the current one and, during a rollover, one more)")
            }
            keys.append(SyncKey(id: id, secret: secret))
        }
        guard !keys.isEmpty else { throw KeyFileError("key file \(path) holds no key: write a line 'ID SECRET' (e.g. 1 and openssl rand -hex 32)") }
        return keys
    }

    static func hex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}
