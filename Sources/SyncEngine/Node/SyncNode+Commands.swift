import FlowModel
import SyncProtocol

/// What an operator (the control socket) or keepalived's notify script asks of the node.
extension SyncNode {
    /// Empties the internal cache, the external one, or both; returns how many flows went.
    /// Nothing goes to the peer: `-f` forgets, it does not destroy.
    public mutating func flushCaches(internal flushInternal: Bool, external flushExternal: Bool) -> Int {
        var flushed = 0
        if flushInternal { flushed += internalCache.flush() }
        if flushExternal { flushed += externalCache.flush() }
        return flushed
    }

    /// Queues the whole internal cache for the peer (`-B`); nil without a Sync section.
    public mutating func sendBulk(environment env: some SyncNodeEnvironment) -> Int? {
        guard mode != nil else { return nil }
        if bypassesInternalCache { return bulkFromKernel(environment: env) }
        mode!.enqueueAll(internalCache.keys)
        enqueueAllExpectations()
        return internalCache.count
    }

    /// Asks the peer for its whole table (`-n`); false without a Sync section.
    public mutating func requestPeerResync() -> Bool {
        guard mode != nil else { return false }
        mode!.requestResync()
        tableRequestPending = true  // dated at the next tick
        return true
    }

    /// The external cache's entries as they are now: what a commit writes into the kernel (a
    /// snapshot: flushes and updates during the commit do not disturb it).
    public var commitSnapshot: CacheEntries { externalCache.entries }
}

extension SyncNode {
    /// A streamed dump of one cache (the control socket's `-i`/`-e`, written as the client
    /// reads): open, then take chunks until `dumpChunk` says the end is reached, then close.
    public mutating func openDump(external: Bool) -> Int {
        external ? externalCache.openCursor() : internalCache.openCursor()
    }

    /// The next `limit` entries of an open dump; false once the dump has reached the end.
    public mutating func dumpChunk(_ cursor: Int, external: Bool, limit: Int, _ body: (CacheEntry) -> Void) -> Bool {
        external ? externalCache.advance(cursor, limit: limit, body) : internalCache.advance(cursor, limit: limit, body)
    }

    public mutating func closeDump(_ cursor: Int, external: Bool) {
        if external { externalCache.closeCursor(cursor) } else { internalCache.closeCursor(cursor) }
    }
}
