import Crypto
import Foundation
import SyncProtocol

/// How a frame is protected: integrity only (HMAC-SHA256, the payload readable on the link) or
/// an AEAD that also encrypts it (ChaCha20-Poly1305). The raw value is the wire code.
public enum AuthAlgorithm: UInt8, Sendable, CaseIterable {
    case hmacSHA256 = 1
    case chacha20Poly1305 = 2

    /// Bytes of authentication tag after the payload.
    public var tagSize: Int { self == .hmacSHA256 ? 32 : 16 }
    public var name: String { self == .hmacSHA256 ? "HMAC-SHA256" : "ChaCha20-Poly1305" }
}

/// One shared secret and the id it is known by on the wire (1...255), so that two keys can be
/// accepted at once while a pair rolls its key over.
public struct SyncKey: Sendable, Equatable {
    public let id: UInt8
    public let secret: [UInt8]
    public init(id: UInt8, secret: [UInt8]) {
        self.id = id
        self.secret = secret
    }
}

/// The envelope sealed with swift-crypto: the daemon's authenticator.
public typealias FrameAuthenticator = FrameEnvelope<CryptoProtection>

extension FrameEnvelope where Protection == CryptoProtection {
    public init(algorithm: AuthAlgorithm, keys: [SyncKey], nodeId: UInt32, epoch: UInt64) {
        self.init(protection: CryptoProtection(algorithm: algorithm, keys: keys, nodeId: nodeId, epoch: epoch), nodeId: nodeId, epoch: epoch)
    }
    public var algorithm: AuthAlgorithm { protection.algorithm }
    /// The first key seals; every key opens.
    public var keys: [SyncKey] { protection.keys }
}

/// HMAC-SHA256 over header and payload, or ChaCha20-Poly1305 encrypting the payload with the
/// header as associated data. Keys are derived from the secret with HKDF-SHA256 (salt
/// "ctsync sync frame v1"); the AEAD's per sender run (node id, epoch), so that its nonce,
/// the frame counter, never repeats under one key.
public struct CryptoProtection: FrameProtection {
    public let algorithm: AuthAlgorithm
    public let keys: [SyncKey]
    private let macKeys: [UInt8: SymmetricKey]
    private let sealKey: SymmetricKey
    /// AEAD keys of the runs heard, per (sender, epoch, key id); bounded.
    private var aeadKeys: [RunKey: SymmetricKey] = [:]
    private struct RunKey: Hashable {
        var sender: UInt32
        var epoch: UInt64
        var keyId: UInt8
    }

    public init(algorithm: AuthAlgorithm, keys: [SyncKey], nodeId: UInt32, epoch: UInt64) {
        precondition(!keys.isEmpty, "at least one key")
        self.algorithm = algorithm
        self.keys = keys
        var mac: [UInt8: SymmetricKey] = [:]
        for key in keys { mac[key.id] = Self.derive(key, info: Array("ctsync hmac-sha256".utf8)) }
        macKeys = mac
        sealKey = algorithm == .hmacSHA256 ? mac[keys[0].id]! : Self.aeadKey(keys[0], nodeId: nodeId, epoch: epoch)
    }

    public var algorithmCode: UInt8 { algorithm.rawValue }
    public var tagSize: Int { algorithm.tagSize }
    public var sealingKeyId: UInt8 { keys[0].id }
    public func holds(keyId: UInt8) -> Bool { macKeys[keyId] != nil }

    static func derive(_ key: SyncKey, info: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: key.secret), salt: Array("ctsync sync frame v1".utf8), info: info, outputByteCount: 32)
    }

    static func aeadKey(_ key: SyncKey, nodeId: UInt32, epoch: UInt64) -> SymmetricKey {
        var info = Array("ctsync chacha20-poly1305".utf8)
        withUnsafeBytes(of: nodeId.bigEndian) { info.append(contentsOf: $0) }
        withUnsafeBytes(of: epoch.bigEndian) { info.append(contentsOf: $0) }
        return derive(key, info: info)
    }

    static func nonce(_ counter: UInt64) -> ChaChaPoly.Nonce {
        var bytes: [UInt8] = [0, 0, 0, 0]
        withUnsafeBytes(of: counter.bigEndian) { bytes.append(contentsOf: $0) }
        return try! ChaChaPoly.Nonce(data: bytes)
    }

    public mutating func seal(_ payload: UnsafeRawBufferPointer, counter: UInt64, headerStart: Int, into frame: inout [UInt8]) {
        switch algorithm {
        case .hmacSHA256:
            frame.append(contentsOf: payload)
            let tag = frame[headerStart...].withUnsafeBytes { HMAC<SHA256>.authenticationCode(for: $0, using: sealKey) }
            frame.append(contentsOf: tag)
        case .chacha20Poly1305:
            let header = Array(frame[headerStart...])
            // A nonce unique per key: the key is this run's own (node id, epoch).
            let box = try! ChaChaPoly.seal(payload, using: sealKey, nonce: Self.nonce(counter), authenticating: header)
            frame.append(contentsOf: box.ciphertext)
            frame.append(contentsOf: box.tag)
        }
    }

    public mutating func open(
        header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer, keyId: UInt8, sender: UInt32, epoch: UInt64,
        counter: UInt64
    ) -> OpenedPayload {
        guard let key = keys.first(where: { $0.id == keyId }), let macKey = macKeys[keyId] else { return .invalid }
        switch algorithm {
        case .hmacSHA256:
            let covered = UnsafeRawBufferPointer(start: header.baseAddress, count: header.count + payload.count)
            return HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: covered, using: macKey) ? .inPlace : .invalid
        case .chacha20Poly1305:
            let run = RunKey(sender: sender, epoch: epoch, keyId: keyId)
            let aead = aeadKeys[run] ?? Self.aeadKey(key, nodeId: sender, epoch: epoch)
            guard let box = try? ChaChaPoly.SealedBox(nonce: Self.nonce(counter), ciphertext: payload, tag: tag),
                let opened = try? ChaChaPoly.open(box, using: aead, authenticating: header)
            else { return .invalid }
            if aeadKeys[run] == nil {
                if aeadKeys.count >= 256 { aeadKeys.removeAll() }
                aeadKeys[run] = aead
            }
            return .decrypted(Array(opened))
        }
    }
}
