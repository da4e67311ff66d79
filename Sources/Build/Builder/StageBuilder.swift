import Foundation
import GantryCore
import OCIImage
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Builds one stage: its base, then each instruction in turn.
struct StageBuilder {
    let run: BuildRun
    let index: Int

    /// What the stage has made so far.
    struct State {
        var configuration: ImageConfiguration
        var layers: [BuiltLayer]
        /// The cache key of the steps so far.
        var key: String
        /// An image with exactly `layers`, for the containers of file
        /// system steps; nil while there are no layers.
        var root: String?
        /// The `ARG`s the stage declared, with their values.
        var arguments: [(String, String)] = []
        /// Whether the stage set `CMD` itself.
        var setCommand = false
    }

    var builder: ImageBuilder { run.builder }
    var store: ImageStore { run.builder.runtime.images }

    func build() async throws -> BuiltStage {
        let dockerfile = run.dockerfile
        let options = run.options
        let stage = dockerfile.stages[index]
        let label = stage.name ?? String(index)
        let count = stage.instructions.count + 1
        let globals = try globalArguments()
        let globalExpansion = VariableExpansion(escape: dockerfile.escape, variables: globals)
        let base = try globalExpansion.word(stage.base)
        let platform = try stage.platform.map { try Platform(parsing: try globalExpansion.word($0)) } ?? options.platform
        var state: State
        if base.lowercased() == "scratch" {
            state = State(configuration: ImageConfiguration(platform: platform, config: RunConfiguration()), layers: [],
                          key: Self.hash(["scratch", platform.description]), root: nil)
        } else if let dependency = run.stageIndex(named: base, before: index) {
            let built = try await run.stage(dependency)
            state = State(configuration: built.image.configuration, layers: built.layers,
                          key: Self.hash(["stage", built.image.manifestDescriptor.digest.description]),
                          root: built.layers.isEmpty ? nil : built.image.manifestDescriptor.digest.description)
        } else {
            // Containers of the steps name it by its name: an index's
            // digest is not that of the platform's manifest.
            let image = try await resolve(base, platform: platform, at: stage.from)
            let layers = zip(image.manifest.layers, image.configuration.rootfs.diffIDs).map { BuiltLayer(descriptor: $0, diffID: $1) }
            state = State(configuration: image.configuration, layers: layers,
                          key: Self.hash(["image", image.manifestDescriptor.digest.description]),
                          root: layers.isEmpty ? nil : image.record.reference.description)
        }
        // What the base recorded for the images built on it runs now, and is not inherited.
        let triggers = state.configuration.config?.onBuild ?? []
        state.configuration.config = state.configuration.config ?? RunConfiguration()
        state.configuration.config?.onBuild = nil
        // As BuildKit and Buildah do: a base that sets no PATH gets the
        // default one, for the steps and in the image.
        let environment = state.configuration.config?.env ?? []
        if !environment.contains(where: { $0.hasPrefix("PATH=") }) {
            state.configuration.config?.env = environment + ["PATH=" + Self.defaultPath]
        }
        state.configuration.created = nil
        // Shown as it was resolved, as BuildKit shows it: `FROM ${BASE}` names its image.
        let from = stage.base == base ? stage.from.text : "FROM \(base)" + (stage.name.map { " AS \($0)" } ?? "")
        await run.record(BuildStep(stage: label, number: 1, count: count, instruction: from, cached: false))

        var instructions = stage.instructions
        if !triggers.isEmpty {
            let parsed = try Dockerfile(parsing: "FROM scratch\n" + triggers.joined(separator: "\n"), file: "ONBUILD of \(base)")
            instructions = parsed.stages[0].instructions + instructions
        }
        let step = StepRunner(stage: self, label: label, globals: globals)
        for (offset, instruction) in instructions.enumerated() {
            let number = offset + 2 - triggers.count
            // Announced when it is known whether the cache has it, before any
            // of its work runs (a step that changes no file: when applied).
            await run.begin(BuildStep(stage: label, number: max(number, 1), count: count, instruction: instruction.text, cached: false))
            let cached: Bool
            do {
                cached = try await step.apply(instruction, to: &state)
            } catch let error as BuildError where error.code == .substitution && !error.message.hasPrefix("\(instruction.location)") {
                throw BuildError(.substitution, "\(instruction.location): \(instruction.keyword): \(error.message)", underlying: error.underlying)
            }
            await run.announce(stage: label, cached: cached)
        }

        // The stage's image, taken from the cache when every step was.
        let key = Self.hash([state.key, "image", options.timestamp.map { String(Int64($0.timeIntervalSince1970)) } ?? ""])
        await run.used(key, stage: index)
        if options.useCache, let cached = try await store.cachedBuildStep(key) {
            return BuiltStage(image: cached, layers: state.layers)
        }
        var configuration = state.configuration
        configuration.created = ImageStore.timestamp(options.timestamp ?? Date())
        let image = try await store.writeImage(configuration, layers: state.layers, cacheKey: key)
        return BuiltStage(image: image, layers: state.layers)
    }

    /// The values of the `ARG`s before the first `FROM`, with the build's
    /// and the predefined platform arguments.
    func globalArguments() throws -> [String: String] {
        let options = run.options
        let target = options.platform
        let host = Platform.host
        var values: [String: String] = [
            "TARGETPLATFORM": target.description, "TARGETOS": target.os, "TARGETARCH": target.architecture,
            "TARGETVARIANT": target.variant ?? "",
            "BUILDPLATFORM": host.description, "BUILDOS": host.os, "BUILDARCH": host.architecture, "BUILDVARIANT": host.variant ?? "",
        ]
        for instruction in run.dockerfile.globalArguments {
            guard case .shell(let text) = instruction.arguments else { continue }
            let expansion = VariableExpansion(escape: run.dockerfile.escape, variables: values)
            for (name, value) in try expansion.pairs(text, allowingBare: true) {
                if let given = options.arguments[name] {
                    values[name] = given
                } else if let value {
                    values[name] = value
                }
            }
        }
        return values
    }

    /// The image `FROM` (or `--from`) names, pulled when the store lacks it.
    ///
    /// - Throws: ``BuildError`` (`target`) naming the instruction's place,
    ///   the name, and the stages it is not.
    func resolve(_ name: String, platform: Platform, at instruction: Instruction) async throws -> ImageStore.ResolvedImage {
        let stages = run.dockerfile.stages.prefix(index).enumerated().map { $0.element.name ?? String($0.offset) }
        let notStage = stages.isEmpty ? "no stage comes before this one" : "it is not one of the stages before this one (\(stages.joined(separator: ", ")))"
        guard !name.isEmpty else {
            throw BuildError(.target, "\(instruction.location): \(instruction.text) names no image: it expands to nothing (is a build argument it uses unset?)")
        }
        do {
            return try await store.resolveOrPull(name, platform: platform)
        } catch let error as OCIImageError {
            throw BuildError(.target, "\(instruction.location): \(name): \(notStage), and no such image can be had", underlying: error)
        }
    }

    /// The `PATH` of a stage whose base sets none.
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// A cache key: the SHA-256 of the parts, each ended by a newline.
    static func hash(_ parts: [String]) -> String {
        var hasher = DigestHasher()
        for part in parts {
            Array((part + "\n").utf8).withUnsafeBytes { hasher.update($0) }
        }
        return hasher.finalize().encoded
    }
}
