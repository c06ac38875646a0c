import Configuration
import Conntrack
import ControlProtocol
import SyncEngine
import SystemCalls

/// `-c` / `ctsync commit`: the external cache written into the kernel by the committer's
/// thread while the loop runs on; the answer goes out when it ends.
extension Daemon {
    func commit() -> ControlReply {
        guard let sync = config.sync else { return .failure("commit (-c) needs a Sync section") }
        if node.injects {
            log.notice("commit requested: nothing to do, DisableExternalCache is on (the peer's flows are injected as they arrive)")
            return .success(CommitReport().json + "\n")
        }
        if let committer, committer.running {
            log.warning("commit requested while one is running: refused")
            return .failure("a commit is already in progress; wait for it to finish")
        }
        do {
            if committer == nil { committer = try Committer() }
        } catch {
            return .failure("commit: \(error)")
        }
        log.notice("committing the external cache: \(node.externalCache.count) flows")
        // Our own listener would make the kernel build an event per committed flow (and us
        // read and replicate each) while the commit runs: leave the event groups for the
        // commit and re-read the table when it ends. Only when every new flow gets its event
        // extension anyway (nf_conntrack_events=1), or the committed flows would stay silent.
        if let listener, Self.eventsForEveryFlow {
            do {
                try listener.suspend()
                eventsSuspended = true
            } catch {
                log.warning("could not pause events for the commit: \(error)")
            }
        }
        nextToken += 1
        commitIncludesExpectations = syncsExpectations
        committer!.waitingToken = nextToken
        committer!.start(
            node.commitSnapshot, now: monotonicMilliseconds() / 1000, commitTimeout: sync.commitTimeout,
            windowTracking: sync.tcpWindowTracking, batchSize: KernelTable.defaultBatchSize)
        stats.commits += 1
        return .deferred(token: nextToken)
    }

    func commitFinished(_ committer: Committer) {
        guard var report = committer.collect() else { return }
        stats.commitCreated += report.created
        stats.commitUpdated += report.updated
        stats.commitFailed += report.failed
        metrics?.commitEnded(seconds: report.seconds)
        // Flows that did not get into the kernel will be missing after the takeover: a warning.
        if report.failed > 0 { log.warning("\(report.summary)") } else { log.notice("\(report.summary)") }
        if commitIncludesExpectations {
            // Their masters are in the kernel now: the expectations, before the answer. Their
            // events wait in the expectation socket and are read after the re-read below, when
            // the masters are in the internal cache.
            commitIncludesExpectations = false
            report.expectations = commitExpectations()
        }
        let reply: ControlReply
        if report.failed > 0 && report.created + report.updated == 0 && report.attempted > 0 {
            reply = .failure("commit failed: \(report.summary)")
        } else {
            reply = .success(report.json + "\n")
        }
        if let token = committer.waitingToken {
            committer.waitingToken = nil
            control?.complete(token: token, with: reply)
        }
        // The answer goes first: the takeover does not wait for the re-read.
        resumeEventsAfterCommit()
    }

    private func resumeEventsAfterCommit() {
        guard eventsSuspended, let listener else { return }
        eventsSuspended = false
        do {
            try listener.resume()
        } catch {
            log.error("could not resume events after the commit: \(error)")
        }
        // Subscribed again first, then the table: nothing that changed meanwhile is missed.
        node.resyncWithKernel(reason: "after commit", now: monotonicMilliseconds(), environment: environment)
    }
}
