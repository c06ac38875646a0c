import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SyncEngine
import SystemCalls

/// Control requests (the UNIX socket: ctsync, `ctsyncd -C FILE -x`, conntrackd's own client):
/// each becomes a node command or a read of the node's caches; the answer is conntrackd's text
/// for a legacy request, JSON for ctsync's.
extension Daemon {
    func handleRequest(_ request: ControlRequest, legacy: Bool) -> ControlReply {
        stats.localRequests += 1
        let now = monotonicMilliseconds()
        switch request {
        case .dump(let which, let format, let filter):
            if which == .external {
                guard config.sync != nil else { return .success() }
            } else if node.bypassesInternalCache {
                return kernelDump(format: format, filter: filter)
            }
            return .success(stream: dumpStream(external: which == .external, format: format, filter: filter))
        case .stats(let section, let json):
            return .success(json ? statistics().json : statsText(section))
        case .flushCache(let which) where node.bypassesInternalCache && which == .internal:
            // conntrackd deletes the kernel's flows here; ctsync does not: -f forgets, and there is
            // nothing to forget. `-F` flushes the kernel table.
            return .failure("no internal cache to flush (DisableInternalCache); -F flushes the kernel table")
        case .flushCache(let which):
            var flushed = node.flushCaches(internal: which != .external, external: which != .internal)
            // `-f` without a word: the expectation caches too, as conntrackd's ALL_FLUSH_CACHE.
            if which == nil { flushed += node.flushExpectationCaches(internal: true, external: true) }
            log.notice("flushing caches (\(which.map(\.rawValue) ?? "internal and external")): \(flushed) flows")
            return .success(legacy ? "" : "{\"flushed\":\(flushed)}\n")
        case .flushKernel:
            do {
                let removed = try KernelTable().delete(matching: filter.accepts)
                stats.kernelFlushes += 1
                node.kernelFlushed(now: now, environment: environment)
                log.notice("flushed \(removed) flows from the kernel table")
                return .success(legacy ? "" : "{\"flushed\":\(removed)}\n")
            } catch {
                return .failure("flushing the kernel table failed: \(error)")
            }
        case .resync where node.bypassesInternalCache:
            return .failure("resync is unsupported with DisableInternalCache: there is no internal cache (-B sends the kernel's table)")
        case .resync:
            guard let result = node.resyncWithKernel(reason: "requested", now: now, environment: environment) else {
                return .failure("resync with the kernel table failed")
            }
            return .success(
                legacy ? "" : "{\"flows\":\(node.internalCache.count),\"added\":\(result.added.count),\"removed\":\(result.removed.count)}\n")
        case .resetTimers:
            return resetTimers(legacy: legacy)
        case .kill:
            log.notice("stop requested on the control socket")
            running = false
            return .success()
        case .sendBulk:
            guard let queued = node.sendBulk(environment: environment) else { return .failure("bulk send (-B) needs a Sync section") }
            log.notice("sending bulk update: \(queued) flows")
            return .success(legacy ? "" : "{\"queued\":\(queued)}\n")
        case .requestResync:
            guard node.requestPeerResync() else { return .failure("resync request (-n) needs a Sync section") }
            log.notice("resync requested from the peer")
            return .success()
        case .commit:
            return commit()
        case .expectations(let what):
            return handleExpectations(what, legacy: legacy)
        case .health(let peer, let loss):
            let verdict = node.health(now: now, limits: HealthLimits(peerTimeoutMs: Int64(peer), lossTimeoutMs: Int64(loss)))
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            guard let data = try? encoder.encode(verdict) else { return .failure("health: cannot encode the verdict") }
            return .success(bytes: Array(data) + [10])
        }
    }

    /// Flows rendered per chunk of a dump: about 256 KiB of text or JSON.
    static let dumpChunkFlows = 1024

    /// A cache's dump, written as the client reads it (chunks of `dumpChunkFlows`): memory stays
    /// flat however big the cache (it was built whole, up to hundreds of MB for a million
    /// flows, once per client). A flow present for the whole dump appears once; one created or
    /// removed meanwhile may or may not (conntrackd forks and dumps a snapshot).
    private func dumpStream(external: Bool, format: DumpFormat, filter: FlowFilter?) -> ControlStream {
        let cursor = node.openDump(external: external)
        let text = FlowTextFormat()
        return ControlStream(
            produce: { [weak self] out in
                guard let self else { return false }
                let now = monotonicMilliseconds() / 1000
                return node.dumpChunk(cursor, external: external, limit: Self.dumpChunkFlows) { entry in
                    if let filter, !filter.matches(entry.flow) { return }
                    var flow = entry.flow
                    let age = max(0, now - entry.since)
                    switch format {
                    case .text:
                        // conntrackd hides the cached timeout: it only says when the cache learnt it.
                        flow.timeout = nil
                        out.append(contentsOf: (text.line(flow) + " [active since \(age)s]\n").utf8)
                    case .xml:
                        flow.timeout = nil
                        out.append(contentsOf: (FlowXML.element(flow) + "\n").utf8)
                    case .json:
                        out.append(contentsOf: (FlowJSON.encode(flow, extra: [("active_since", "\(age)")]) + "\n").utf8)
                    }
                }
            },
            finish: { [weak self] in self?.node.closeDump(cursor, external: external) })
    }

    /// `-i` with `DisableInternalCache`: the kernel's table as the filter accepts it, in
    /// conntrack's full line (with the timeout, no "[active since]"), as conntrackd prints it.
    private func kernelDump(format: DumpFormat, filter request: FlowFilter?) -> ControlReply {
        var out: [UInt8] = []
        let text = FlowTextFormat()
        do {
            try KernelTable().dump { flow in
                guard filter.accepts(flow), request?.matches(flow) ?? true else { return }
                switch format {
                case .text: out.append(contentsOf: (text.line(flow) + "\n").utf8)
                case .xml: out.append(contentsOf: (FlowXML.element(flow) + "\n").utf8)
                case .json: out.append(contentsOf: (FlowJSON.encode(flow) + "\n").utf8)
                }
            }
        } catch {
            return .failure("reading the kernel table failed: \(error)")
        }
        return .success(bytes: out)
    }

    /// `-t`: every accepted kernel flow whose timeout is longer than `PurgeTimeout` gets it.
    private func resetTimers(legacy: Bool) -> ControlReply {
        let purge = UInt32(clamping: config.sync?.purgeTimeout ?? 60)
        do {
            let table = try KernelTable()
            var changed: [Flow] = []
            try table.dump { flow in
                guard filter.accepts(flow), (flow.timeout ?? 0) > purge else { return }
                var f = flow
                f.timeout = purge
                changed.append(f)
            }
            let report = try table.write(changed, operation: .update)
            log.notice("reset the timers of \(report.updated) kernel flows to \(purge) s (PurgeTimeout)")
            return .success(legacy ? "" : "{\"updated\":\(report.updated),\"timeout\":\(purge)}\n")
        } catch {
            return .failure("resetting kernel timers failed: \(error)")
        }
    }
}
