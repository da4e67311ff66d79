import Foundation
import Build
import Reconciler
import Runtime

/// A service's `build:`: how its image is made with Gantry's image builder
/// when the image store lacks it (or always, with `pull_policy: build` or
/// when asked), as `docker compose up` does.
public struct ComposeBuild: Hashable, Sendable, Codable {
    /// The build context, an absolute path.
    public var context: String
    /// The Dockerfile, an absolute path; nil for the context's `Dockerfile`.
    public var dockerfile: String?
    /// Build arguments (`ARG`s).
    public var arguments: [String: String]
    /// The stage to build; nil for the last.
    public var target: String?
    /// The network of `RUN` steps: `none` (the default) or `host`.
    public var network: String
    /// Whether no step is taken from the cache.
    public var noCache: Bool
    /// More names for the image, besides the service's `image:`.
    public var tags: [String]

    /// A build as given.
    public init(context: String, dockerfile: String? = nil, arguments: [String: String] = [:], target: String? = nil,
                network: String = "none", noCache: Bool = false, tags: [String] = []) {
        self.context = context
        self.dockerfile = dockerfile
        self.arguments = arguments
        self.target = target
        self.network = network
        self.noCache = noCache
        self.tags = tags
    }
}

extension ServiceReader {
    /// `build: PATH` or `build: {context, dockerfile, args, target, network, no_cache, tags, …}`.
    func build(_ value: ComposeValue) throws -> ComposeBuild {
        guard value.isMapping else {
            return ComposeBuild(context: ComposeSyntax.absolutePath(try value.string(), relativeTo: directory))
        }
        let fields = try value.fields(["context", "dockerfile", "dockerfile_inline", "args", "target", "network", "no_cache", "tags", "pull",
                                       "cache_from", "cache_to", "labels", "platforms", "shm_size", "ssh", "secrets", "extra_hosts", "isolation",
                                       "privileged", "additional_contexts", "ulimits", "entitlements"], what: "build key")
        for key in ["dockerfile_inline", "ssh", "secrets", "additional_contexts", "extra_hosts", "privileged", "entitlements"] {
            if let given = fields[key] { throw given.keyError("not supported by Gantry's image builder; build the image with gantry build and name it in image:") }
        }
        for key in ["pull", "cache_from", "cache_to", "labels", "platforms", "shm_size", "isolation", "ulimits"] {
            fields[key]?.warn("ignored by Gantry's image builder")
        }
        let context = ComposeSyntax.absolutePath(try fields["context"]?.optionalString() ?? ".", relativeTo: directory)
        var build = ComposeBuild(context: context)
        if let dockerfile = try fields["dockerfile"]?.optionalString() {
            build.dockerfile = ComposeSyntax.absolutePath(dockerfile, relativeTo: context)
        }
        for (key, text, _) in try fields["args"]?.keyValues() ?? [] {
            // A bare name takes the variable of the environment, as Compose does.
            if let text { build.arguments[key] = text } else if let inherited = value.context.environment[key] { build.arguments[key] = inherited }
        }
        build.target = try fields["target"]?.optionalString()
        if let network = fields["network"] {
            let text = try network.string()
            guard ["none", "host", "default"].contains(text) else { throw network.error("must be none or host: Gantry's builds run steps on no network or the host's") }
            build.network = text == "default" ? "none" : text
        }
        build.noCache = try fields["no_cache"]?.bool() ?? false
        build.tags = try fields["tags"]?.strings().map { try $0.string() } ?? []
        return build
    }
}

extension Reconciler {
    /// Builds the images of the services with a `build:` that the store
    /// lacks, or all of them when `always` or their pull policy is `build`.
    func buildImages(_ project: ComposeProject, runtime: ContainerRuntime, always: Bool) async throws -> [String] {
        var built: [String] = []
        for service in project.services {
            guard let build = project.builds[service.name], case .image(let reference) = service.template.root, !built.contains(reference) else { continue }
            let present = (try? await runtime.images.image(reference)) != nil
            if present && !always && project.pullPolicies[service.name] != .build { continue }
            var options = BuildOptions(dockerfile: build.dockerfile, arguments: build.arguments, target: build.target,
                                       tags: [reference] + build.tags, useCache: !build.noCache)
            options.network = build.network == "host" ? .host : .none
            do {
                _ = try await ImageBuilder(runtime: runtime).build(context: build.context, options: options)
            } catch {
                throw ReconcilerError(.invalidSpec, "service \(service.name): cannot build image \(reference) from \(build.context): \(error)")
            }
            built.append(reference)
        }
        return built
    }
}
