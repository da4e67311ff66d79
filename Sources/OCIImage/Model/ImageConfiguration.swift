public import Foundation

/// An image configuration: how to run the image and which layers make its
/// root filesystem (OCI image-spec `config.json`, compatible with Docker's).
public struct ImageConfiguration: Hashable, Sendable, Codable, PreservesUnknownFields {
    /// When the image was created (RFC 3339).
    public var created: String?
    /// Who created the image.
    public var author: String?
    /// The CPU architecture.
    public var architecture: String
    /// The operating system.
    public var os: String
    /// The operating system version.
    public var osVersion: String?
    /// Required operating system features.
    public var osFeatures: [String]?
    /// The CPU variant.
    public var variant: String?
    /// How to run a container from the image.
    public var config: RunConfiguration?
    /// The layers' uncompressed digests.
    public var rootfs: RootFS
    /// How each layer was made.
    public var history: [History]?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case created, author, architecture, os, variant, config, rootfs, history
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    /// Creates a configuration.
    public init(platform: Platform, config: RunConfiguration? = nil, diffIDs: [Digest] = [], history: [History]? = nil, created: String? = nil) {
        architecture = platform.architecture
        os = platform.os
        variant = platform.variant
        self.config = config
        rootfs = RootFS(type: "layers", diffIDs: diffIDs)
        self.history = history
        self.created = created
    }

    /// The platform the configuration declares.
    public var platform: Platform {
        var platform = Platform(os: os, architecture: architecture, variant: variant)
        platform.osVersion = osVersion
        platform.osFeatures = osFeatures
        return platform
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        created = try container.decodeIfPresent(String.self, forKey: .created)
        author = try container.decodeIfPresent(String.self, forKey: .author)
        architecture = try container.decode(String.self, forKey: .architecture)
        os = try container.decode(String.self, forKey: .os)
        osVersion = try container.decodeIfPresent(String.self, forKey: .osVersion)
        osFeatures = try container.decodeIfPresent([String].self, forKey: .osFeatures)
        variant = try container.decodeIfPresent(String.self, forKey: .variant)
        config = try container.decodeIfPresent(RunConfiguration.self, forKey: .config)
        rootfs = try container.decode(RootFS.self, forKey: .rootfs)
        history = try container.decodeIfPresent([History].self, forKey: .history)
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(created, forKey: .created)
        try container.encodeIfPresent(author, forKey: .author)
        try container.encode(architecture, forKey: .architecture)
        try container.encode(os, forKey: .os)
        try container.encodeIfPresent(osVersion, forKey: .osVersion)
        try container.encodeIfPresent(osFeatures, forKey: .osFeatures)
        try container.encodeIfPresent(variant, forKey: .variant)
        try container.encodeIfPresent(config, forKey: .config)
        try container.encode(rootfs, forKey: .rootfs)
        try container.encodeIfPresent(history, forKey: .history)
        try encodeUnknownFields(to: encoder)
    }

    /// Decodes and validates a configuration.
    ///
    /// - Throws: ``OCIImageError/Code/invalidConfiguration`` naming the field that is wrong.
    public static func decode(_ data: Data) throws -> ImageConfiguration {
        let configuration: ImageConfiguration
        do {
            configuration = try JSONDecoder().decode(ImageConfiguration.self, from: data)
        } catch {
            throw OCIImageError(.invalidConfiguration, "the image configuration cannot be decoded: \(describe(error))")
        }
        guard configuration.rootfs.type == "layers" else {
            throw OCIImageError(.invalidConfiguration, "the image configuration's rootfs.type is \"\(configuration.rootfs.type)\", expected \"layers\"")
        }
        return configuration
    }

    /// The layers' uncompressed digests.
    public struct RootFS: Hashable, Sendable, Codable {
        /// Always `layers`.
        public var type: String
        /// One digest per layer, base first.
        public var diffIDs: [Digest]

        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }

        /// Creates a rootfs section.
        public init(type: String = "layers", diffIDs: [Digest]) {
            self.type = type
            self.diffIDs = diffIDs
        }
    }

    /// One step in the making of the image.
    public struct History: Hashable, Sendable, Codable, PreservesUnknownFields {
        /// When the step ran (RFC 3339).
        public var created: String?
        /// The command of the step.
        public var createdBy: String?
        /// Who made the step.
        public var author: String?
        /// A free-form comment.
        public var comment: String?
        /// Whether the step made no layer.
        public var emptyLayer: Bool?
        /// Fields this type does not model, preserved when encoding.
        public var unknownFields: [String: JSONValue] = [:]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case created, author, comment
            case createdBy = "created_by"
            case emptyLayer = "empty_layer"
        }

        /// Creates a history entry.
        public init(created: String? = nil, createdBy: String? = nil, author: String? = nil, comment: String? = nil, emptyLayer: Bool? = nil) {
            self.created = created
            self.createdBy = createdBy
            self.author = author
            self.comment = comment
            self.emptyLayer = emptyLayer
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            created = try container.decodeIfPresent(String.self, forKey: .created)
            createdBy = try container.decodeIfPresent(String.self, forKey: .createdBy)
            author = try container.decodeIfPresent(String.self, forKey: .author)
            comment = try container.decodeIfPresent(String.self, forKey: .comment)
            emptyLayer = try container.decodeIfPresent(Bool.self, forKey: .emptyLayer)
            unknownFields = try Self.decodeUnknownFields(from: decoder)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(created, forKey: .created)
            try container.encodeIfPresent(createdBy, forKey: .createdBy)
            try container.encodeIfPresent(author, forKey: .author)
            try container.encodeIfPresent(comment, forKey: .comment)
            try container.encodeIfPresent(emptyLayer, forKey: .emptyLayer)
            try encodeUnknownFields(to: encoder)
        }
    }
}

