import FlowModel
import Foundation
import Testing

@testable import Configuration

/// Files and helpers shared by the Config*.swift tests.
enum ConfigFixtures {
    /// Where the Debian conntrackd package puts its example configurations.
    static let debianExamples = "/usr/share/doc/conntrackd/examples"

    /// The package root, found from this file (symlinks resolved).
    static var packageRoot: String {
        let file = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        return file.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Every `conntrackd.conf` under the Debian examples folder, or nil when it is missing.
    static func debianExampleFiles() -> [String]? {
        guard let walker = FileManager.default.enumerator(atPath: debianExamples) else { return nil }
        var files: [String] = []
        while let item = walker.nextObject() as? String {
            if item.hasSuffix("conntrackd.conf") { files.append(debianExamples + "/" + item) }
        }
        return files.sorted()
    }

    static func repoExampleFiles() -> [String] {
        let dir = packageRoot + "/conf"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        // The package's configuration (/etc/ctsyncd/ctsyncd.conf) is held to the same rules.
        return names.filter { $0.hasSuffix(".conf") }.sorted().map { dir + "/" + $0 } + [packageRoot + "/packaging/ctsyncd.conf"]
    }

    static func parse(_ text: String, path: String = "test.conf") throws(ConfigError) -> DaemonConfig {
        try DaemonConfig.parse(text, path: path)
    }

    /// The error text a file produces, or nil when it parses.
    static func errorText(_ text: String, path: String = "test.conf") -> String? {
        do {
            _ = try DaemonConfig.parse(text, path: path)
            return nil
        } catch {
            return error.description
        }
    }

    /// A minimal valid Sync section around `body` lines of a mode block.
    static func sync(mode: String = "FTFW", _ body: String = "", channel: String? = nil) -> String {
        let link =
            channel ?? "UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 3780 Interface eth1 }"
        return "Sync {\n Mode \(mode) {\n\(body)\n }\n \(link)\n}\n"
    }
}

@Suite struct ConfigExampleTests {
    @Test func debianExamplesParse() throws {
        guard let files = ConfigFixtures.debianExampleFiles() else {
            let message =
                "\(ConfigFixtures.debianExamples) is missing: install the Debian package conntrackd (apt-get install conntrackd) "
                + "so its example configurations are checked"
            Issue.record(Comment(rawValue: message))
            return
        }
        #expect(files.count >= 4, "expected the stats, ftfw, notrack and alarm examples, found \(files)")
        for file in files {
            let config: DaemonConfig
            do {
                config = try DaemonConfig.load(path: file)
            } catch {
                Issue.record("\(error)")
                continue
            }
            #expect(config.warnings.isEmpty, "\(file): \(config.warnings)")
            #expect(config.general.lockFile == "/var/lock/conntrack.lock")
            #expect(config.general.unixPath == "/var/run/conntrackd.ctl")
            #expect(config.general.filter.addresses?.policy == .ignore)
            #expect(config.general.filter.addresses?.networks.first == IPNetwork(address: IPAddress("127.0.0.1")!))
            if file.hasSuffix("stats/conntrackd.conf") {
                #expect(config.sync == nil)
                #expect(config.stats == StatsConfig(logFile: ConfigDefaults.statsLogFile))
                #expect(config.general.hashSize == 8192)
                #expect(config.general.hashLimit == 65535)
                #expect(config.general.netlinkBufferSize == 262142)
                #expect(config.general.netlinkBufferSizeMaxGrowth == 655355)
                #expect(config.general.filter.protocols == ProtocolFilter(policy: .accept, protocols: [.tcp]))
                continue
            }
            let sync = try #require(config.sync, "\(file) has a Sync section")
            #expect(config.stats == nil)
            #expect(config.general.hashSize == 32768)
            #expect(config.general.hashLimit == 131072)
            #expect(config.general.logFile == ConfigDefaults.logFile)
            #expect(config.general.effectiveNetlinkBufferSize == 2_097_152)
            #expect(config.general.netlinkBufferSizeMaxGrowth == 8_388_608)
            #expect(config.general.filter.fromKernelspace == false)
            #expect(config.general.filter.protocols == ProtocolFilter(policy: .accept, protocols: [.tcp, .sctp, .dccp]))
            #expect(config.general.filter.addresses?.networks.count == 6)
            #expect(
                sync.channels == [
                    .multicast(
                        MulticastChannel(
                            group: IPAddress("225.0.0.50")!, port: 3780, interfaceAddress: IPAddress("192.168.100.100")!,
                            interface: "eth2", sendBufferSize: 1_249_280, receiveBufferSize: 1_249_280, checksum: true))
                ])
            #expect(sync.purgeTimeout == 60)
            #expect(sync.commitTimeout == nil)
            if file.contains("/ftfw/") { #expect(sync.mode == .ftfw(FTFWOptions())) }
            if file.contains("/notrack/") { #expect(sync.mode == .notrack(NotrackOptions())) }
            if file.contains("/alarm/") { #expect(sync.mode == .alarm(AlarmOptions(refreshTime: 15, cacheTimeout: 180))) }
        }
    }

    @Test func repoExamplesParseWithoutWarnings() throws {
        let files = ConfigFixtures.repoExampleFiles()
        let names = Set(files.map { ($0 as NSString).lastPathComponent })
        #expect(
            names.isSuperset(of: [
                "ftfw-udp.conf", "ftfw-multicast.conf", "ftfw-tcp.conf", "notrack.conf", "alarm.conf", "stats.conf",
                "ctsyncd.conf",
            ]))
        for file in files {
            do {
                let config = try DaemonConfig.load(path: file)
                #expect(config.warnings.isEmpty, "\(file): \(config.warnings)")
                #expect(config.general.lockFile.hasPrefix("/run/ctsyncd/"), "\(file)")
                #expect(config.general.unixPath.hasPrefix("/run/ctsyncd/"), "\(file)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func ftfwUDPExampleValues() throws {
        let config = try DaemonConfig.load(path: ConfigFixtures.packageRoot + "/conf/ftfw-udp.conf")
        let sync = try #require(config.sync)
        #expect(sync.mode == .ftfw(FTFWOptions(resendQueueSize: 131072, ackWindowSize: 300, startupResync: true)))
        #expect(
            sync.channels == [
                .udp(
                    UnicastChannel(
                        localAddress: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, port: 3780, interface: "eth1",
                        sendBufferSize: 1_249_280, receiveBufferSize: 1_249_280))
            ])
        #expect(config.general.filter.addresses?.networks.contains(IPNetwork(address: IPAddress("198.18.0.0")!, prefixLength: 24)) == true)
        #expect(config.general.netlinkOverrunResync == 30)
    }

    @Test func otherRepoExamplesValues() throws {
        let root = ConfigFixtures.packageRoot + "/conf/"
        let multicast = try #require(try DaemonConfig.load(path: root + "ftfw-multicast.conf").sync)
        #expect(multicast.channels.count == 2)
        #expect(multicast.defaultChannelIndex == 0)
        #expect(multicast.expectationSync == .helpers(["ftp", "sip"]))
        let tcp = try DaemonConfig.load(path: root + "ftfw-tcp.conf")
        #expect(tcp.sync?.channels.first?.kind == .tcp)
        #expect(tcp.sync?.channels.first?.family == .ipv6)
        #expect(tcp.general.netlinkOverrunResync == nil)
        #expect(tcp.general.filter.tcpStates?.states == [.established, .close, .timeWait, .closeWait])
        let notrack = try DaemonConfig.load(path: root + "notrack.conf")
        #expect(notrack.sync?.commitTimeout == 180)
        #expect(notrack.general.syslogFacility == "local5")
        #expect(notrack.general.filter.protocols == ProtocolFilter(policy: .ignore, protocols: [.icmp, .icmpv6]))
        let alarm = try DaemonConfig.load(path: root + "alarm.conf")
        #expect(alarm.general.scheduler == SchedulerConfig(policy: .fifo, priority: 50))
        #expect(alarm.sync?.channels.first?.isDefault == false)
        let stats = try DaemonConfig.load(path: root + "stats.conf")
        #expect(stats.general.pollSeconds == 15)
        #expect(stats.general.filter.fromKernelspace)
        #expect(stats.stats == StatsConfig(logFile: ConfigDefaults.statsLogFile, syslogFacility: nil))
    }
}

@Suite struct ConfigDefaultTests {
    @Test func emptyFileGivesDefaults() throws {
        for text in ["", "\n\n", "# only a comment\n", "General {\n}\n", "General { }"] {
            let config = try ConfigFixtures.parse(text)
            #expect(config.sync == nil)
            #expect(config.stats == nil)
            #expect(config.helper == nil)
            #expect(config.warnings.isEmpty)
            let g = config.general
            #expect(g == GeneralConfig())
            #expect(g.hashSize == 65536)
            #expect(g.hashLimit == 262144)
            #expect(g.logFile == nil)
            #expect(g.syslogFacility == nil)
            #expect(g.lockFile == "/var/lock/conntrackd.lock")
            #expect(g.unixPath == "/var/run/conntrackd.ctl")
            #expect(g.unixBacklog == 100)
            #expect(g.netlinkBufferSize == 0)
            #expect(g.netlinkBufferSizeMaxGrowth == 0)
            #expect(g.effectiveNetlinkBufferSize == nil)
            #expect(g.netlinkOverrunResync == 30)
            #expect(g.netlinkEventsReliable == false)
            #expect(g.pollSeconds == 0)
            #expect(g.isPolling == false)
            #expect(g.eventIterationLimit == 100)
            #expect(g.nice == nil)
            #expect(g.scheduler == nil)
            #expect(g.systemd == true)
            #expect(g.filter.isEmpty)
            #expect(g.filter.fromKernelspace == false)
        }
    }

    @Test func syncDefaults() throws {
        let config = try ConfigFixtures.parse(ConfigFixtures.sync())
        let sync = try #require(config.sync)
        #expect(sync.mode == .ftfw(FTFWOptions(resendQueueSize: 131072, ackWindowSize: 300)))
        #expect(sync.commitTimeout == nil)
        #expect(sync.purgeTimeout == 60)
        #expect(sync.tcpWindowTracking == false)
        #expect(sync.expectationSync == .off)
        #expect(sync.errorQueueLength == 128)
        guard case .udp(let udp) = sync.channels.first else {
            Issue.record("expected a UDP channel")
            return
        }
        #expect(udp.checksum)
        #expect(udp.sendBufferSize == nil)
        #expect(udp.receiveBufferSize == nil)
        #expect(udp.isDefault == false)
        let alarm = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "ALARM"))
        #expect(alarm.sync?.mode == .alarm(AlarmOptions(refreshTime: 60, cacheTimeout: 180)))
        let notrack = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "NOTRACK"))
        #expect(notrack.sync?.mode == .notrack(NotrackOptions()))
    }

    /// conntrackd treats 0 as "not set" for these and applies its default.
    @Test func zeroMeansDefault() throws {
        let general = try ConfigFixtures.parse(
            "General { HashSize 0 HashLimit 0 EventIterationLimit 0 NetlinkOverrunResync 0 UNIX { Backlog 0 } }")
        #expect(general.general == GeneralConfig())
        let ftfw = try ConfigFixtures.parse(
            ConfigFixtures.sync("ResendQueueSize 0 ACKWindowSize 0 PurgeTimeout 0 CommitTimeout 0"))
        #expect(ftfw.sync?.mode == .ftfw(FTFWOptions()))
        #expect(ftfw.sync?.purgeTimeout == 60)
        #expect(ftfw.sync?.commitTimeout == nil)
        let alarm = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "ALARM", "RefreshTime 0 CacheTimeout 0"))
        #expect(alarm.sync?.mode == .alarm(AlarmOptions()))
    }
}

