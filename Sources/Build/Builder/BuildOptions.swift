public import Foundation
public import OCIImage

/// How an ``ImageBuilder`` builds a Dockerfile.
public struct BuildOptions: Sendable {
    /// The Dockerfile's path; by default `Dockerfile` in the context (or
    /// `Containerfile`, when only that exists).
    public var dockerfile: String?
    /// Values for the Dockerfile's `ARG`s (`--build-arg NAME=value`).
    public var arguments: [String: String]
    /// The stage to build (`--target`); by default the last. Only the
    /// stages it needs are built.
    public var target: String?
    /// The names to give the image.
    public var tags: [String]
    /// Whether unchanged steps are taken from the build cache.
    public var useCache: Bool
    /// The time recorded in the image and the latest modification time of
    /// its files, for reproducible images (`SOURCE_DATE_EPOCH`); by default
    /// now, with files' own times.
    public var timestamp: Date?
    /// The platform to build for: the images `FROM` names are resolved for
    /// it and `TARGETPLATFORM` names it. Only the host's can run.
    public var platform: Platform
    /// The network of `RUN` steps that do not choose one with `--network`:
    /// the host's (`default` in a Dockerfile; the builder makes no bridge),
    /// or none.
    public var network: RunNetwork
    /// Files for `RUN --mount=type=secret,id=ID`, by ID.
    public var secrets: [String: String]
    /// Build caches in registries (`--cache-from`, references of what
    /// ``cacheTo`` pushed) to take a step from when the store has no
    /// result for it. One that cannot be read is reported and passed over.
    public var cacheFrom: [String]
    /// Where to push the steps' results once the image is built
    /// (`--cache-to type=registry,ref=…`), for builds on other machines.
    public var cacheTo: CacheExport?

    /// A build cache to push to a registry.
    public struct CacheExport: Hashable, Sendable {
        /// `registry/repository[:tag]`.
        public var reference: String
        /// Which steps go.
        public var mode: Mode

        /// Which steps of a build go to a registry's cache.
        public enum Mode: String, Hashable, Sendable {
            /// Those of the target stage (as BuildKit's `mode=min`).
            case min
            /// Those of every stage built (`mode=max`).
            case max
        }

        /// A cache push to `reference`.
        public init(reference: String, mode: Mode = .min) {
            self.reference = reference
            self.mode = mode
        }
    }

    /// The network of a `RUN` step.
    public enum RunNetwork: String, Hashable, Sendable {
        /// The host's network namespace.
        case host
        /// Only a loopback device.
        case none
    }

    /// Options: the context's Dockerfile, its last stage, cached steps
    /// reused, no name.
    public init(dockerfile: String? = nil, arguments: [String: String] = [:], target: String? = nil, tags: [String] = [],
                useCache: Bool = true, timestamp: Date? = nil, platform: Platform = .host, network: RunNetwork = .host,
                secrets: [String: String] = [:], cacheFrom: [String] = [], cacheTo: CacheExport? = nil) {
        self.dockerfile = dockerfile
        self.arguments = arguments
        self.target = target
        self.tags = tags
        self.useCache = useCache
        self.timestamp = timestamp
        self.platform = platform
        self.network = network
        self.secrets = secrets
        self.cacheFrom = cacheFrom
        self.cacheTo = cacheTo
    }
}

/// What a build reports while it runs.
public enum BuildEvent: Sendable {
    /// A step begins; `cached` when its result is taken from the cache.
    case step(BuildStep)
    /// Output of a `RUN` step.
    case output(stage: String, bytes: [UInt8])
    /// Something the build passed over or did besides its steps: a
    /// registry's build cache it could not read, or the cache it pushed.
    case notice(String)
}

/// One step of a build.
public struct BuildStep: Hashable, Sendable, CustomStringConvertible {
    /// The stage's name, or its index.
    public var stage: String
    /// The step's number in its stage, from 1 (`FROM` is 1).
    public var number: Int
    /// The number of steps of the stage.
    public var count: Int
    /// The instruction as written.
    public var instruction: String
    /// Whether its result came from the build cache.
    public var cached: Bool

    public var description: String {
        "[\(stage) \(number)/\(count)] \(cached ? "CACHED " : "")\(instruction)"
    }
}

/// What a build made.
public struct BuildResult: Sendable {
    /// The image, resolved: its manifest and configuration.
    public var image: ImageStore.ResolvedImage
    /// The names given to it.
    public var tags: [String]
    /// The steps of every stage built, in the order they ran.
    public var steps: [BuildStep]
}
