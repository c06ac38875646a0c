// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ctsync",
    products: [
        .executable(name: "ctsync", targets: ["ctsync"]),
        .executable(name: "ctsyncd", targets: ["ctsyncd"]),
        .library(name: "Conntrack", targets: ["Conntrack"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNetfilter",
            pkgConfig: "libnetfilter_conntrack",
            providers: [.apt(["libnetfilter-conntrack-dev", "libmnl-dev"])]
        ),
        .target(name: "Conntrack", dependencies: ["CNetfilter"]),
        .target(name: "SyncProtocol", dependencies: ["Conntrack"]),
        .target(name: "SyncEngine", dependencies: ["Conntrack", "SyncProtocol"]),
        .target(
            name: "SyncDaemon",
            dependencies: ["Conntrack", "SyncProtocol", "SyncEngine", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "CtsyncCLI",
            dependencies: [
                "Conntrack", "SyncDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "ctsync", dependencies: ["CtsyncCLI"]),
        .executableTarget(name: "ctsyncd", dependencies: ["SyncDaemon"]),
        .testTarget(name: "ConntrackTests", dependencies: ["Conntrack"]),
        .testTarget(name: "CLITests", dependencies: ["CtsyncCLI", "Conntrack"]),
        .testTarget(name: "SyncEngineTests", dependencies: ["SyncEngine", "Conntrack"]),
        .testTarget(name: "SyncProtocolTests", dependencies: ["SyncProtocol", "Conntrack"]),
        .testTarget(name: "SyncDaemonTests", dependencies: ["SyncDaemon", "SyncEngine", "Conntrack"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Conntrack"]),
    ],
    swiftLanguageModes: [.v6]
)
