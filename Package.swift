// swift-tools-version: 6.2
import PackageDescription

/// Every Swift target is built in the Swift 6 language mode (strict concurrency)
/// and treats warnings as errors.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
]

/// Library targets also import internally unless an import says `public`:
/// what a module uses only inside does not leak into its embedders' code.
let library: [SwiftSetting] = strict + [.enableUpcomingFeature("InternalImportsByDefault")]

/// C targets: all warnings, as errors.
let strictC: [CSetting] = [
    .enableWarning("all"),
    .enableWarning("extra"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "Gantry",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Gantry", targets: ["Gantry"]),
        .library(name: "OCIImage", targets: ["OCIImage"]),
        .library(name: "Runtime", targets: ["Runtime"]),
        .library(name: "Scheduler", targets: ["Scheduler"]),
        .library(name: "Reconciler", targets: ["Reconciler"]),
        .library(name: "Observability", targets: ["Observability"]),
        .library(name: "Compose", targets: ["Compose"]),
        .library(name: "Build", targets: ["Build"]),
        .library(name: "GantryTesting", targets: ["GantryTesting"]),
        .executable(name: "gantry", targets: ["GantryCLI"]),
        .executable(name: "gantry-bench", targets: ["GantryBench"]),
    ],
    // What an embedder that does not use a feature need not build.
    traits: [
        .trait(
            name: "Registry",
            description: "Pulling from and pushing to registries over HTTP and TLS (AsyncHTTPClient, SwiftNIO, NIOSSL). Without it, images come from OCI layouts, archives and root file systems on the disk."
        ),
        .default(enabledTraits: ["Registry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(
            name: "CArchive",
            pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]
        ),
        .systemLibrary(
            name: "CSeccomp",
            pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]
        ),
        .systemLibrary(
            name: "CNftables",
            pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]
        ),
        // Thin wrappers for Linux system calls that glibc does not expose.
        .target(name: "CGantrySystem", cSettings: strictC),
        // The launcher: clone3 into namespaces, then raw system calls until execve.
        .target(name: "CGantryLauncher", dependencies: ["CGantrySystem"], cSettings: strictC),

        // What every layer shares: the state root's layout, the system-call
        // layer, the pool for blocking work, SQLite stores, clocks, event
        // broadcasting and the error protocol.
        .target(
            name: "GantryCore",
            dependencies: [
                "CGantrySystem",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: library
        ),
        .target(
            name: "OCIImage",
            dependencies: [
                "GantryCore",
                "CArchive",
                "CGantrySystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["Registry"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["Registry"])),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: ["Registry"])),
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: .when(traits: ["Registry"])),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: library
        ),
        .target(
            name: "Runtime",
            dependencies: [
                "OCIImage",
                "CArchive",
                "CSeccomp",
                "CNftables",
                "CGantrySystem",
                "CGantryLauncher",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: library
        ),
        .target(
            name: "Scheduler",
            dependencies: [
                "Runtime", "OCIImage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: library
        ),
        .target(
            name: "Reconciler",
            dependencies: [
                "Scheduler", "Runtime", "OCIImage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: library
        ),
        // Compose files as people write them, on the reconciler: a product
        // of its own, so that only those who read compose files build YAML.
        .target(
            name: "Compose",
            dependencies: [
                "Reconciler", "Runtime", "OCIImage", "Build", "Scheduler",
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: library
        ),
        // Image builds: the Dockerfile front end and the builder.
        .target(
            name: "Build",
            dependencies: [
                "GantryCore", "OCIImage", "Runtime",
                .product(name: "SystemPackage", package: "swift-system"),
                // ADD from URLs.
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["Registry"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["Registry"])),
            ],
            swiftSettings: library
        ),
        .target(
            name: "Observability",
            dependencies: [
                "Runtime", "Scheduler", "Reconciler",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: library
        ),
        .target(
            name: "Gantry",
            dependencies: ["GantryCore", "OCIImage", "Runtime", "Scheduler", "Reconciler", "Observability"],
            swiftSettings: library
        ),
        // Throwaway containers for test suites (Swift Testing and XCTest).
        .target(
            name: "GantryTesting",
            dependencies: [
                "GantryCore", "Gantry", "OCIImage", "Runtime", "Reconciler", "Build", "Compose",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                // HTTPS waits.
                .product(name: "AsyncHTTPClient", package: "async-http-client", condition: .when(traits: ["Registry"])),
                .product(name: "NIOCore", package: "swift-nio", condition: .when(traits: ["Registry"])),
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: .when(traits: ["Registry"])),
            ],
            swiftSettings: library
        ),
        .executableTarget(
            name: "GantryCLI",
            // The layers are listed besides the umbrella so that SwiftPM
            // recompiles the CLI when they change: optimized builds inline
            // their class layouts, and a change seen only through
            // `@_exported import` does not trigger a rebuild.
            dependencies: [
                "Gantry", "OCIImage", "Runtime", "Scheduler", "Reconciler", "Observability", "Compose", "Build",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Examples/gantry",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "GantryBench",
            dependencies: [
                "OCIImage", "Runtime", "Scheduler", "Reconciler", "GantryTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/GantryBench",
            swiftSettings: strict
        ),

        // Helpers shared by the test targets: temporary directories with leak
        // checks, running tools, fixtures.
        .target(
            name: "GantryTestSupport",
            dependencies: ["OCIImage", "Runtime", "CGantrySystem"],
            path: "Tests/GantryTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "OCIImageTests",
            dependencies: [
                "OCIImage", "CArchive", "CGantrySystem", "GantryTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RuntimeTests",
            dependencies: ["Gantry", "Runtime", "OCIImage", "CGantrySystem", "GantryTestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GantryTestingTests",
            dependencies: ["GantryTesting", "Gantry", "Runtime", "OCIImage", "GantryTestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(name: "BuildTests", dependencies: ["Build", "Runtime", "OCIImage", "GantryTestSupport"], swiftSettings: strict),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "Runtime", "OCIImage", "GantryTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "ReconcilerTests",
            dependencies: [
                "Reconciler", "Compose", "Scheduler", "Runtime", "OCIImage", "GantryTestSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        // The code of README.md and the guides, compiled (and checked to be
        // there, block by block).
        // The layers are listed besides the umbrella for the CLI's reason:
        // a change seen only through `@_exported import` triggers no rebuild.
        .testTarget(
            name: "GuideTests",
            dependencies: ["Gantry", "OCIImage", "Runtime", "Scheduler", "Reconciler", "Observability", "Build", "GantryTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ObservabilityTests",
            dependencies: [
                "Observability", "Reconciler", "Runtime", "OCIImage", "GantryTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
    ]
)
