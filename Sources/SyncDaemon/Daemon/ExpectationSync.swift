import Configuration
import Conntrack
import ControlProtocol
import Foundation
import SyncEngine
import SyncProtocol
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// `Options { ExpectationSync }`: the expectation event socket, the control requests about
/// expectations (`-i/-e expect`, `-F/-R/-c expect`, `-s expect`, `-f expect`) and the
/// expectations' commit, which follows the flows' (an expectation needs its master).
extension Daemon {
    /// Whether expectations are replicated.
    var syncsExpectations: Bool { config.sync?.expectationSync.isEnabled ?? false }

    /// Subscribes to the kernel's expectation events (before the table is read at start).
    func openExpectationListener(ignoring port: UInt32?) throws {
        guard syncsExpectations else { return }
        let made = try ExpectationListener(receiveBufferSize: bufferSize)
        if let port { made.ignoredPort = port }
        expectationListener = made
    }

    /// Reads what the expectation socket holds (a bounded number of reads a turn).
    func readExpectationEvents(_ listener: ExpectationListener) {
        var events: [ExpectationEvent] = []
        for _ in 0..<16 {
            let batch: [(String, Expectation)?]
            do {
                batch = try listener.next(timeoutMilliseconds: 0)
            } catch {
                log.error("reading expectation events failed: \(error)")
                break
            }
            if batch.isEmpty { break }
            for item in batch {
                guard let (name, e) = item else {
                    events.append(.overrun)
                    continue
                }
                switch name {
                case "NEW": events.append(.new(e))
                case "DESTROY": events.append(.destroy(e))
                default: events.append(.update(e))
                }
            }
        }
        node.expectationEvents(events, now: monotonicMilliseconds(), environment: environment)
    }

    func handleExpectations(_ request: ExpectationRequest, legacy: Bool) -> ControlReply {
        guard syncsExpectations else {
            // conntrackd answers nothing when expectations are not configured.
            return legacy ? .success() : .failure("expectations are not replicated: set Options { ExpectationSync on } in the Sync section")
        }
        let now = monotonicMilliseconds()
        switch request {
        case .dump(let which, let xml):
            let cache = which == .external ? node.externalExpectations : node.internalExpectations
            let seconds = now / 1000
            var out = ""
            for entry in cache.entries {
                var e = entry.expectation
                // As conntrackd: the cached timeout is not shown, only how long it has been known.
                e.timeout = nil
                e.id = nil
                if xml {
                    out += ExpectationXML.element(e) + "\n"
                } else {
                    out += ExpectationText.line(e, showTimeout: false) + " [active since \(max(0, seconds - entry.since))s]\n"
                }
            }
            return .success(out)
        case .flushKernel:
            do {
                let table = try KernelTable()
                let before = try table.dumpExpectations().count
                try table.flushExpectations()
                log.notice("flushed \(before) expectations from the kernel")
                return .success(legacy ? "" : "{\"flushed\":\(before)}\n")
            } catch {
                return .failure("flushing the kernel's expectations failed: \(error)")
            }
        case .resync:
            guard node.resyncExpectations(reason: "requested", now: now, environment: environment) else {
                return .failure("resync with the kernel's expectations failed")
            }
            return .success(legacy ? "" : "{\"expectations\":\(node.internalExpectations.count)}\n")
        case .flushCaches(let which):
            let flushed = node.flushExpectationCaches(internal: which != .external, external: which != .internal)
            log.notice("flushing expectation caches (\(which.map(\.rawValue) ?? "internal and external")): \(flushed) expectations")
            return .success(legacy ? "" : "{\"flushed\":\(flushed)}\n")
        case .commit:
            if node.injects {
                return .success(CommitReport().json + "\n")
            }
            var report = CommitReport()
            report.expectations = commitExpectations()
            return .success(report.json + "\n")
        }
    }

