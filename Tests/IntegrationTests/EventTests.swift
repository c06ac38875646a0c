import Conntrack
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.serialized, requiresNamespaces) struct EventTests {
    /// Reads events until `count` arrived or 5 s passed.
    func collect(_ listener: EventListener, count: Int) throws -> [FlowEvent] {
        var events: [FlowEvent] = []
        let deadline = Date().addingTimeInterval(5)
        while events.count < count && Date() < deadline {
            events += try listener.next(timeoutMilliseconds: 200)
        }
        return events
    }

    @Test func createUpdateDestroyArriveInOrder() throws {
        let ns = try TestNamespace("ev")
        defer { ns.remove() }
        let listener = try NetworkNamespace.run(ns.name) { try EventListener() }
        var flow = Flow(
            proto: .udp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 10, destinationPort: 20),
            timeout: 60, mark: 1)
        try ns.table { table in
            try table.create(flow)
            flow.mark = 2
            try table.update(flow)
            try table.delete(flow)
        }
        let events = try collect(listener, count: 3)
        #expect(events.map(\.name) == ["NEW", "UPDATE", "DESTROY"])
        #expect(events.allSatisfy { $0.flow?.key == flow.key })
        #expect(events.first?.flow?.mark == 1)
        #expect(events.dropFirst().first?.flow?.mark == 2)
    }

    @Test func subscribingToSomeTypesOnly() throws {
        let ns = try TestNamespace("evd")
        defer { ns.remove() }
        let listener = try NetworkNamespace.run(ns.name) { try EventListener(types: .destroy) }
        let flow = Flow(
            proto: .udp,
            original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: 10, destinationPort: 20),
            timeout: 60)
        try ns.table { table in
            try table.create(flow)
            try table.delete(flow)
        }
        #expect(try collect(listener, count: 1).map(\.name) == ["DESTROY"])
        #expect(try listener.next(timeoutMilliseconds: 100).isEmpty)
    }

    /// A receive buffer far too small for a burst: the loss is reported, never silent.
    @Test func overrunIsReportedAsAnEvent() throws {
        let ns = try TestNamespace("ovr")
        defer { ns.remove() }
        let listener = try NetworkNamespace.run(ns.name) { try EventListener(receiveBufferSize: 4096) }
        let flows = (0..<5000).map { i in
            Flow(
                proto: .udp,
                original: Tuple(
                    source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: UInt16(1000 + i), destinationPort: 53),
                timeout: 60)
        }
        let created = try ns.table { table in try table.write(flows, operation: .create).created }
        #expect(created == 5000)
        var events: [FlowEvent] = []
        var batch = try listener.next(timeoutMilliseconds: 1000)
        while !batch.isEmpty {
            events += batch
            batch = try listener.next(timeoutMilliseconds: 200)
        }
        #expect(events.contains(.overrun))
        #expect(listener.overruns >= 1)
        #expect(events.filter { $0 != .overrun }.count < 5000)
        // The socket keeps working after the overrun, and can be given a larger buffer.
        try listener.setReceiveBufferSize(1 << 20)
        #expect(listener.receiveBufferSize >= 1 << 20)
        try ns.table { table in try table.delete(flows[0]) }
        let after = try collect(listener, count: 1)
        #expect(after.first?.name == "DESTROY")
    }

    /// The events of a socket's own writes are dropped by the kernel (a socket filter on the
    /// port): an injecting daemon neither reads them nor overflows with them; others still come.
    @Test func eventsOfAnIgnoredPortAreFilteredInTheKernel() throws {
        let ns = try TestNamespace("evf")
        defer { ns.remove() }
        let listener = try NetworkNamespace.run(ns.name) { try EventListener(receiveBufferSize: 1 << 20) }
        func udp(_ port: UInt16) -> Flow {
            Flow(
                proto: .udp,
                original: Tuple(source: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, sourcePort: port, destinationPort: 53),
                timeout: 60)
        }
        let injector = try NetworkNamespace.run(ns.name) { try KernelTable() }
        listener.ignoredPort = injector.portID
        #expect(listener.filteredInKernel)
        // Far more than the buffer holds, had they been delivered.
        #expect(try injector.write((0..<20000).map { udp(UInt16(1000 + $0)) }, operation: .create).created == 20000)
        try ns.table { table in try table.create(udp(999)) }
        let events = try collect(listener, count: 1)
        #expect(events.map { $0.flow?.original.sourcePort } == [999])
        #expect(try listener.next(timeoutMilliseconds: 200).isEmpty)
        #expect(listener.overruns == 0 && listener.ignoredEvents == 0)
    }
}
