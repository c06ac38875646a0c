/// conntrackd 1.4.x wire-format constants. The encoder and decoder arrive with
/// the replication issue; this module stays pure (no I/O, no clock).
public enum SyncProtocol {
    /// `CONNTRACKD_PROTOCOL_VERSION`: the high nibble of every message's first byte.
    public static let version: UInt8 = 1
    /// Size of the message header (version/type, flags, length, sequence number).
    public static let headerSize = 8
}