@Suite struct ConfigOptionTests {
    @Test func everyGeneralOption() throws {
        let text = """
            General {
                Systemd no
                Nice -5
                HashSize 1024
                HashLimit 4096
                LogFile /var/log/x.log
                Syslog local3
                LockFile /run/x.lock
                UNIX {
                    Path /run/x.ctl
                    Backlog 20
                }
                NetlinkBufferSize 1048576
                NetlinkBufferSizeMaxGrowth 2097152
                NetlinkOverrunResync 12
                NetlinkEventsReliable yes
                PollSecs 7
                EventIterationLimit 50
                Scheduler {
                    Type rr
                    Priority 10
                }
                Filter From Kernelspace {
                    Protocol Accept { TCP UDP sctp IPv6-ICMP }
                    Address Accept {
                        IPv4_address 198.18.0.0/15
                        IPv6_address 2001:db8::/32
                        IPv6_address ::1
                    }
                    State Ignore { SYN_SENT SYN_RECV for TCP LISTEN CLOSE for TCP }
                }
            }
            """
        let g = try ConfigFixtures.parse(text).general
        #expect(g.systemd == false)
        #expect(g.nice == -5)
        #expect(g.hashSize == 1024)
        #expect(g.hashLimit == 4096)
        #expect(g.logFile == "/var/log/x.log")
        #expect(g.syslogFacility == "local3")
        #expect(g.lockFile == "/run/x.lock")
        #expect(g.unixPath == "/run/x.ctl")
        #expect(g.unixBacklog == 20)
        #expect(g.effectiveNetlinkBufferSize == 1_048_576)
        #expect(g.netlinkBufferSizeMaxGrowth == 2_097_152)
        #expect(g.netlinkOverrunResync == 12)
        #expect(g.netlinkEventsReliable)
        #expect(g.pollSeconds == 7)
        #expect(g.eventIterationLimit == 50)
        #expect(g.scheduler == SchedulerConfig(policy: .roundRobin, priority: 10))
        #expect(g.scheduler?.type == "RR")
        #expect(g.filter.fromKernelspace)
        #expect(g.filter.protocols == ProtocolFilter(policy: .accept, protocols: [.tcp, .udp, .sctp, .icmpv6]))
        #expect(
            g.filter.addresses
                == AddressFilter(
                    policy: .accept,
                    networks: [
                        IPNetwork(address: IPAddress("198.18.0.0")!, prefixLength: 15),
                        IPNetwork(address: IPAddress("2001:db8::")!, prefixLength: 32), IPNetwork(address: IPAddress("::1")!),
                    ]))
        #expect(g.filter.tcpStates == TCPStateFilter(policy: .ignore, states: [.synSent, .synRecv, TCPState(rawValue: 9), .close]))
    }

    @Test func aliasesAndBooleans() throws {
        let text = """
            General {
                SocketBufferSize 4096
                SocketBufferSizeMaxGrown 8192
                NetlinkEventsReliable On
                Systemd OFF
                LogFile on
                Syslog on
                NetlinkOverrunResync off
                Filter { State Accept { CLOSED CLOSE ESTABLISHED for TCP } }
            }
            """
        let g = try ConfigFixtures.parse(text).general
        #expect(g.netlinkBufferSize == 4096)
        #expect(g.netlinkBufferSizeMaxGrowth == 8192)
        #expect(g.netlinkEventsReliable)
        #expect(g.systemd == false)
        #expect(g.logFile == "/var/log/conntrackd.log")
        #expect(g.syslogFacility == "daemon")
        #expect(g.netlinkOverrunResync == nil)
        #expect(g.filter.tcpStates?.states == [.close, .established])
        let growth = try ConfigFixtures.parse("General { SocketBufferSizeMaxGrowth 1 }").general
        #expect(growth.netlinkBufferSizeMaxGrowth == 1)
        for (word, value) in [("yes", true), ("YES", true), ("oN", true), ("no", false), ("No", false), ("oFf", false)] {
            #expect(try ConfigFixtures.parse("General { NetlinkEventsReliable \(word) }").general.netlinkEventsReliable == value)
        }
    }

    @Test func everySyncOption() throws {
        let text = """
            Sync {
                PurgeTimeout 30
                Mode FTFW {
                    ResendQueueSize 1000
                    ACKWindowSize 20
                    DisableExternalCache off
                    StartupResync yes
                    CommitTimeout 90
                }
                TCP {
                    IPv4_address 198.18.0.1
                    IPv4_Destination_Address 198.18.0.2
                    Port 3780
                    Interface eth1
                    SndSocketBuffer 1000
                    RcvSocketBuffer 2000
                    Checksum off
                    ErrorQueueLength 64
                }
                TCP Default {
                    IPv6_address fe80::1
                    IPv6_Destination_Address fe80::2
                    Port 3781
                    Interface eth2
                }
                Options {
                    TCPWindowTracking on
                    ExpectationSync on
                }
            }
            """
        let sync = try #require(try ConfigFixtures.parse(text).sync)
        #expect(sync.mode == .ftfw(FTFWOptions(resendQueueSize: 1000, ackWindowSize: 20, disableExternalCache: false, startupResync: true)))
        #expect(sync.mode.startupResync)
        #expect(sync.commitTimeout == 90)
        #expect(sync.purgeTimeout == 30)
        #expect(sync.tcpWindowTracking)
        #expect(sync.expectationSync == .all)
        #expect(sync.errorQueueLength == 64)
        #expect(sync.defaultChannelIndex == 1)
        #expect(
            sync.channels == [
                .tcp(
                    UnicastChannel(
                        localAddress: IPAddress("198.18.0.1")!, destination: IPAddress("198.18.0.2")!, port: 3780, interface: "eth1",
                        sendBufferSize: 1000, receiveBufferSize: 2000, checksum: false, errorQueueLength: 64)),
                .tcp(
                    UnicastChannel(
                        isDefault: true, localAddress: IPAddress("fe80::1")!, destination: IPAddress("fe80::2")!, port: 3781,
                        interface: "eth2")),
            ])
    }

    @Test func notrackAlarmAndMulticastOptions() throws {
        let notrack = """
            Sync {
                Mode NOTRACK {
                    DisableInternalCache yes
                    DisableExternalCache no
                    StartupResync on
                    PurgeTimeout 5
                }
                Multicast Default {
                    IPv6_address ff02::1:3
                    Group 3780
                    Interface eth0
                    IPv6_interface fe80::1
                    Checksum no
                }
                Options { ExpectationSync { ftp sip FTP q.931 h.245 } }
            }
            """
        let config = try ConfigFixtures.parse(notrack)
        let sync = try #require(config.sync)
        #expect(sync.mode == .notrack(NotrackOptions(disableInternalCache: true, disableExternalCache: false, startupResync: true)))
        #expect(!sync.mode.usesInternalCache)
        #expect(sync.purgeTimeout == 5)
        #expect(sync.expectationSync == .helpers(["ftp", "sip", "q.931", "h.245"]))
        #expect(
            sync.channels == [
                .multicast(MulticastChannel(isDefault: true, group: IPAddress("ff02::1:3")!, port: 3780, interface: "eth0", checksum: false))
            ])
        #expect(
            config.warnings.map(\.message) == ["IPv6_interface in Sync.Multicast is ignored, as conntrackd ignores it: Interface selects the link"])

        // The timing options may also sit directly in Sync, before or after the mode block.
        let alarm = try ConfigFixtures.parse(
            "Sync { RefreshTime 5 CacheTimeout 20 CommitTimeout 7\n Mode ALARM { }\n"
                + "UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 1 Interface lan0 } }")
        #expect(alarm.sync?.mode == .alarm(AlarmOptions(refreshTime: 5, cacheTimeout: 20)))
        #expect(alarm.sync?.commitTimeout == 7)
    }

    @Test func legacyModeNamesWarn() throws {
        let nack = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "nack"))
        #expect(nack.sync?.mode == .ftfw(FTFWOptions()))
        #expect(nack.warnings.map(\.description) == ["test.conf:2:7: warning: 'nack' is the old name of FTFW mode; write FTFW"])
        let persistent = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "PERSISTENT"))
        #expect(persistent.sync?.mode == .alarm(AlarmOptions()))
        let lower = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "ftfw"))
        #expect(lower.sync?.mode == .ftfw(FTFWOptions()))
        #expect(lower.warnings.isEmpty)
    }

    @Test func statsAndHelperSections() throws {
        let text = """
            Stats {
                LogFile /var/log/s.log
                Syslog local1
            }
            General { Syslog local2 }
            Helper {
                Setup yes
                Type ftp inet tcp {
                    QueueNum 3
                    QueueLen 10240
                    Policy ftp {
                        ExpectMax 1
                        ExpectTimeout 300
                    }
                }
                Type rpc inet6 udp {
                    QueueNum 4
                }
            }
            """
        let config = try ConfigFixtures.parse(text)
        #expect(config.stats == StatsConfig(logFile: "/var/log/s.log", syslogFacility: "local1"))
        #expect(
            config.helper
                == HelperConfig(
                    setup: true,
                    types: [
                        HelperType(
                            name: "ftp", family: .ipv4, proto: .tcp, queueNumber: 3, queueLength: 10240,
                            policies: [HelperPolicy(name: "ftp", expectMax: 1, expectTimeout: 300)]),
                        HelperType(name: "rpc", family: .ipv6, proto: .udp, queueNumber: 4),
                    ]))
        #expect(
            config.warnings.map(\.description) == [
                "test.conf:3:5: warning: Syslog facility 'local1' in Stats differs from 'local2' in General; conntrackd uses General's"
            ])
    }

    @Test func commentsWhitespaceAndLayout() throws {
        // Values may sit on the next line, blocks may share a line, CRLF line ends and a final
        // comment without a newline are fine (conntrackd itself rejects the last one).
        let text = "General{HashSize\n  8192 # buckets\r\n\tUNIX{Path /run/a.ctl\t# the socket\r\n}}\r\n# end"
        let g = try ConfigFixtures.parse(text).general
        #expect(g.hashSize == 8192)
        #expect(g.unixPath == "/run/a.ctl")
        // A path may contain '#': conntrackd's path token runs to the next space.
        #expect(try ConfigFixtures.parse("General { LogFile /var/log/a#b }").general.logFile == "/var/log/a#b")
    }

    @Test func repeatedSectionsMergeAndRepeatedOptionsWarn() throws {
        let text = """
            General { HashSize 10 }
            General {
                HashSize 20
                Filter { Address Ignore { IPv4_address 127.0.0.1 } }
                Filter { Address Ignore { IPv4_address 127.0.0.2 IPv4_address 127.0.0.1 } }
            }
            """
        let config = try ConfigFixtures.parse(text)
        #expect(config.general.hashSize == 20)
        #expect(config.general.filter.addresses?.networks.map(\.description) == ["127.0.0.1", "127.0.0.2"])
        #expect(
            config.warnings.map(\.description) == [
                "test.conf:3:5: warning: HashSize in General is set again; this value replaces the one at 1:11 "
                    + "(the last one wins, as in conntrackd)",
                "test.conf:5:67: warning: IPv4_address 127.0.0.1 is listed twice in General.Filter.Address Ignore",
            ])
    }

    @Test func conntrackdIgnoresAndCtsyncWarns() throws {
        let buffer = try ConfigFixtures.parse("General {\n NetlinkBufferSize 2097152\n}")
        #expect(buffer.general.netlinkBufferSize == 2_097_152)
        #expect(buffer.general.effectiveNetlinkBufferSize == nil)
        #expect(
            buffer.warnings.map(\.description) == [
                "test.conf:2:2: warning: NetlinkBufferSize 2097152 in General is not applied because "
                    + "NetlinkBufferSizeMaxGrowth is not set; the system default buffer size is used, as conntrackd does"
            ])
        let commit = try ConfigFixtures.parse(ConfigFixtures.sync(mode: "NOTRACK", "CommitTimeout 30\nDisableExternalCache on"))
        #expect(commit.sync?.commitTimeout == nil)
        #expect(commit.sync?.mode.usesExternalCache == false)
        #expect(
            commit.warnings.map(\.message) == [
                "CommitTimeout is ignored with DisableExternalCache on (nothing is committed), as conntrackd ignores it"
            ])
        let refresh = try ConfigFixtures.parse(
            ConfigFixtures.sync("CommitTimeout 30").replacingOccurrences(of: "Sync {", with: "Sync { RefreshTime 9"))
        #expect(refresh.warnings.map(\.message) == ["RefreshTime only applies to Mode ALARM; Mode FTFW ignores it"])
        let empty = try ConfigFixtures.parse(ConfigFixtures.sync().replacingOccurrences(of: "\n}\n", with: "\nOptions { ExpectationSync { } }\n}\n"))
        #expect(empty.sync?.expectationSync == .all)
        #expect(empty.warnings.count == 1)
    }
}

