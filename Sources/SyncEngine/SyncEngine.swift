/// Namespace of the pure synchronisation core (caches, FTFW/NOTRACK/ALARM state
/// machines, driven by events and an injected clock). Filled by the daemon-core
/// and replication issues.
public enum SyncEngine {}