/// How to run a container from an image (the `config` section of an image
/// configuration).
public struct RunConfiguration: Hashable, Sendable, Codable, PreservesUnknownFields {
    /// The user (`name`, `uid`, `uid:gid`, `name:group`).
    public var user: String?
    /// Ports the image declares, such as `80/tcp`.
    public var exposedPorts: [String]?
    /// Environment variables, `NAME=value`.
    public var env: [String]?
    /// The executable and its first arguments.
    public var entrypoint: [String]?
    /// Default arguments (or command when there is no entrypoint).
    public var cmd: [String]?
    /// Paths the image declares as volumes.
    public var volumes: [String]?
    /// The working directory.
    public var workingDir: String?
    /// Arbitrary metadata.
    public var labels: [String: String]?
    /// The signal that stops the container, such as `SIGTERM`.
    public var stopSignal: String?
    /// Whether `cmd` is already escaped (Windows only).
    public var argsEscaped: Bool?
    /// Docker's health check.
    public var healthcheck: Healthcheck?
    /// Docker's shell for shell-form commands.
    public var shell: [String]?
    /// Docker's ONBUILD triggers.
    public var onBuild: [String]?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case user = "User"
        case exposedPorts = "ExposedPorts"
        case env = "Env"
        case entrypoint = "Entrypoint"
        case cmd = "Cmd"
        case volumes = "Volumes"
        case workingDir = "WorkingDir"
        case labels = "Labels"
        case stopSignal = "StopSignal"
        case argsEscaped = "ArgsEscaped"
        case healthcheck = "Healthcheck"
        case shell = "Shell"
        case onBuild = "OnBuild"
    }

    /// Creates a run configuration.
    public init(
        user: String? = nil, env: [String]? = nil, entrypoint: [String]? = nil, cmd: [String]? = nil,
        workingDir: String? = nil, labels: [String: String]? = nil, exposedPorts: [String]? = nil,
        volumes: [String]? = nil, stopSignal: String? = nil
    ) {
        self.user = user
        self.env = env
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.workingDir = workingDir
        self.labels = labels
        self.exposedPorts = exposedPorts
        self.volumes = volumes
        self.stopSignal = stopSignal
    }

    private struct Empty: Codable {}

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        user = try container.decodeIfPresent(String.self, forKey: .user)
        exposedPorts = try container.decodeIfPresent([String: JSONValue].self, forKey: .exposedPorts)?.keys.sorted()
        env = try container.decodeIfPresent([String].self, forKey: .env)
        entrypoint = try container.decodeIfPresent([String].self, forKey: .entrypoint)
        cmd = try container.decodeIfPresent([String].self, forKey: .cmd)
        volumes = try container.decodeIfPresent([String: JSONValue].self, forKey: .volumes)?.keys.sorted()
        workingDir = try container.decodeIfPresent(String.self, forKey: .workingDir)
        labels = try container.decodeIfPresent([String: String].self, forKey: .labels)
        stopSignal = try container.decodeIfPresent(String.self, forKey: .stopSignal)
        argsEscaped = try container.decodeIfPresent(Bool.self, forKey: .argsEscaped)
        healthcheck = try container.decodeIfPresent(Healthcheck.self, forKey: .healthcheck)
        shell = try container.decodeIfPresent([String].self, forKey: .shell)
        onBuild = try container.decodeIfPresent([String].self, forKey: .onBuild)
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(user, forKey: .user)
        if let exposedPorts {
            try container.encode(Dictionary(uniqueKeysWithValues: exposedPorts.map { ($0, Empty()) }), forKey: .exposedPorts)
        }
        try container.encodeIfPresent(env, forKey: .env)
        try container.encodeIfPresent(entrypoint, forKey: .entrypoint)
        try container.encodeIfPresent(cmd, forKey: .cmd)
        if let volumes {
            try container.encode(Dictionary(uniqueKeysWithValues: volumes.map { ($0, Empty()) }), forKey: .volumes)
        }
        try container.encodeIfPresent(workingDir, forKey: .workingDir)
        try container.encodeIfPresent(labels, forKey: .labels)
        try container.encodeIfPresent(stopSignal, forKey: .stopSignal)
        try container.encodeIfPresent(argsEscaped, forKey: .argsEscaped)
        try container.encodeIfPresent(healthcheck, forKey: .healthcheck)
        try container.encodeIfPresent(shell, forKey: .shell)
        try container.encodeIfPresent(onBuild, forKey: .onBuild)
        try encodeUnknownFields(to: encoder)
    }

    /// Docker's health check: a command run periodically inside the container.
    public struct Healthcheck: Hashable, Sendable, Codable, PreservesUnknownFields {
        /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
        public var test: [String]?
        /// Time between checks, in nanoseconds.
        public var interval: Int64?
        /// Time a check may take, in nanoseconds.
        public var timeout: Int64?
        /// Time to let the container start before failures count, in nanoseconds.
        public var startPeriod: Int64?
        /// Time between checks during the start period, in nanoseconds.
        public var startInterval: Int64?
        /// Consecutive failures before the container is unhealthy.
        public var retries: Int?
        /// Fields this type does not model, preserved when encoding.
        public var unknownFields: [String: JSONValue] = [:]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case test = "Test"
            case interval = "Interval"
            case timeout = "Timeout"
            case startPeriod = "StartPeriod"
            case startInterval = "StartInterval"
            case retries = "Retries"
        }

        /// Creates a health check.
        public init(test: [String]?, interval: Int64? = nil, timeout: Int64? = nil, startPeriod: Int64? = nil, startInterval: Int64? = nil, retries: Int? = nil) {
            self.test = test
            self.interval = interval
            self.timeout = timeout
            self.startPeriod = startPeriod
            self.startInterval = startInterval
            self.retries = retries
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            test = try container.decodeIfPresent([String].self, forKey: .test)
            interval = try container.decodeIfPresent(Int64.self, forKey: .interval)
            timeout = try container.decodeIfPresent(Int64.self, forKey: .timeout)
            startPeriod = try container.decodeIfPresent(Int64.self, forKey: .startPeriod)
            startInterval = try container.decodeIfPresent(Int64.self, forKey: .startInterval)
            retries = try container.decodeIfPresent(Int.self, forKey: .retries)
            unknownFields = try Self.decodeUnknownFields(from: decoder)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(test, forKey: .test)
            try container.encodeIfPresent(interval, forKey: .interval)
            try container.encodeIfPresent(timeout, forKey: .timeout)
            try container.encodeIfPresent(startPeriod, forKey: .startPeriod)
            try container.encodeIfPresent(startInterval, forKey: .startInterval)
            try container.encodeIfPresent(retries, forKey: .retries)
            try encodeUnknownFields(to: encoder)
        }
    }
}

extension JSONEncoder {
    /// The encoder Gantry uses for documents it writes: sorted keys, so that
    /// the same value always hashes to the same digest.
    static var canonical: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
