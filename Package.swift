// swift-tools-version:6.0
import PackageDescription

// The layers, bottom up (docs/architecture.md draws them):
//   FlowModel, SystemCalls       pure values / the one system-call error; no C library
//   SyncProtocol                 conntrackd's wire format (FlowModel)
//   SyncEngine                   the pure sync node: caches, modes, FTFW (FlowModel, SyncProtocol)
//   SyncAuth                     sealed and verified frames, the key file (swift-crypto)
//   Configuration                conntrackd.conf's grammar and ctsync's settings (FlowModel)
//   ControlProtocol              control requests/answers and the client (FlowModel, SystemCalls)
//   Conntrack                    the kernel: netlink via libnetfilter_conntrack (CNetfilter)
//   SyncDaemon                   the thin shell: event loop, sockets, kernel mirror, committer
//   CtsyncCLI                    `ctsync`: the kernel table and the daemon's control socket
let package = Package(
    name: "ctsync",
    products: [
        .executable(name: "ctsync", targets: ["ctsync"]),
        .executable(name: "ctsyncd", targets: ["ctsyncd"]),
        .library(name: "Conntrack", targets: ["Conntrack"]),
        .library(name: "SyncEngine", targets: ["SyncEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNetfilter",
            pkgConfig: "libnetfilter_conntrack",
            providers: [.apt(["libnetfilter-conntrack-dev", "libmnl-dev"])]
        ),
        .target(name: "SystemCalls"),
        .target(name: "FlowModel"),
        .target(name: "Conntrack", dependencies: ["CNetfilter", "FlowModel", "SystemCalls"]),
        .target(name: "SyncProtocol", dependencies: ["FlowModel"]),
        .target(name: "SyncEngine", dependencies: ["FlowModel", "SyncProtocol"]),
        .target(name: "SyncAuth", dependencies: ["SyncProtocol", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "Configuration", dependencies: ["FlowModel"]),
        .target(name: "ControlProtocol", dependencies: ["FlowModel", "SystemCalls"]),
        .target(
            name: "SyncDaemon",
            dependencies: [
                "Conntrack", "SyncProtocol", "SyncEngine", "SyncAuth", "Configuration", "ControlProtocol", "SystemCalls",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "CtsyncCLI",
            dependencies: [
                "Conntrack", "Configuration", "ControlProtocol", "SystemCalls",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "ctsync", dependencies: ["CtsyncCLI"]),
        .executableTarget(name: "ctsyncd", dependencies: ["SyncDaemon", "Configuration", "ControlProtocol", "SystemCalls"]),
        .target(name: "TestSupport", dependencies: ["FlowModel", "SyncProtocol"], path: "Tests/TestSupport"),
        .testTarget(name: "FlowModelTests", dependencies: ["FlowModel", "TestSupport"]),
        .testTarget(name: "ConntrackTests", dependencies: ["Conntrack", "CNetfilter", "TestSupport"]),
        .testTarget(name: "SyncProtocolTests", dependencies: ["SyncProtocol", "FlowModel", "TestSupport"]),
        .testTarget(name: "SyncEngineTests", dependencies: ["SyncEngine", "SyncProtocol", "FlowModel", "TestSupport"]),
        .testTarget(name: "SyncAuthTests", dependencies: ["SyncAuth", "SyncProtocol", "TestSupport"]),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "FlowModel", "TestSupport"]),
        .testTarget(name: "SyncDaemonTests", dependencies: ["SyncDaemon", "SyncProtocol", "ControlProtocol", "Configuration", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["CtsyncCLI", "Conntrack", "TestSupport"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Conntrack", "SyncProtocol", "FlowModel", "SystemCalls", "ControlProtocol", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
