import Foundation
import OCIImage
public import Runtime
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

/// Builds images from Dockerfiles on Gantry's own runtime and image store:
/// no daemon, no helper process.
///
/// Each `RUN` step runs in a container of the image so far; its layer is
/// what the container's overlay upper directory holds afterwards, so it
/// costs what the step changed, not what the image holds. `COPY` and `ADD`
/// place files from the context (less what `.dockerignore` leaves out),
/// another stage or an image the same way. Steps are cached by a key made
/// of the step below, the instruction, the build arguments and environment
/// it sees and the content of the files it copies; a step whose key is
/// known is reused. Stages run only when the target needs them, stages
/// that do not depend on each other at the same time.
///
/// ```swift
/// let builder = ImageBuilder(runtime: runtime)
/// let result = try await builder.build(context: "./app", options: BuildOptions(tags: ["app:dev"])) { event in
///     if case .step(let step) = event { print(step) }
/// }
/// print(result.image.manifestDescriptor.digest)
/// ```
public final class ImageBuilder: Sendable {
    /// The runtime whose containers run the steps and whose store holds
    /// the images and the cache.
    public let runtime: ContainerRuntime

    /// A builder over `runtime`.
    public init(runtime: ContainerRuntime) {
        self.runtime = runtime
    }

    /// Builds the Dockerfile of the context at `directory`.
    ///
    /// - Parameters:
    ///   - directory: The build context.
    ///   - options: The Dockerfile, build arguments, target, names, cache use
    ///     and timestamp.
    ///   - events: Receives each step as it begins and the output of `RUN`
    ///     steps.
    /// - Throws: ``BuildError`` naming the Dockerfile's line for what it
    ///   asks that cannot be done, a failing `RUN` with its exit and last
    ///   output; errors of the runtime and the store as they are.
    @discardableResult
    public func build(context directory: String, options: BuildOptions = BuildOptions(),
                      events: (@Sendable (BuildEvent) -> Void)? = nil) async throws -> BuildResult {
        let contextPath = URL(fileURLWithPath: directory).standardizedFileURL.path
        let dockerfilePath = options.dockerfile.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? Self.defaultDockerfile(in: contextPath)
        guard let data = FileManager.default.contents(atPath: dockerfilePath) else {
            throw BuildError(.context, "cannot read the Dockerfile \(dockerfilePath)")
        }
        let dockerfile = try Dockerfile(parsing: String(decoding: data, as: UTF8.self), file: (dockerfilePath as NSString).lastPathComponent)
        let context = try BuildContext(directory: contextPath, dockerfile: options.dockerfile == nil ? nil : dockerfilePath)
        guard !dockerfile.stages.isEmpty else { throw BuildError(.syntax, "\(dockerfilePath) has no FROM") }
        #if !Registry
        if !options.cacheFrom.isEmpty || options.cacheTo != nil {
            throw BuildError(.cache, "this build of Gantry has no registry client (the Registry trait): --cache-from and --cache-to cannot be used")
        }
        #endif
        for (id, file) in options.secrets.sorted(by: { $0.key < $1.key }) where access(file, R_OK) != 0 {
            throw BuildError(.context, "the secret \(id) cannot be read from \(file)", underlying: Errno(rawValue: errno))
        }
        Staging.removeLeftovers(in: runtime.images.root)
        let run = BuildRun(builder: self, dockerfile: dockerfile, context: context, options: options, events: events)
        let targetIndex: Int
        if let target = options.target {
            guard let index = dockerfile.stages.firstIndex(where: { $0.name == target.lowercased() }) else {
                throw BuildError(.target, "the Dockerfile has no stage named \"\(target)\"; its stages: \(dockerfile.stages.enumerated().map { $0.element.name ?? String($0.offset) }.joined(separator: ", "))")
            }
            targetIndex = index
        } else {
            targetIndex = dockerfile.stages.count - 1
        }
        // Every stage the target needs starts now: those that do not wait
        // on each other run at the same time.
        for index in try run.neededStages(targetIndex) { await run.start(index) }
        let built: BuiltStage
        do {
            built = try await run.stage(targetIndex)
        } catch {
            await run.stopAll()
            throw error
        }
        var image = built.image
        if !options.tags.isEmpty {
            for tag in options.tags {
                image = try await runtime.images.writeImage(built.image.configuration, layers: built.layers,
                                                              annotations: built.image.manifest.annotations, name: tag)
            }
        }
        #if Registry
        if let export = options.cacheTo {
            let used = await run.usedKeys
            let keys = export.mode == .max ? used.values.flatMap { $0 } : used[targetIndex] ?? []
            do {
                let report = try await runtime.images.pushBuildCache(keys, to: export.reference)
                events?(.notice("pushed the build cache of \(keys.count) steps to \(report.reference)"))
            } catch {
                throw BuildError(.cache, "the image is built, but its build cache cannot be pushed to \(export.reference)", underlying: error)
            }
        }
        #endif
        return BuildResult(image: image, tags: options.tags, steps: await run.steps)
    }

    static func defaultDockerfile(in context: String) -> String {
        let containerfile = context + "/Containerfile"
        let dockerfile = context + "/Dockerfile"
        if !FileManager.default.fileExists(atPath: dockerfile), FileManager.default.fileExists(atPath: containerfile) { return containerfile }
        return dockerfile
    }
}