    /// Writes the external expectations into the kernel (after the flows: each needs its
    /// master there, with its helper). One that exists is replaced, as conntrackd does. The
    /// timeout is what was left when the peer sent it, less the time since (60 s if that is
    /// not positive), or `CommitTimeout`.
    func commitExpectations() -> CommitReport.Expectations {
        var result = CommitReport.Expectations()
        let started = Date()
        let entries = node.expectationCommitSnapshot
        guard !entries.isEmpty else {
            log.notice("Committed 0 new expectations")
            return result
        }
        let now = monotonicMilliseconds() / 1000
        let commitTimeout = config.sync?.commitTimeout
        let table: KernelTable
        do {
            table = try KernelTable()
        } catch {
            log.error("committing expectations: \(error)")
            result.attempted = entries.count
            result.failed = entries.count
            return result
        }
        // In batches, as the flows; one that exists is replaced (deleted, created again).
        let list = entries.map { Self.prepared($0, now: now, commitTimeout: commitTimeout) }
        result.attempted = list.count
        let failures: [(index: Int, errno: Int32)]
        do {
            failures = try table.createExpectations(list)
        } catch {
            log.error("committing expectations: \(error)")
            result.failed = list.count
            return result
        }
        result.created = list.count - failures.count
        for failure in failures {
            let e = list[failure.index]
            do {
                guard failure.errno == EEXIST else { throw KernelError.request(operation: "expectation create", errno: failure.errno) }
                try Self.create(e, in: table)
                result.created += 1
            } catch {
                result.failed += 1
                log.error("commit of expectation failed: \(error): \(ExpectationText.line(e))")
            }
        }
        result.seconds = Date().timeIntervalSince(started)
        log.notice("Committed \(result.created) new expectations")
        log.notice("expectation commit has taken \(String(format: "%.6f", result.seconds)) seconds")
        if result.failed > 0 { log.warning("\(result.failed) expectations can't be committed") }
        return result
    }

    static func prepared(_ entry: ExpectationEntry, now: Int64, commitTimeout: Int?) -> Expectation {
        var e = entry.expectation
        e.id = nil
        if let commitTimeout {
            e.timeout = UInt32(clamping: commitTimeout)
        } else {
            let left = Int64(e.timeout ?? 60) - max(0, now - entry.lastUpdate)
            e.timeout = UInt32(clamping: left > 0 ? left : 60)
        }
        return e
    }

    /// Creates `e`; one with the same tuple is deleted first and the creation tried once more.
    static func create(_ e: Expectation, in table: KernelTable) throws {
        do {
            try table.createExpectation(e)
        } catch let error as KernelError where error.errno == EEXIST {
            do {
                try table.deleteExpectation(e)
            } catch let error as KernelError where error.errno == ENOENT {}
            try table.createExpectation(e)
        }
    }
}

extension DaemonEnvironment {
    func readKernelExpectations() throws -> [Expectation] { try KernelTable().dumpExpectations() }

    /// `DisableExternalCache`: the peer's expectations written as they come (after the flows
    /// of the same turn); failures are counted, the reason logged.
    func injectExpectations(_ changes: [(FlowMessageKind, Expectation)]) {
        guard let table = expectationWriter else { return }
        let now = monotonicMilliseconds() / 1000
        for (kind, e) in changes {
            do {
                if kind == .destroy {
                    do {
                        try table.deleteExpectation(e)
                    } catch let error as KernelError where error.errno == ENOENT {}
                } else {
                    try Daemon.create(
                        Daemon.prepared(ExpectationEntry(expectation: e, since: now, lastUpdate: now), now: now, commitTimeout: nil), in: table)
                }
                expectationInjectCounters.created += kind == .destroy ? 0 : 1
                expectationInjectCounters.destroyed += kind == .destroy ? 1 : 0
            } catch {
                if kind == .destroy { expectationInjectCounters.destroyFailed += 1 } else { expectationInjectCounters.createFailed += 1 }
                log.warning("injecting an expectation of the peer failed: \(error): \(ExpectationText.line(e))")
            }
        }
    }
}
