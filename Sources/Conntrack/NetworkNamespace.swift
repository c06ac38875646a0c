import CNetfilter
import SystemCalls

#if canImport(Glibc)
    import Glibc
#endif

/// Runs code inside a named network namespace (`ip netns add NAME`, i.e. /run/netns/NAME).
///
/// Only the calling thread moves, and it moves back before returning; sockets opened
/// inside stay bound to the namespace they were opened in. `body` must not suspend.
public enum NetworkNamespace {
    public static func run<T>(_ name: String, _ body: () throws -> T) throws -> T {
        let target = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw KernelError.namespace(name: name, errno: ctsync_errno()) }
        defer { close(target) }
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw KernelError.namespace(name: "(current)", errno: ctsync_errno()) }
        defer { close(home) }
        guard ctsync_setns_net(target) == 0 else { throw KernelError.namespace(name: name, errno: ctsync_errno()) }
        defer {
            if ctsync_setns_net(home) != 0 {
                // Staying in the wrong namespace would silently point later work at the wrong table.
                fatalError("cannot return from network namespace '\(name)': \(errnoText(ctsync_errno()))")
            }
        }
        return try body()
    }
}
