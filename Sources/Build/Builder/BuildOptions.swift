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
                secrets: [String: String] = [:]) {
        self.dockerfile = dockerfile
        self.arguments = arguments
        self.target = target
        self.tags = tags
        self.useCache = useCache
        self.timestamp = timestamp
        self.platform = platform
        self.network = network
        self.secrets = secrets
    }
}

/// What a build reports while it runs.
public enum BuildEvent: Sendable {
    /// A step begins; `cached` when its result is taken from the cache.
    case step(BuildStep)
    /// Output of a `RUN` step.
    case output(stage: String, bytes: [UInt8])
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