@Suite struct ConfigSettingTests {
    @Test func settingsInFileOrderWithCanonicalPaths() throws {
        let text = """
            General {
                SocketBufferSize 1
                UNIX { Path /run/a }
                Filter { Address Ignore { IPv4_address 1.2.3.4 } }
            }
            Sync {
                Mode FTFW { ResendQueueSize 5 PurgeTimeout 5 }
                UDP Default { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 1 Interface lan0 }
                Options { TCPWindowTracking on }
            }
            """
        let config = try ConfigFixtures.parse(text)
        #expect(
            config.settings.map(\.path) == [
                "General", "General.NetlinkBufferSize", "General.UNIX", "General.UNIX.Path", "General.Filter",
                "General.Filter.Address Ignore", "General.Filter.Address Ignore.IPv4_address", "Sync", "Sync.Mode FTFW",
                "Sync.Mode FTFW.ResendQueueSize", "Sync.Mode FTFW.PurgeTimeout", "Sync.UDP", "Sync.UDP.IPv4_address",
                "Sync.UDP.IPv4_Destination_Address", "Sync.UDP.Port", "Sync.UDP.Interface", "Sync.Options",
                "Sync.Options.TCPWindowTracking",
            ])
        #expect(config.settings[1] == ConfigSetting(path: "General.NetlinkBufferSize", name: "SocketBufferSize", line: 2, column: 5))
        #expect(config.settings[8] == ConfigSetting(path: "Sync.Mode FTFW", name: "Mode", line: 7, column: 5))
        // FTFW over UDP is acted on since replication landed.
        #expect(config.inactiveSettings().isEmpty)
        let notrack = try ConfigFixtures.parse(
            "General { UNIX { Path /run/a } }\nSync { Mode NOTRACK { DisableInternalCache on } UDP { IPv4_address 198.18.0.1 IPv4_Destination_Address 198.18.0.2 Port 1 Interface lan0 } }\n"
        )
        // DisableInternalCache is acted on; the Helper section is parsed, out of scope.
        #expect(notrack.inactiveSettings().isEmpty)
    }

    @Test func activeOptionPathsMatchTheBrief() {
        let active = DaemonConfig.activeOptionPaths
        for option in [
            "HashSize", "HashLimit", "LogFile", "Syslog", "LockFile", "UNIX.Path", "UNIX.Backlog", "NetlinkBufferSize",
            "NetlinkBufferSizeMaxGrowth", "NetlinkOverrunResync", "NetlinkEventsReliable", "PollSecs", "EventIterationLimit", "Nice",
            "Systemd", "Filter", "Scheduler", "Scheduler.Type", "Scheduler.Priority", "Filter.Protocol Accept",
            "Filter.Address Ignore.IPv6_address", "Filter.State Ignore",
        ] {
            #expect(active.contains("General.\(option)"), "General.\(option)")
        }
        #expect(active.contains("Sync.PurgeTimeout"))
        #expect(active.contains("Sync.Mode ALARM.PurgeTimeout"))
        #expect(active.contains("Sync.Mode FTFW.ResendQueueSize") && active.contains("Sync.UDP.Port"))
        #expect(active.contains("Sync.Mode NOTRACK.DisableInternalCache"))
        #expect(active.contains("Sync.TCP.Port") && active.contains("Sync.TCP.ErrorQueueLength"))
        #expect(active.contains("Stats.LogFile") && active.contains("Stats.Syslog"))
        #expect(!active.contains("Helper"))
        // ctsync's own blocks are acted on (the daemon must not log them as "not acted on").
        for path in [
            "Sync.Auth", "Sync.Auth.KeyFile", "Sync.Auth.Algorithm", "Sync.Auth.NodeId", "Sync.Options.UpdateDelay", "Metrics", "Metrics.Port",
        ] {
            #expect(active.contains(path), "\(path)")
        }
    }

    @Test func metricsBlock() throws {
        #expect(try ConfigFixtures.parse("General { }\n").metrics == nil)
        let defaults = try ConfigFixtures.parse("Metrics { }\n")
        #expect(defaults.metrics == MetricsConfig(address: IPAddress("127.0.0.1")!, port: 9497))
        let given = try ConfigFixtures.parse("Metrics {\n IPv6_address ::1\n Port 9100\n}\n")
        #expect(given.metrics == MetricsConfig(address: IPAddress("::1")!, port: 9100))
        #expect(given.inactiveSettings().isEmpty)
        for (text, message) in [
            ("Metrics { Port 0 }\n", "Port in Metrics expects a port number from 1 to 65535"),
            ("Metrics { IPv4_address 198.18.0.1\n IPv6_address ::1 }\n", "the address is already given at 1:11"),
            ("Metrics { IPv4_address ::1 }\n", "IPv4_address in Metrics"),
            ("Metrics { }\nMetrics { }\n", "Metrics is written twice (first at 1:1)"),
            ("Metrics { HashSize 5 }\n", "HashSize"),
        ] {
            #expect(ConfigFixtures.errorText(text)?.contains(message) == true, "\(text): \(ConfigFixtures.errorText(text) ?? "parsed")")
        }
    }

    @Test func everyRepoExampleSettingIsClassified() throws {
        // Inactive settings of the examples are all Sync, Stats or Helper ones.
        for file in ConfigFixtures.repoExampleFiles() {
            let config = try DaemonConfig.load(path: file)
            for setting in config.inactiveSettings() {
                #expect(
                    ["Sync", "Stats", "Helper"].contains { setting.path == $0 || setting.path.hasPrefix($0 + ".") },
                    "\(file): \(setting.path)")
            }
        }
    }
}

@Suite struct ConfigLoadTests {
    @Test func unreadableFiles() {
        #expect(
            throws: ConfigError(
                file: "/nonexistent/ctsync.conf", line: 0, column: 0, message: "cannot read '/nonexistent/ctsync.conf': No such file or directory")
        ) {
            try DaemonConfig.load(path: "/nonexistent/ctsync.conf")
        }
        do {
            _ = try DaemonConfig.load(path: "/tmp")
            Issue.record("a directory must not load")
        } catch {
            #expect(error.description == "/tmp: cannot read '/tmp': Is a directory")
        }
    }

    @Test func loadReadsTheFile() throws {
        let path = NSTemporaryDirectory() + "ctsync-config-\(getpid()).conf"
        defer { unlink(path) }
        try "General {\n HashSize 77\n}\n".write(toFile: path, atomically: true, encoding: .utf8)
        let config = try DaemonConfig.load(path: path)
        #expect(config.path == path)
        #expect(config.general.hashSize == 77)
        try "General {\n HashSize x\n}\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError(file: path, line: 2, column: 11, message: "HashSize in General expects a number, got 'x'")) {
            try DaemonConfig.load(path: path)
        }
    }
}
