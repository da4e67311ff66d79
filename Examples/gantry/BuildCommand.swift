import ArgumentParser
import Build
import Foundation
import Gantry

/// `gantry build`: builds a Dockerfile, as `docker build` does, without a daemon.
struct BuildImage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build an image from a Dockerfile and a context directory.",
        discussion: "RUN steps run in containers of this state root; unchanged steps come from the build cache (gantry image prune --build-cache empties it).")

    @Argument(help: ArgumentHelp("The build context.", valueName: "dir"))
    var context: String

    @Option(name: .shortAndLong, help: ArgumentHelp("The Dockerfile (default: Dockerfile, or Containerfile, in the context).", valueName: "file"))
    var file: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("A name for the image (repeatable).", valueName: "name"))
    var tag: [String] = []

    @Option(name: .customLong("build-arg"), help: ArgumentHelp("A value for an ARG (repeatable); NAME alone takes it from the environment.", valueName: "NAME=value"))
    var buildArguments: [String] = []

    @Option(help: ArgumentHelp("The stage to build (default: the last).", valueName: "stage"))
    var target: String?

    @Flag(name: .customLong("no-cache"), help: "Run every step, reusing nothing from the build cache.")
    var noCache = false

    @Option(help: ArgumentHelp("The time to record and the latest file modification time, in seconds since 1970, for a reproducible image (default: $SOURCE_DATE_EPOCH when set).", valueName: "seconds"))
    var timestamp: Int64?

    @Option(help: ArgumentHelp("The platform to build for (default: the host's), as os/arch[/variant]; RUN steps run only on the host's.", valueName: "platform"))
    var platform: String?

    @Option(help: ArgumentHelp("The network of RUN steps: host or none.", valueName: "mode"))
    var network: String = "host"

    @Option(help: ArgumentHelp("A secret for RUN --mount=type=secret: id=ID,src=FILE (repeatable).", valueName: "id=ID,src=FILE"))
    var secret: [String] = []

    @Option(help: ArgumentHelp("Also write the image elsewhere: type=oci,dest=DIR[,tag=TAG] (an OCI image layout) or type=registry (push every --tag).", valueName: "spec"))
    var output: [String] = []

    @Flag(help: "Push every --tag to its registry (as --output type=registry).")
    var push = false

    @Option(name: .customLong("cache-from"), help: ArgumentHelp("Take steps from a registry's build cache (repeatable): type=registry,ref=REF, or REF.", valueName: "spec"))
    var cacheFrom: [String] = []

    @Option(name: .customLong("cache-to"), help: ArgumentHelp("Push the build cache to a registry: type=registry,ref=REF[,mode=min|max] (min: the target stage's steps; max: every stage's).", valueName: "spec"))
    var cacheTo: String?

    @Flag(name: .shortAndLong, help: "Print only the image's digest.")
    var quiet = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryFlags

    func run() async throws {
        var options = BuildOptions(dockerfile: file, target: target, tags: tag, useCache: !noCache)
        for argument in buildArguments {
            let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 {
                options.arguments[parts[0]] = parts[1]
            } else if let value = ProcessInfo.processInfo.environment[parts[0]] {
                options.arguments[parts[0]] = value
            }
        }
        let epoch = timestamp ?? ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap { Int64($0) }
        options.timestamp = epoch.map { Date(timeIntervalSince1970: TimeInterval($0)) }
        guard let mode = BuildOptions.RunNetwork(rawValue: network) else {
            throw ValidationError("--network \(network): the choices are host and none")
        }
        options.network = mode
        if let platform {
            guard platform.contains("/"), let parsed = try? Platform(parsing: platform) else {
                throw ValidationError("--platform \(platform): expected os/arch[/variant], as linux/amd64")
            }
            options.platform = parsed
        }
        for item in secret {
            let fields = Self.fields(item)
            guard let id = fields["id"], let source = fields["src"] ?? fields["source"] else {
                throw ValidationError("--secret \(item): expected id=ID,src=FILE")
            }
            options.secrets[id] = URL(fileURLWithPath: source).standardizedFileURL.path
        }
        for item in cacheFrom {
            let fields = Self.fields(item)
            guard fields["type"] == nil || fields["type"] == "registry", let reference = fields["ref"] ?? (item.contains("=") ? nil : item) else {
                throw ValidationError("--cache-from \(item): expected type=registry,ref=REF or a reference")
            }
            options.cacheFrom.append(reference)
        }
        if let cacheTo {
            let fields = Self.fields(cacheTo)
            guard fields["type"] == nil || fields["type"] == "registry", let reference = fields["ref"] ?? (cacheTo.contains("=") ? nil : cacheTo) else {
                throw ValidationError("--cache-to \(cacheTo): expected type=registry,ref=REF[,mode=min|max]")
            }
            guard let mode = BuildOptions.CacheExport.Mode(rawValue: fields["mode"] ?? "min") else {
                throw ValidationError("--cache-to \(cacheTo): mode is min or max")
            }
            options.cacheTo = BuildOptions.CacheExport(reference: reference, mode: mode)
        }
        var layouts: [(directory: String, tag: String?)] = []
        var pushes = push
        for item in output {
            let fields = Self.fields(item)
            switch fields["type"] {
            case "oci":
                guard let directory = fields["dest"] else { throw ValidationError("--output \(item): type=oci needs dest=DIR") }
                layouts.append((directory, fields["tag"]))
            case "registry":
                pushes = true
            case "image":
                if fields["push"] == "true" { pushes = true }
            default:
                throw ValidationError("--output \(item): the types are oci (dest=DIR) and registry")
            }
        }
        if pushes, tag.isEmpty { throw ValidationError("pushing needs a --tag naming where to") }
        let references = tag + options.cacheFrom + (options.cacheTo.map { [$0.reference] } ?? [])
        let gantry = try await global.openGantry(registry: registry, insecure: references.compactMap { try? ImageReference(parsing: $0).registry })
        let builder = ImageBuilder(runtime: try gantry.containers)
        let quiet = quiet
        let result = try await builder.build(context: context, options: options) { event in
            guard !quiet else { return }
            switch event {
            case .step(let step):
                FileHandle.standardOutput.write(Data((step.description + "\n").utf8))
            case .output(_, let bytes):
                FileHandle.standardOutput.write(Data(bytes))
            case .notice(let text):
                FileHandle.standardError.write(Data(("gantry: " + text + "\n").utf8))
            }
        }
        let digest = result.image.manifestDescriptor.digest.description
        for layout in layouts {
            try await gantry.images.exportLayout(tag.first ?? digest, to: layout.directory, tag: layout.tag ?? "latest")
        }
        if pushes {
            for name in tag { try await gantry.images.push(name, to: name) }
        }
        if quiet {
            print(digest)
        } else {
            print("built \(digest)\(result.tags.isEmpty ? "" : " as " + result.tags.joined(separator: ", "))")
        }
    }

    /// The `key=value` fields of a comma-separated option value (a field
    /// without `=` has an empty value).
    static func fields(_ item: String) -> [String: String] {
        var fields: [String: String] = [:]
        for field in item.split(separator: ",") {
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            fields[parts[0]] = parts.count == 2 ? parts[1] : ""
        }
        return fields
    }
}
