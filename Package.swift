// swift-tools-version: 6.0
// Plexus: a cluster of Linux machines as one computer for parallel programs.
// Layers (one target each, dependencies point down):
//   PlexusCLI (the plexus command), Examples  ->  Plexus (umbrella API), PlexusC (C API)
//   -> Cluster (node daemon, launcher), Memory (DSM engine, protocols), Deadlock (detector core), NameService (quorum: replica, client, etcd)
//   -> NamesCore (the pure Raft and state-machine cores, no I/O)
//   -> Transport (TCP, numbered frames, fault injection) -> Wire (frames, codecs)
//   -> CFault (C: SIGSEGV handler, memfd dual mapping, futex hand-off)
//   Workloads (kernels for examples and benchmarks), Lincheck (linearizability checker),
//   Deadlock (the pure distributed deadlock detector core, over Wire's byte codecs).
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Plexus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Plexus", targets: ["Plexus"]),
        .library(name: "PlexusC", type: .dynamic, targets: ["PlexusC"]),
        .executable(name: "plexus", targets: ["PlexusCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(name: "Wire", swiftSettings: strict),
        .target(name: "Transport", dependencies: ["Wire"], swiftSettings: strict),
        .target(name: "CFault"),
        .target(name: "Cluster", dependencies: ["Wire", "Transport", "CFault", "NamesCore", "NameService", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "Memory", dependencies: ["CFault"], swiftSettings: strict),
        .target(name: "Lincheck", swiftSettings: strict),
        .target(name: "Deadlock", dependencies: ["Wire"], swiftSettings: strict),
        .target(name: "NamesCore", swiftSettings: strict),
        .target(name: "NameService", dependencies: ["NamesCore", "Wire", "Transport", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(name: "Plexus", dependencies: ["Wire", "Transport", "Cluster", "Memory", "Deadlock", "NameService"], swiftSettings: strict),
        .target(name: "Workloads", dependencies: ["Plexus"], swiftSettings: strict),
        .target(name: "PlexusC", dependencies: ["Plexus", "Transport"], swiftSettings: strict),
        .executableTarget(
            name: "PlexusCLI",
            dependencies: [
                "Plexus", "Cluster", "Transport", "Wire", "CFault", "Workloads", "Memory", "NamesCore", "NameService", "Lincheck", "Deadlock",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(name: "ring", dependencies: ["Plexus"], path: "Examples/ring", swiftSettings: strict),
        .executableTarget(name: "false-sharing", dependencies: ["Plexus", "Workloads"], path: "Examples/false-sharing", swiftSettings: strict),
        .executableTarget(name: "jacobi", dependencies: ["Plexus", "Workloads"], path: "Examples/jacobi", swiftSettings: strict),
        .executableTarget(name: "matmul", dependencies: ["Plexus", "Workloads"], path: "Examples/matmul", swiftSettings: strict),
        .executableTarget(name: "c-dsm", dependencies: ["PlexusC"], path: "Examples/c-dsm",
                         cSettings: [.headerSearchPath("../../Sources/PlexusC/include")]),
        .executableTarget(name: "c-hello", dependencies: ["PlexusC"], path: "Examples/c-hello",
                         cSettings: [.headerSearchPath("../../Sources/PlexusC/include")]),
        .executableTarget(name: "c-deadlock", dependencies: ["PlexusC"], path: "Examples/c-deadlock",
                         cSettings: [.headerSearchPath("../../Sources/PlexusC/include")]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "Transport"], swiftSettings: strict),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "Wire"], swiftSettings: strict),
        .testTarget(name: "LincheckTests", dependencies: ["Lincheck", "Transport", "NamesCore"], swiftSettings: strict),
        .testTarget(name: "MemoryTests", dependencies: ["Memory", "CFault", "Transport"], swiftSettings: strict),
        .target(name: "TestSupport", dependencies: ["Transport"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Plexus", "TestSupport"], swiftSettings: strict),
        // Shared-memory tests with real processes; dsm-check is their job program.
        .executableTarget(name: "dsm-check", dependencies: ["Plexus", "Workloads", "Transport", "Deadlock"], path: "Tests/Workers/dsm-check", swiftSettings: strict),
        .testTarget(name: "MemoryIntegrationTests", dependencies: ["TestSupport", "Plexus", "CFault"], swiftSettings: strict),
        .testTarget(name: "DeadlockTests", dependencies: ["Deadlock", "Wire"], swiftSettings: strict),
        .testTarget(name: "NamesCoreTests", dependencies: ["NamesCore"], swiftSettings: strict),
        .testTarget(name: "DocsTests", swiftSettings: strict),
        .testTarget(name: "NameServiceTests", dependencies: ["NameService", "NamesCore", "Lincheck", "TestSupport", "Cluster", "Transport",
                                                           .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
    ]
)
