// swift-tools-version: 6.2
import PackageDescription

/// libFuzzer targets for every parser that reads bytes Gantry did not write.
/// Built by `scripts/fuzz.sh` with `-sanitize=fuzzer,address`; one binary
/// holds every target and `GANTRY_FUZZ_TARGET` picks one.
let package = Package(
    name: "GantryFuzz",
    dependencies: [.package(name: "Gantry", path: "..")],
    targets: [
        // SwiftPM links a debug executable's entry point as GantryFuzz_main.
        .target(name: "CFuzzDriver"),
        .executableTarget(
            name: "GantryFuzz",
            dependencies: [
                "CFuzzDriver",
                .product(name: "OCIImage", package: "Gantry"),
                .product(name: "Runtime", package: "Gantry"),
                .product(name: "Reconciler", package: "Gantry"),
                .product(name: "Compose", package: "Gantry"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6), .treatAllWarnings(as: .error), .unsafeFlags(["-parse-as-library"])]
        ),
    ]
)
