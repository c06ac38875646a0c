import Foundation
import Testing

@testable import SyncDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// Log lines for the journal, and logrotate's SIGHUP.
@Suite struct DaemonLogTests {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "ctsync-log-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func reopenFollowsTheRotatedPath() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/ctsyncd.log"
        let sink = try DaemonLogSink(stderr: false, filePath: path, syslogFacility: nil, environment: [:])
        sink.write(level: .notice, "before the rotation")
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        sink.write(level: .notice, "still into the moved file")
        #expect(sink.reopen())
        sink.write(level: .warning, "after the rotation")
        sink.close()
        let old = try String(contentsOfFile: path + ".1", encoding: .utf8)
        let new = try String(contentsOfFile: path, encoding: .utf8)
        #expect(old.contains("before the rotation") && old.contains("still into the moved file") && !old.contains("after"))
        #expect(new.contains("[warning] after the rotation") && !new.contains("before"))
    }

    @Test func journalStreamIsRecognisedByDeviceAndInode() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fd = open(directory + "/stream", O_CREAT | O_RDWR, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        var status = stat()
        #expect(fstat(fd, &status) == 0)
        #expect(DaemonLogSink.isJournal(descriptor: fd, journalStream: "\(status.st_dev):\(status.st_ino)"))
        #expect(!DaemonLogSink.isJournal(descriptor: fd, journalStream: "\(status.st_dev):\(status.st_ino + 1)"))
        #expect(!DaemonLogSink.isJournal(descriptor: fd, journalStream: nil))
        #expect(!DaemonLogSink.isJournal(descriptor: fd, journalStream: "garbage"))
        #expect(DaemonLogSink.journalLine(priority: LOG_WARNING, "peer silent\nfor 5 s") == "<4>peer silent for 5 s\n")
    }

    /// Under systemd with Syslog on, a line goes through syslog only (which feeds the same
    /// journal): once, not twice. Without Syslog, stderr carries it with its priority.
    @Test func oneLinePerMessageInTheJournal() throws {
        var status = stat()
        #expect(fstat(2, &status) == 0)
        let journal = ["JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino)"]
        let both = try DaemonLogSink(stderr: true, filePath: nil, syslogFacility: "daemon", environment: journal)
        #expect(both.stderrIsJournal && !both.toStderr)
        both.close()
        let alone = try DaemonLogSink(stderr: true, filePath: nil, syslogFacility: nil, environment: journal)
        #expect(alone.stderrIsJournal && alone.toStderr)
        let terminal = try DaemonLogSink(stderr: true, filePath: nil, syslogFacility: "daemon", environment: [:])
        #expect(!terminal.stderrIsJournal && terminal.toStderr)
        terminal.close()
    }
}

/// The metrics endpoint's request handling with broken and hostile requests.
@Suite struct MetricsRequestTests {
    func status(_ line: String) -> String {
        var served = 0
        var refused = 0
        let answer = MetricsServer.respond(to: line, render: { Array("x 1\n".utf8) }, counted: &served, refused: &refused)
        return String(decoding: answer.prefix { $0 != 13 }, as: UTF8.self)
    }

    @Test func onlyGetMetricsIsServed() {
        #expect(status("GET /metrics HTTP/1.1") == "HTTP/1.1 200 OK")
        #expect(status("GET /metrics?x=1 HTTP/1.0") == "HTTP/1.1 200 OK")
        #expect(status("GET /etc/passwd HTTP/1.1") == "HTTP/1.1 404 Not Found")
        #expect(status("POST /metrics HTTP/1.1") == "HTTP/1.1 405 Method Not Allowed")
        #expect(status("\u{0}\u{1}garbage") == "HTTP/1.1 400 Bad Request")
        #expect(status("") == "HTTP/1.1 400 Bad Request")
        #expect(status("GET /metrics SSH-2.0") == "HTTP/1.1 400 Bad Request")
    }

    @Test func headerEndNeedsTheBlankLine() {
        #expect(MetricsServer.headerEnd(Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8)) == nil)
        #expect(MetricsServer.headerEnd(Array("GET / HTTP/1.1\r\n\r\n".utf8)) == 18)
        #expect(MetricsServer.headerEnd(Array("GET / HTTP/1.1\n\n".utf8)) == 16)
        #expect(MetricsServer.headerEnd([UInt8](repeating: 65, count: MetricsServer.requestLimit + 1)) == nil)
    }
}
