import Configuration
import ControlProtocol
import SyncEngine
import SystemCalls

/// Errors that stop the daemon from starting or running, in words.
public enum DaemonError: Error, CustomStringConvertible {
    case startup(String)
    public var description: String {
        switch self {
        case .startup(let m): return m
        }
    }
}

/// The shell's own counters (the kernel mirror's are the node's: `SyncNode.mirror`).
struct RuntimeStats {
    var startedAt: Int64 = 0
    var eventsUnknown = 0
    var kernelFlushes = 0
    var bufferSize = 0
    var localRequests = 0
    var commits = 0
    var commitCreated = 0
    var commitUpdated = 0
    var commitFailed = 0
}

/// conntrackd's `-s` text layouts, filled with ctsync's figures.
enum StatsReport {
    static func cacheSummary(name: String, active: Int, counters: CacheCounters) -> String {
        "cache \(name):\n"
            + "current active connections:\t\(pad(active))\n"
            + "connections created:\t\t\(pad(counters.created))\tfailed:\t\(pad(counters.createFailed))\n"
            + "connections updated:\t\t\(pad(counters.updated))\tfailed:\t\(pad(counters.updateFailed))\n"
            + "connections destroyed:\t\t\(pad(counters.destroyed))\tfailed:\t\(pad(counters.destroyFailed))\n\n"
    }

    static func traffic(bytes: UInt64, packets: UInt64) -> String {
        "traffic processed:\n\(pad(bytes, 20)) Bytes      \(pad(packets, 20)) Pckts\n\n"
    }

    static func messageTracking(malformed: Int, lost: Int) -> String {
        "message tracking:\n\(pad(malformed, 20)) Malformed msgs \(pad(lost, 20)) Lost msgs\n\n"
    }

    static func cacheDetail(name: String, active: Int, counters: CacheCounters) -> String {
        "cache:\(name)\tactive objects:\t\t\(pad(active))\n"
            + "\tactive/total entries:\t\t\(pad(active))/\(pad(active))\n"
            + "\tcreation OK/failed:\t\t\(pad(counters.created))/\(pad(counters.createFailed))\n"
            + "\t\tno memory available:\t\(pad(0))\n"
            + "\t\tno space left in cache:\t\(pad(counters.noSpace))\n"
            + "\tupdate OK/failed:\t\t\(pad(counters.updated))/\(pad(counters.updateFailed))\n"
            + "\t\tentry not found:\t\(pad(0))\n"
            + "\tdeletion created/failed:\t\(pad(counters.destroyed))/\(pad(counters.destroyFailed))\n"
            + "\t\tentry not found:\t\(pad(counters.destroyFailed))\n\n"
    }

    static func runtime(_ s: DaemonStatistics, eventsUnknown: Int) -> String {
        "daemon uptime: \(s.uptimeSeconds / 60) min\n\n"
            + "netlink stats:\n"
            + "\tevents received:\t\(pad(s.netlink.eventsReceived, 20))\n"
            + "\tevents filtered:\t\(pad(s.netlink.eventsFiltered, 20))\n"
            + "\tevents unknown type:\t\t\(pad(eventsUnknown))\n"
            + "\tcatch event failed:\t\t\(pad(0))\n"
            + "\tdump unknown type:\t\t\(pad(0))\n"
            + "\tnetlink overrun:\t\t\(pad(s.netlink.overruns))\n"
            + "\tflush kernel table:\t\t\(pad(s.netlink.kernelFlushes))\n"
            + "\tresync with kernel table:\t\(pad(s.netlink.resyncs))\n"
            + "\tcurrent buffer size (in bytes):\t\(pad(s.netlink.bufferSize))\n\n"
            + "runtime stats:\n"
            + "\tchild process failed:\t\t\(pad(0))\n"
            + "\t\tchild process segfault:\t\(pad(0))\n"
            + "\t\tchild process termsig:\t\(pad(0))\n"
            + "\tselect failed:\t\t\t\(pad(0))\n"
            + "\twait failed:\t\t\t\(pad(0))\n"
            + "\tlocal read failed:\t\t\(pad(s.control.readFailed))\n"
            + "\tlocal unknown request:\t\t\(pad(s.control.unknown))\n\n"
    }

    static func network(malformed: [String: Int] = [:], lost: Int = 0, before: Int = 0) -> String {
        let total = malformed.values.reduce(0, +)
        let kinds = ["Wrong protocol version", "Malformed header", "Malformed payload", "Bad message type", "Truncated message", "Bad message size"]
        return "network statistics:\n\trecv:\n"
            + "\t\tMalformed messages:\t\(pad(total, 20))\n"
            + kinds.map { "\t\t\($0):\t\(pad(malformed[$0] ?? 0, 20))\n" }.joined()
            + "\tsend:\n\t\tMalformed messages:\t\(pad(0, 20))\n\n"
            + "sequence tracking statistics:\n\trecv:\n\t\tPackets lost:\t\t\(pad(lost, 20))\n\t\tPackets before:\t\t\(pad(before, 20))\n\n"
    }

    static func channel(
        _ c: ChannelCounters, device: String, kind: ChannelKind, link: Bool = false, status: String = "RUNNING", active: Bool = true,
        connections: (server: Bool, client: Bool)? = nil
    ) -> String {
        // conntrackd's spelling: "multicast" in lower case; a TCP link's two connections on -s.
        let name = kind == .multicast ? "multicast" : kind == .tcp ? "TCP" : "UDP"
        let state = connections.map {
            " server=\($0.server ? "connected" : "disconnected") client=\($0.client ? "connected" : "disconnected")"
        }
        let head =
            link
            ? "\(name) traffic device=\(device) status=\(status) role=\(active ? "ACTIVE" : "BACKUP"):\n"
            : "\(name) traffic (active device=\(device))\(state ?? ""):\n"
        return head
            + "\(pad(c.bytesSent, 20)) Bytes sent \(pad(c.bytesReceived, 20)) Bytes recv\n"
            + "\(pad(c.datagramsSent, 20)) Pckts sent \(pad(c.datagramsReceived, 20)) Pckts recv\n"
            + "\(pad(c.sendErrors, 20)) Error send \(pad(c.receiveErrors, 20)) Error recv\n\n"
    }

    /// conntrackd's block for `DisableInternalCache on`.
    static func bypassSummary(_ c: BypassCounters) -> String {
        "internal bypass:\n"
            + "connections new:\t\t\(pad(c.new))\n"
            + "connections updated:\t\t\(pad(c.updated))\n"
            + "connections destroyed:\t\t\(pad(c.destroyed))\n\n"
    }

    /// conntrackd's block for `DisableExternalCache on`.
    static func injectSummary(_ c: CacheCounters) -> String {
        "external inject:\n"
            + "connections created:\t\t\(pad(c.created))\tfailed:\t\(pad(c.createFailed))\n"
            + "connections updated:\t\t\(pad(c.updated))\tfailed:\t\(pad(c.updateFailed))\n"
            + "connections destroyed:\t\t\(pad(c.destroyed))\tfailed:\t\(pad(c.destroyFailed))\n\n"
    }

    static func queues() -> String {
        "allocated queue nodes:\t\t\(pad(0))\n\n"
    }

    static func pad<T: BinaryInteger>(_ value: T, _ width: Int = 12) -> String {
        let text = "\(value)"
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
