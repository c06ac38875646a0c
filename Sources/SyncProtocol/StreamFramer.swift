/// Cuts a TCP link's byte stream into what the receiver handles: runs of whole conntrackd
/// messages (each header says its length, bytes 2-3), or, with authentication, one whole frame
/// at a time (its header says its payload's length). Bytes arrive in any split; nothing is
/// handed on before it is complete, and a length that cannot be right is a framing error:
/// the caller drops the connection (the peer reconnects) rather than read garbage.
public struct StreamFramer: Sendable {
    public enum Framing: Sendable, Equatable {
        /// conntrackd's: messages back to back, at least 8 bytes each.
        case messages
        /// Frames of `headerSize` bytes, then the payload (its length a big-endian UInt16 at
        /// `lengthOffset`), then `trailer` bytes of tag. `valid` checks the header's fixed bytes.
        case frames(headerSize: Int, lengthOffset: Int, trailer: Int, prefix: [UInt8])
    }

    public let framing: Framing
    private var input: [UInt8] = []
    private var start = 0
    /// Bytes held for an incomplete unit; bounded by the largest unit (64 KiB and a header).
    public var buffered: Int { input.count - start }

    public init(_ framing: Framing) { self.framing = framing }

    public static let messageHeaderSize = 8

    /// The first byte of a conntrackd message: version 1 in the high nibble, and a data type
    /// (0-5: conntrack or expectation new, update, destroy) or the control type (10).
    public static func isMessageStart(_ byte: UInt8) -> Bool { (0x10...0x15).contains(byte) || byte == 0x1a }

    /// Appends received bytes and hands every complete unit to `body`: for `.messages` one
    /// run of whole messages, for `.frames` each frame. Returns false on a framing error
    /// (the buffer is then emptied).
    public mutating func append(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        input.append(contentsOf: bytes)
        var end = start
        var failed = false
        input.withUnsafeBytes { all in
            switch framing {
            case .messages:
                // Every header must look like one (version 1, a known type, a length of at
                // least 8): conntrackd takes a partial write for a whole one and goes on with
                // its next message, so a cut message swallows the start of the next and the
                // stream is out of step from there; the first header that is none ends the
                // connection (the peer reconnects, FTFW repairs the gap). Whether a unit is
                // handed on never depends on how the bytes were split.
                while all.count - end >= Self.messageHeaderSize {
                    let length = Int(all[end + 2]) << 8 | Int(all[end + 3])
                    guard Self.isMessageStart(all[end]), length >= Self.messageHeaderSize else {
                        failed = true
                        break
                    }
                    if all.count - end < length { break }
                    end += length
                }
                // The whole messages before a bad header are the peer's still.
                if end > start { body(UnsafeRawBufferPointer(rebasing: all[start..<end])) }
            case .frames(let headerSize, let lengthOffset, let trailer, let prefix):
                while all.count - end >= headerSize {
                    guard UnsafeRawBufferPointer(rebasing: all[end..<(end + prefix.count)]).elementsEqual(prefix) else {
                        failed = true
                        return
                    }
                    let length = headerSize + (Int(all[end + lengthOffset]) << 8 | Int(all[end + lengthOffset + 1])) + trailer
                    if all.count - end < length { break }
                    body(UnsafeRawBufferPointer(rebasing: all[end..<(end + length)]))
                    end += length
                }
            }
        }
        if failed {
            reset()
            return false
        }
        start = end
        if start == input.count {
            input.removeAll(keepingCapacity: input.capacity <= 1 << 17)
            start = 0
        } else if start >= 1 << 16 {
            input.removeFirst(start)
            start = 0
        }
        return true
    }

    /// Forgets a partial unit (the connection ended).
    public mutating func reset() {
        input.removeAll(keepingCapacity: input.capacity <= 1 << 17)
        start = 0
    }
}