/// A stage's outcome: its image and the layers it is made of.
struct BuiltStage: Sendable {
    var image: ImageStore.ResolvedImage
    var layers: [BuiltLayer]
}

/// One build: the stages' results as they come, and the steps run.
actor BuildRun {
    let builder: ImageBuilder
    let dockerfile: Dockerfile
    let context: BuildContext
    let options: BuildOptions
    let events: (@Sendable (BuildEvent) -> Void)?
    private var stages: [Int: Task<BuiltStage, any Error>] = [:]
    private(set) var steps: [BuildStep] = []
    /// The context's entries, read once.
    private var contextEntries: [BuildContext.Entry]?

    init(builder: ImageBuilder, dockerfile: Dockerfile, context: BuildContext, options: BuildOptions,
         events: (@Sendable (BuildEvent) -> Void)?) {
        self.builder = builder
        self.dockerfile = dockerfile
        self.context = context
        self.options = options
        self.events = events
    }

    /// The result of stage `index`, built once however many ask.
    func stage(_ index: Int) async throws -> BuiltStage {
        start(index)
        return try await stages[index]!.value
    }

    /// Starts building stage `index`, unless it has been.
    func start(_ index: Int) {
        guard stages[index] == nil else { return }
        stages[index] = Task { try await StageBuilder(run: self, index: index).build() }
    }

    /// Cancels every stage still building and waits for it to end (its
    /// containers removed).
    func stopAll() async {
        for task in stages.values { task.cancel() }
        for task in stages.values { _ = try? await task.value }
    }

    /// The stages `target` needs, itself included: those its `FROM` and
    /// its `--from` flags name, and theirs.
    nonisolated func neededStages(_ target: Int) throws -> Set<Int> {
        let globals = try StageBuilder(run: self, index: target).globalArguments()
        let expansion = VariableExpansion(escape: dockerfile.escape, variables: globals)
        var needed: Set<Int> = []
        var pending = [target]
        while let index = pending.popLast() {
            guard needed.insert(index).inserted else { continue }
            let stage = dockerfile.stages[index]
            var names = [try expansion.word(stage.base)]
            for instruction in stage.instructions {
                names += instruction.flagValues("from")
                for mount in instruction.flagValues("mount") {
                    names += mount.split(separator: ",").compactMap { field in
                        field.hasPrefix("from=") ? String(field.dropFirst(5)) : nil
                    }
                }
            }
            for name in names {
                let expanded = (try? expansion.word(name)) ?? name
                if let dependency = stageIndex(named: expanded, before: index) { pending.append(dependency) }
            }
        }
        return needed
    }

    /// The index of the stage a `FROM` or `--from` names, if it names one
    /// before `index`.
    nonisolated func stageIndex(named name: String, before index: Int) -> Int? {
        if let named = dockerfile.stages.prefix(index).firstIndex(where: { $0.name == name.lowercased() }) { return named }
        if let number = Int(name), number >= 0, number < index { return number }
        return nil
    }

    /// The cache keys of the results each stage kept, made or reused, by
    /// stage index: what a push of the cache sends.
    private(set) var usedKeys: [Int: [String]] = [:]

    func used(_ key: String, stage: Int) {
        usedKeys[stage, default: []].append(key)
    }

    #if Registry
    /// The registries' build caches, read once, when a step first misses
    /// the store's cache.
    private var remoteCaches: Task<[RemoteBuildCache], Never>?

    /// The result of the step with cache key `key` from the registries'
    /// build caches, brought into the store; nil when none has it.
    func fetchRemote(_ key: String) async -> ImageStore.ResolvedImage? {
        if remoteCaches == nil {
            let (sources, store, events) = (options.cacheFrom, builder.runtime.images, events)
            remoteCaches = Task {
                var caches: [RemoteBuildCache] = []
                for source in sources {
                    do {
                        caches.append(try await store.readBuildCache(from: source))
                    } catch {
                        events?(.notice("the build cache \(source) cannot be read, and is passed over: \(error)"))
                    }
                }
                return caches
            }
        }
        for cache in await remoteCaches!.value where cache.steps[key] != nil {
            do {
                if let image = try await builder.runtime.images.fetchBuildStep(key, from: cache) { return image }
            } catch {
                events?(.notice("a step could not be taken from the build cache \(cache.reference), and runs: \(error)"))
            }
        }
        return nil
    }
    #endif

    /// The step each stage is about to apply, until it is announced.
    private var pending: [String: BuildStep] = [:]

    func begin(_ step: BuildStep) {
        pending[step.stage] = step
    }

    /// Reports the stage's pending step, once: as taken from the cache, or
    /// as about to run.
    func announce(stage: String, cached: Bool) {
        guard var step = pending.removeValue(forKey: stage) else { return }
        step.cached = cached
        record(step)
    }

    func record(_ step: BuildStep) {
        steps.append(step)
        events?(.step(step))
    }

    func entries() throws -> [BuildContext.Entry] {
        if let contextEntries { return contextEntries }
        let read = try context.entries()
        contextEntries = read
        return read
    }
}
