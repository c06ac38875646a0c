import SyncAuth
import SyncProtocol
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct FrameAuthenticatorTests {
    static let keyA = SyncKey(id: 1, secret: Array(repeating: 0x11, count: 32))
    static let keyB = SyncKey(id: 2, secret: Array(repeating: 0x22, count: 32))

    func pair(_ algorithm: AuthAlgorithm, senderKeys: [SyncKey] = [keyA], receiverKeys: [SyncKey] = [keyA], epoch: UInt64 = 1000)
        -> (FrameAuthenticator, FrameAuthenticator)
    {
        (
            FrameAuthenticator(algorithm: algorithm, keys: senderKeys, nodeId: 7, epoch: epoch),
            FrameAuthenticator(algorithm: algorithm, keys: receiverKeys, nodeId: 9, epoch: 5)
        )
    }

    func open(_ receiver: inout FrameAuthenticator, _ frame: [UInt8]) -> Result<[UInt8], AuthFailure> {
        var payload: [UInt8]?
        let result = frame.withUnsafeBytes { receiver.open($0) { payload = Array($0) } }
        switch result {
        case .success(let node):
            #expect(node == 7)
            guard let payload else {
                Issue.record("accepted without a payload")
                return .failure(.malformed)
            }
            return .success(payload)
        case .failure(let failure):
            #expect(payload == nil, "a refused frame's payload reached the caller")
            return .failure(failure)
        }
    }

    @Test(arguments: AuthAlgorithm.allCases)
    func roundTripAndOverhead(_ algorithm: AuthAlgorithm) {
        var (sender, receiver) = pair(algorithm)
        for size in [0, 1, 8, 1400, 65_535] {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let frame = payload.withUnsafeBytes { sender.seal($0) }
            #expect(frame.count == payload.count + sender.overhead)
            #expect(open(&receiver, frame) == .success(payload))
        }
        #expect(receiver.counters.accepted == 5)
    }

    @Test func chachaEncryptsTheFlowsHmacDoesNot() {
        let payload = Array("198.18.0.1 flow payload".utf8)
        var (hmac, _) = pair(.hmacSHA256)
        var (aead, _) = pair(.chacha20Poly1305)
        let clear = payload.withUnsafeBytes { hmac.seal($0) }
        let sealed = payload.withUnsafeBytes { aead.seal($0) }
        #expect(Array(clear[32..<(32 + payload.count)]) == payload)
        #expect(Array(sealed[32..<(32 + payload.count)]) != payload)
    }

    /// Any one bit flipped anywhere in a frame makes it refused, and the payload never reaches
    /// the decoder.
    @Test(arguments: AuthAlgorithm.allCases)
    func everyBitFlipIsRefused(_ algorithm: AuthAlgorithm) {
        var (sender, receiver) = pair(algorithm)
        let payload = Array(0..<UInt8(60))
        let frame = payload.withUnsafeBytes { sender.seal($0) }
        for index in frame.indices {
            for bit in 0..<8 {
                var forged = frame
                forged[index] ^= 1 << bit
                if case .success = open(&receiver, forged) { Issue.record("byte \(index) bit \(bit) flipped was accepted") }
            }
        }
        // The untouched frame is still fresh: refusals did not move the replay window.
        #expect(open(&receiver, frame) == .success(payload))
    }

    @Test func aFrameWithoutTheKeyIsRefused() {
        var stranger = FrameAuthenticator(
            algorithm: .hmacSHA256, keys: [SyncKey(id: 1, secret: Array(repeating: 0x99, count: 32))], nodeId: 7, epoch: 1)
        var (_, receiver) = pair(.hmacSHA256)
        let frame = [UInt8](repeating: 1, count: 20).withUnsafeBytes { stranger.seal($0) }
        #expect(open(&receiver, frame) == .failure(.badTag))
        // conntrackd's plain messages (a HELLO, 8 bytes) are not frames.
        let hello: [UInt8] = [0, 0, 0, 8, 0, 0, 0, 1]
        #expect(open(&receiver, hello) == .failure(.malformed))
        #expect(receiver.counters.badTag == 1 && receiver.counters.malformed == 1 && receiver.counters.accepted == 0)
    }

    @Test(arguments: AuthAlgorithm.allCases)
    func replaysAreRefusedReorderingWithinTheWindowIsNot(_ algorithm: AuthAlgorithm) {
        var (sender, receiver) = pair(algorithm)
        let frames = (0..<2000).map { n in [UInt8(n & 0xff), UInt8(n >> 8)].withUnsafeBytes { sender.seal($0) } }
        // Out of order within the window: all accepted once.
        for index in [5, 3, 4, 0, 1, 2] { #expect(open(&receiver, frames[index]).isSuccess) }
        for index in [0, 3, 5] { #expect(open(&receiver, frames[index]) == .failure(.replayed)) }
        // Far ahead, then something older than the window: refused; recent ones still once.
        #expect(open(&receiver, frames[1999]).isSuccess)
        #expect(open(&receiver, frames[100]) == .failure(.replayed))
        #expect(open(&receiver, frames[1500]).isSuccess)
        #expect(open(&receiver, frames[1500]) == .failure(.replayed))
        #expect(open(&receiver, frames[1998]).isSuccess)
        #expect(receiver.counters.replayed == 5)
    }

    @Test(arguments: AuthAlgorithm.allCases)
    func aRestartedPeerIsHeardAnEarlierRunIsNot(_ algorithm: AuthAlgorithm) {
        var first = FrameAuthenticator(algorithm: algorithm, keys: [Self.keyA], nodeId: 7, epoch: 1000)
        var second = FrameAuthenticator(algorithm: algorithm, keys: [Self.keyA], nodeId: 7, epoch: 2000)
        var (_, receiver) = pair(algorithm)
        let old = [UInt8](repeating: 1, count: 10).withUnsafeBytes { first.seal($0) }
        let oldSecond = [UInt8](repeating: 1, count: 10).withUnsafeBytes { first.seal($0) }
        #expect(open(&receiver, old).isSuccess)
        let new = [UInt8](repeating: 2, count: 10).withUnsafeBytes { second.seal($0) }
        #expect(open(&receiver, new).isSuccess)
        #expect(receiver.epoch(of: 7) == 2000)
        // The earlier run's frames, even ones never seen, are replays now.
        #expect(open(&receiver, oldSecond) == .failure(.staleEpoch))
        #expect(receiver.counters.peerEpochs == 2)
    }

    @Test func ourOwnNodeIdIsRefused() {
        var me = FrameAuthenticator(algorithm: .hmacSHA256, keys: [Self.keyA], nodeId: 9, epoch: 1)
        var (_, receiver) = pair(.hmacSHA256)
        let frame = [UInt8](repeating: 1, count: 10).withUnsafeBytes { me.seal($0) }
        #expect(open(&receiver, frame) == .failure(.ownNodeId))
    }

    @Test(arguments: AuthAlgorithm.allCases)
    func rolloverAcceptsBothKeysAndSealsWithTheFirst(_ algorithm: AuthAlgorithm) {
        // Step 1: both nodes hold A then B; A seals. Step 2: the sender switches to B first.
        var (old, receiver) = pair(algorithm, senderKeys: [Self.keyA], receiverKeys: [Self.keyA, Self.keyB])
        var new = FrameAuthenticator(algorithm: algorithm, keys: [Self.keyB, Self.keyA], nodeId: 7, epoch: 1000)
        let byA = [UInt8](repeating: 1, count: 10).withUnsafeBytes { old.seal($0) }
        #expect(byA[6] == 1)
        #expect(open(&receiver, byA).isSuccess)
        // Same run continued with the new key (a counter past the old one's).
        for _ in 0..<3 { _ = [UInt8]().withUnsafeBytes { new.seal($0) } }
        let byB = [UInt8](repeating: 2, count: 10).withUnsafeBytes { new.seal($0) }
        #expect(byB[6] == 2)
        #expect(open(&receiver, byB).isSuccess)
        // A node that dropped A refuses it.
        var onlyB = FrameAuthenticator(algorithm: algorithm, keys: [Self.keyB], nodeId: 9, epoch: 5)
        #expect(open(&onlyB, byA) == .failure(.unknownKey))
    }

    @Test func theOtherAlgorithmIsRefused() {
        var (sender, _) = pair(.hmacSHA256)
        var (_, receiver) = pair(.chacha20Poly1305)
        let frame = [UInt8](repeating: 1, count: 10).withUnsafeBytes { sender.seal($0) }
        #expect(open(&receiver, frame) == .failure(.wrongAlgorithm))
    }

    @Test func randomBytesNeverPass() {
        var generator = SeededGenerator(seed: 42)
        var (sender, receiver) = pair(.hmacSHA256)
        let valid = [UInt8](repeating: 3, count: 40).withUnsafeBytes { sender.seal($0) }
        for _ in 0..<5000 {
            var bytes = valid
            // Keep the header plausible so the tag check is what refuses.
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                bytes[Int.random(in: 8..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if bytes == valid { continue }
            #expect(!open(&receiver, bytes).isSuccess)
        }
    }

    @Test func tcpFramingFindsFramesInAnySplit() {
        var (sender, receiver) = pair(.chacha20Poly1305)
        let payloads = (1...20).map { n in [UInt8](repeating: UInt8(n), count: n * 37) }
        let stream = payloads.flatMap { p in p.withUnsafeBytes { sender.seal($0) } }
        var framer = StreamFramer(
            .frames(
                headerSize: FrameAuthenticator.headerSize, lengthOffset: FrameAuthenticator.lengthOffset,
                trailer: AuthAlgorithm.chacha20Poly1305.tagSize, prefix: FrameAuthenticator.magic))
        var received: [[UInt8]] = []
        var generator = SeededGenerator(seed: 7)
        var offset = 0
        while offset < stream.count {
            let n = min(stream.count - offset, Int.random(in: 1...300, using: &generator))
            let ok = stream[offset..<(offset + n)].withUnsafeBytes { chunk in
                framer.append(chunk) { frame in
                    receiver.open(frame) { received.append(Array($0)) }
                }
            }
            #expect(ok)
            offset += n
        }
        #expect(received == payloads)
        #expect(framer.buffered == 0)
        // Garbage where a frame should start ends the connection.
        #expect(![UInt8](repeating: 0x41, count: 40).withUnsafeBytes { framer.append($0) { _ in } })
    }

    @Test func keyFileGrammar() throws {
        let good = "# sync key\n1 " + String(repeating: "ab", count: 32) + "\n\n2 " + String(repeating: "CD", count: 48) + "  # next\n"
        let keys = try SyncKeyFile.parse(good, path: "k")
        #expect(keys.map(\.id) == [1, 2])
        #expect(keys[0].secret == [UInt8](repeating: 0xab, count: 32) && keys[1].secret.count == 48)
        let cases: [(String, String)] = [
            ("", "holds no key"),
            ("1\n", "k:1: expected 'ID SECRET'"),
            ("0 " + String(repeating: "ab", count: 32), "k:1: key id '0'"),
            ("1 " + String(repeating: "ab", count: 16), "has 16 bytes"),
            ("1 " + String(repeating: "zz", count: 32), "not hexadecimal"),
            ("1 " + String(repeating: "ab", count: 32) + "\n1 " + String(repeating: "cd", count: 32), "k:2: key id 1 appears twice"),
            (
                (1...3).map { "\($0) " + String(repeating: "ab", count: 32) }.joined(separator: "\n"),
                "k:3: at most 2 keys"
            ),
        ]
        for (text, expected) in cases {
            do {
                _ = try SyncKeyFile.parse(text, path: "k")
                Issue.record("accepted; expected \(expected)")
            } catch {
                #expect(error.description.contains(expected), "\(error.description) lacks \(expected)")
            }
        }
    }

    @Test func keyFileMustBePrivate() throws {
        let path = "/tmp/ctsync-key-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        let text = "1 " + String(repeating: "ab", count: 32) + "\n"
        let fd = Glibc.open(path, O_CREAT | O_WRONLY | O_EXCL, 0o600)
        #expect(fd >= 0)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        #expect(try SyncKeyFile.load(path).count == 1)
        for mode in [0o640, 0o604, 0o660] as [mode_t] {
            chmod(path, mode)
            do {
                _ = try SyncKeyFile.load(path)
                Issue.record("mode \(String(mode, radix: 8)) accepted")
            } catch {
                #expect(error.description.contains("chmod 600"))
            }
        }
        chmod(path, 0o600)
        let link = path + ".link"
        symlink(path, link)
        defer { unlink(link) }
        #expect(throws: KeyFileError.self) { try SyncKeyFile.load(link) }
        #expect(throws: KeyFileError.self) { try SyncKeyFile.load("/tmp") }
        #expect(throws: KeyFileError.self) { try SyncKeyFile.load(path + ".absent") }
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
