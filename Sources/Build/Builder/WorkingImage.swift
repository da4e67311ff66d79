public import Foundation
public import OCIImage
public import Runtime
import GantryCore

/// An image under construction, step by step from Swift, as Buildah's
/// `from`, `run`, `copy`, `config` and `commit` make one: each `run` and
/// `copy` adds a layer with what it changed (none when nothing did), the
/// configuration is set directly, and ``commit(as:created:)`` writes the image.
///
/// ```swift
/// var image = try await WorkingImage(from: "busybox:test", runtime: runtime)
/// try await image.run(["sh", "-c", "mkdir -p /srv && echo ready > /srv/state"])
/// try await image.copy("./config.json", to: "/srv/config.json")
/// image.configuration.cmd = ["cat", "/srv/state"]
/// image.configuration.env = (image.configuration.env ?? []) + ["MODE=worker"]
/// let made = try await image.commit(as: "worker:1")
/// ```
///
/// Until it is committed, what it made is kept in the store as build cache
/// entries (so that a prune meanwhile does not take it), forgotten by the
/// commit or by the store's `pruneBuildCache(usedBefore:)`.
public struct WorkingImage: Sendable {
    /// The runtime whose containers run the steps.
    public let runtime: ContainerRuntime
    /// The run configuration the committed image will have.
    public var configuration: RunConfiguration
    /// The layers so far, base first.
    public private(set) var layers: [BuiltLayer]
    /// The whole image configuration below ``configuration``: platform,
    /// history and the base's fields.
    private var image: ImageConfiguration
    /// An image with exactly ``layers``, for the steps' containers.
    private var root: String?
    /// The cache keys that keep the steps' images until the commit.
    private var keys: [String] = []
    private let session = UUID().uuidString

    /// Starts from the image `name` (pulled when the store lacks it and
    /// the store can pull), or from nothing with `"scratch"`.
    public init(from name: String, runtime: ContainerRuntime, platform: Platform = .host) async throws {
        self.runtime = runtime
        if name == "scratch" {
            image = ImageConfiguration(platform: platform, config: RunConfiguration())
            layers = []
        } else {
            let resolved = try await runtime.images.resolveOrPull(name, platform: platform)
            image = resolved.configuration
            layers = zip(resolved.manifest.layers, resolved.configuration.rootfs.diffIDs).map { BuiltLayer(descriptor: $0, diffID: $1) }
            root = layers.isEmpty ? nil : resolved.record.reference.description
        }
        configuration = image.config ?? RunConfiguration()
    }

    /// Runs `command` in a container of the image so far, with the
    /// configuration's environment, working directory and user unless
    /// given, and keeps what it changed as a layer.
    ///
    /// - Parameters:
    ///   - command: The program and its arguments.
    ///   - environment: The environment; by default the configuration's.
    ///   - workingDirectory: The working directory; by default the configuration's.
    ///   - user: The user; by default the configuration's.
    ///   - network: The host's network, or none (the default).
    ///   - output: Receives what the command writes.
    /// - Throws: ``BuildError`` (`stepFailed`) with the exit and the last
    ///   output when the command does not exit 0.
    public mutating func run(_ command: [String], environment: [String]? = nil, workingDirectory: String? = nil, user: String? = nil,
                             network: BuildOptions.RunNetwork = .none, output: (@Sendable ([UInt8]) -> Void)? = nil) async throws {
        guard let root else {
            throw BuildError(.instruction, "cannot run \(command) on an image with no files (scratch with nothing copied yet)")
        }
        var spec = ContainerSpec(image: root, command: command)
        spec.entrypoint = []
        spec.environment = environment ?? configuration.env ?? ["PATH=" + StageBuilder.defaultPath]
        spec.workingDirectory = workingDirectory ?? configuration.workingDir.flatMap { $0.isEmpty ? nil : $0 }
        spec.user = user ?? configuration.user.flatMap { $0.isEmpty ? nil : $0 }
        spec.network = network == .host ? .host : .none
        let description = "RUN " + command.joined(separator: " ")
        try await step(spec, description: description) { container in
            try await container.runStep(description, output: output)
        }
    }

    /// Copies the host's file or directory `source` to `path` in the
    /// image, as `docker cp` places it (a directory's contents with
    /// `source/.`), owned by the image's root unless `keepOwners`.
    public mutating func copy(_ source: String, to path: String, keepOwners: Bool = false) async throws {
        guard let root else {
            throw BuildError(.instruction, "cannot copy into an image with no files (scratch): start from an image")
        }
        var spec = ContainerSpec(image: root, command: ["/"])
        spec.entrypoint = []
        let parent = (StepRunner.absolute(path, in: "/") as NSString).deletingLastPathComponent
        try await step(spec, description: "COPY \(source) \(path)") { container in
            try await container.makeDirectories(parent)
            try await container.copyIn(from: source, to: path, options: CopyOptions(keepOwners: keepOwners))
        }
    }

    /// Writes the image, named `name` when given, and forgets the steps'
    /// cache entries.
    @discardableResult
    public mutating func commit(as name: String? = nil, created: Date = Date()) async throws -> ImageStore.ResolvedImage {
        var final = image
        final.config = configuration
        final.created = ImageStore.timestamp(created)
        let made = try await runtime.images.writeImage(final, layers: layers, name: name)
        try await runtime.images.forgetBuildSteps(keys)
        keys = []
        return made
    }

    /// Runs `work` on a new container of the image so far, and keeps its
    /// changes as a layer (its upper directory becoming the snapshot).
    private mutating func step(_ spec: ContainerSpec, description: String, _ work: @Sendable (Container) async throws -> Void) async throws {
        var spec = spec
        spec.lifetime = .boundToHost
        let container = try await runtime.create(spec)
        let layer: BuiltLayer
        do {
            try await work(container)
            layer = try await container.writeChanges(snapshotAbove: layers)
        } catch {
            try? await container.remove(force: true)
            throw error
        }
        try await container.remove(force: true)
        image.history = (image.history ?? []) + [ImageConfiguration.History(created: ImageStore.timestamp(Date()), createdBy: description,
                                                                              comment: "gantry", emptyLayer: layer.entries == 0 ? true : nil)]
        guard layer.entries != 0 else { return }
        layers.append(layer)
        let key = "working-\(session)-\(keys.count)"
        keys.append(key)
        var held = image
        held.config = configuration
        root = try await runtime.images.writeImage(held, layers: layers, cacheKey: key).manifestDescriptor.digest.description
    }
}
