import Foundation
import GantryCore
import OCIImage
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Applies instructions to a stage's state.
struct StepRunner {
    let stage: StageBuilder
    let label: String
    let globals: [String: String]

    var options: BuildOptions { stage.run.options }
    var escape: Character { stage.run.dockerfile.escape }
    var runtime: ContainerRuntime { stage.builder.runtime }

    /// The variables instructions see: the stage's arguments, then its
    /// environment over them.
    func variables(_ state: State) -> [String: String] {
        var values: [String: String] = [:]
        for (name, value) in state.arguments { values[name] = value }
        for item in state.configuration.config?.env ?? [] {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            values[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return values
    }

    typealias State = StageBuilder.State

    /// Applies `instruction`; whether its result came from the cache.
    func apply(_ instruction: Instruction, to state: inout State) async throws -> Bool {
        let expansion = VariableExpansion(escape: escape, variables: variables(state))
        let text: String
        switch instruction.arguments {
        case .shell(let line): text = line
        case .exec(let words): text = words.joined(separator: " ")
        }
        func words() throws -> [String] {
            switch instruction.arguments {
            case .exec(let list): try list.map { try expansion.word($0) }
            case .shell(let line): try expansion.words(line)
            }
        }
        func form(_ arguments: Arguments) -> [String] {
            switch arguments {
            case .exec(let list): list
            case .shell(let line): (state.configuration.config?.shell ?? ["/bin/sh", "-c"]) + [line]
            }
        }
        var config = state.configuration.config ?? RunConfiguration()
        var description = instruction.keyword
        var changesFiles = false
        switch instruction.keyword {
        case "ARG":
            for (name, value) in try expansion.pairs(text, allowingBare: true) {
                let resolved = options.arguments[name] ?? value ?? globals[name]
                state.arguments.removeAll { $0.0 == name }
                if let resolved { state.arguments.append((name, resolved)) }
                description += " \(name)=\(resolved ?? "")"
            }
        case "ENV":
            var environment = config.env ?? []
            for (name, value) in try expansion.pairs(text) {
                environment.removeAll { $0 == name || $0.hasPrefix(name + "=") }
                environment.append("\(name)=\(value ?? "")")
            }
            config.env = environment
        case "LABEL":
            var labels = config.labels ?? [:]
            for (name, value) in try expansion.pairs(text) { labels[name] = value ?? "" }
            config.labels = labels
        case "MAINTAINER":
            state.configuration.author = text
            config.labels = (config.labels ?? [:]).merging(["maintainer": text]) { $1 }
        case "USER":
            config.user = try expansion.word(text)
        case "EXPOSE":
            var ports = config.exposedPorts ?? []
            for port in try words() {
                let named = port.contains("/") ? port.lowercased() : port + "/tcp"
                if !ports.contains(named) { ports.append(named) }
            }
            config.exposedPorts = ports
        case "VOLUME":
            var volumes = config.volumes ?? []
            for volume in try words() where !volumes.contains(volume) { volumes.append(volume) }
            config.volumes = volumes
        case "STOPSIGNAL":
            config.stopSignal = try expansion.word(text)
        case "ENTRYPOINT":
            config.entrypoint = form(instruction.arguments)
            // A base's command does not outlive a new entry point.
            if !state.setCommand { config.cmd = nil }
        case "CMD":
            config.cmd = form(instruction.arguments)
            state.setCommand = true
        case "SHELL":
            guard case .exec(let shell) = instruction.arguments, !shell.isEmpty else {
                throw BuildError(.instruction, "\(instruction.location): SHELL takes a JSON array, as SHELL [\"/bin/bash\", \"-c\"]")
            }
            config.shell = shell
        case "HEALTHCHECK":
            config.healthcheck = try healthcheck(instruction, shell: config.shell)
        case "ONBUILD":
            let trigger = instruction.text.drop { $0 == " " }.dropFirst("ONBUILD".count).drop { $0 == " " || $0 == "\t" }
            config.onBuild = (config.onBuild ?? []) + [String(trigger)]
        case "WORKDIR":
            let path = try expansion.word(text)
            config.workingDir = Self.absolute(path, in: config.workingDir)
            changesFiles = true
        case "RUN":
            let platform = state.configuration.platform
            guard platform.os == Platform.host.os, platform.architecture == Platform.host.architecture else {
                throw BuildError(.instruction, "\(instruction.location): RUN cannot run \(platform) programs on this \(Platform.host) host: Gantry does not emulate other processors (build for \(Platform.host), or give the step's work to COPY and ADD)")
            }
            changesFiles = true
        case "COPY", "ADD":
            changesFiles = true
        default:
            throw BuildError(.instruction, "\(instruction.location): unknown instruction \(instruction.keyword)")
        }
        state.configuration.config = config
        guard changesFiles else {
            state.key = StageBuilder.hash([state.key, description, instruction.text])
            appendHistory(instruction, to: &state, emptyLayer: true)
            return false
        }
        return try await fileStep(instruction, expansion: expansion, state: &state)
    }

    private func appendHistory(_ instruction: Instruction, to state: inout State, emptyLayer: Bool) {
        let entry = ImageConfiguration.History(created: ImageStore.timestamp(options.timestamp ?? Date()), createdBy: instruction.text,
                                               comment: "gantry build", emptyLayer: emptyLayer ? true : nil)
        state.configuration.history = (state.configuration.history ?? []) + [entry]
    }

    /// A step that may change files: its key, then its layer from the
    /// cache or made now.
    private func fileStep(_ instruction: Instruction, expansion: VariableExpansion, state: inout State) async throws -> Bool {
        let staging = Staging(root: stage.store.root)
        defer { staging.remove() }
        var keyParts = [state.key, instruction.text]
        var work: @Sendable (Container) async throws -> Void
        switch instruction.keyword {
        case "WORKDIR":
            let path = state.configuration.config?.workingDir ?? "/"
            let owner = try await userIDs(state.configuration.config?.user, state: state)
            keyParts.append(path)
            work = { container in try await container.makeDirectories(path, owner: owner) }
        case "RUN":
            var spec = try runSpec(instruction, state: state)
            let mounts = try await runMounts(instruction, staging: staging)
            spec.mounts = mounts.mounts
            keyParts += spec.command ?? []
            keyParts += spec.environment
            keyParts.append(spec.network.description)
            keyParts += mounts.keyParts
            work = { [self] container in try await runContainer(container, instruction) }
            let prepare = mounts.prepare
            return try await changeFiles(instruction, keyParts: keyParts, state: &state, spec: spec, work: work) {
                for step in prepare { try await step() }
            }
        default:
            let copy = try await prepareCopy(instruction, expansion: expansion, state: state, staging: staging)
            keyParts += copy.keyParts
            let (destination, owner, archives, file) = (copy.directory, copy.owner, copy.archives, copy.file)
            let (listing, mode) = (copy.listing, copy.mode)
            // An ordinary user's staged files are the container root's: the
            // owner is given once they are in place, in its user namespace.
            let ownerAfter = runtime.userNamespace != nil ? owner.flatMap { $0 == (0, 0) ? nil : $0 } : nil
            if ownerAfter != nil, !archives.isEmpty {
                throw BuildError(.instruction, "\(instruction.location): an ordinary user's build extracts archives for the container's root only: give the files other owners in a RUN step")
            }
            work = { container in
                let source = try staging.files()
                try await offload { _ in try Staging.place(listing, into: source, owner: owner ?? (0, 0), mode: mode) }
                let made = try await container.makeMissingDirectories(destination, owner: ownerAfter == nil ? owner : nil)
                if let file, try await container.isDirectory(destination + "/" + file.staged) {
                    // COPY a.txt /app, where /app is a directory: /app/a.txt.
                    let target = destination + "/" + file.staged + "/" + file.source
                    try await container.copyIn(from: source + "/" + file.staged, to: target, options: CopyOptions(keepOwners: true))
                    if let ownerAfter { try await container.giveOwner(made + [target], to: ownerAfter) }
                    return
                }
                try await container.copyIn(from: source + "/.", to: destination, options: CopyOptions(keepOwners: true))
                if let ownerAfter { try await container.giveOwner(made + listing.map { destination + "/" + $0.target }, to: ownerAfter) }
                for archive in archives {
                    let fd = try FileDescriptor.open(archive, .readOnly)
                    defer { try? fd.close() }
                    try await container.extract(from: fd, into: destination, options: CopyOptions(keepOwners: true))
                }
            }
            if state.root == nil {
                return try await scratchFiles(instruction, keyParts: keyParts, copy: copy, staging: staging, state: &state)
            }
        }
        guard let root = state.root else {
            // WORKDIR on an empty file system: a layer with the directory.
            let path = state.configuration.config?.workingDir ?? "/"
            let key = StageBuilder.hash(keyParts)
            if try await reuse(key, instruction, state: &state) { return true }
            let tree = try staging.area("tree")
            try FileManager.default.createDirectory(atPath: tree + path, withIntermediateDirectories: true)
            return try await hostLayer(instruction, key: key, tree: tree, state: &state)
        }
        var spec = ContainerSpec(image: root, command: ["/"])
        spec.entrypoint = []
        return try await changeFiles(instruction, keyParts: keyParts, state: &state, spec: spec, work: work)
    }

    /// Runs `work` on a container of the image so far (created, not
    /// started, unless `work` starts it), and takes its changes as the step's layer.
    private func changeFiles(_ instruction: Instruction, keyParts: [String], state: inout State, spec: ContainerSpec,
                             work: @Sendable (Container) async throws -> Void,
                             prepare: (@Sendable () async throws -> Void)? = nil) async throws -> Bool {
        let key = StageBuilder.hash(keyParts)
        if try await reuse(key, instruction, state: &state) { return true }
        guard state.root != nil else {
            throw BuildError(.instruction, "\(instruction.location): \(instruction.keyword) needs a file system, and the stage starts from scratch with no files yet")
        }
        try await prepare?()
        var spec = spec
        spec.lifetime = .boundToHost
        spec.labels["gantry.build.step"] = instruction.location.description
        var made: Container?
        let layer: BuiltLayer
        do {
            let container = try await runtime.create(spec)
            made = container
            try await work(container)
            // The upper directory becomes the layer's snapshot, unless the
            // layer's times are clamped: then the snapshot is unpacked from
            // the layer, so that containers see the times the image has.
            layer = try await container.writeChanges(latestModification: options.timestamp,
                                                     snapshotAbove: options.timestamp == nil ? state.layers : nil)
        } catch {
            try? await made?.remove(force: true)
            if runtime.userNamespace != nil, let path = Self.deniedPath(error) {
                throw BuildError(.instruction, "\(instruction.location): \(instruction.keyword) cannot write \(path): an ordinary user's build places files as the container's root, which may not write where the image gave another of its users the directory", underlying: error)
            }
            if let failure = error as? RuntimeError, failure.code == .unsupportedHost || failure.code == .invalidSpec {
                // A host that cannot, or what the image lacks (a USER it has no entry for).
                throw BuildError(.instruction, "\(instruction.location): \(failure.message)", underlying: error)
            }
            throw error
        }
        try await made?.remove(force: true)
        try await commit(layer, key: key, instruction, state: &state)
        return false
    }

    /// Files copied onto an empty file system: the layer is the staged
    /// tree itself, under the destination's path.
    private func scratchFiles(_ instruction: Instruction, keyParts: [String], copy: PreparedCopy, staging: Staging,
                              state: inout State) async throws -> Bool {
        let key = StageBuilder.hash(keyParts)
        if try await reuse(key, instruction, state: &state) { return true }
        let files = try staging.files()
        try await offload { _ in try Staging.place(copy.listing, into: files, owner: copy.owner ?? (0, 0), mode: copy.mode) }
        let tree = try staging.area("tree")
        let target = tree + copy.directory
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: files) {
            try FileManager.default.moveItem(atPath: files + "/" + name, toPath: target + "/" + name)
        }
        for archive in copy.archives {
            try Staging.extract(archive, into: target)
        }
        return try await hostLayer(instruction, key: key, tree: tree, state: &state)
    }

    /// The layer of a tree made on the host (a step on an empty file system).
    private func hostLayer(_ instruction: Instruction, key: String, tree: String, state: inout State) async throws -> Bool {
        let layer = try await stage.store.writeLayer(from: tree, latestModification: options.timestamp)
        if layer.entries != 0, options.timestamp == nil { try await stage.store.adoptSnapshot(tree, layers: state.layers + [layer]) }
        try await commit(layer, key: key, instruction, state: &state)
        return false
    }

    /// Takes the step's result from the cache, when there and wanted.
    private func reuse(_ key: String, _ instruction: Instruction, state: inout State) async throws -> Bool {
        var found: ImageStore.ResolvedImage?
        if options.useCache {
            found = try await stage.store.cachedBuildStep(key)
            #if Registry
            if found == nil, !options.cacheFrom.isEmpty { found = await stage.run.fetchRemote(key) }
            #endif
        }
        // The step is announced now: its work, and its output, follow.
        await stage.run.announce(stage: label, cached: found != nil)
        guard let cached = found else { return false }
        await stage.run.used(key, stage: stage.index)
        let layers = zip(cached.manifest.layers, cached.configuration.rootfs.diffIDs).map { BuiltLayer(descriptor: $0, diffID: $1) }
        let added = layers.count > state.layers.count
        state.layers = layers
        state.root = layers.isEmpty ? nil : cached.manifestDescriptor.digest.description
        state.key = key
        appendHistory(instruction, to: &state, emptyLayer: !added)
        return true
    }

    /// Adds the step's layer (none when it changed nothing) and records
    /// the image so far under the step's key.
    private func commit(_ layer: BuiltLayer, key: String, _ instruction: Instruction, state: inout State) async throws {
        let empty = layer.entries == 0
        if !empty { state.layers.append(layer) }
        appendHistory(instruction, to: &state, emptyLayer: empty)
        state.key = key
        let image = try await stage.store.writeImage(state.configuration, layers: state.layers, cacheKey: key)
        await stage.run.used(key, stage: stage.index)
        state.root = state.layers.isEmpty ? nil : image.manifestDescriptor.digest.description
    }

    /// The container path a permission was denied on, found through the
    /// error's chain; nil when no permission was denied.
    static func deniedPath(_ error: any Error) -> String? {
        var next: (any Error)? = error
        while let current = next {
            if let failure = current as? SystemCallError {
                guard failure.errno == .permissionDenied else { return nil }
                return failure.path.split(separator: ":", maxSplits: 1).last.map(String.init) ?? failure.path
            }
            if let failure = current as? RuntimeError, failure.systemError == .permissionDenied {
                // "cannot open container NAME:/path"
                return failure.message.split(separator: ":", maxSplits: 1).last.map(String.init) ?? failure.message
            }
            next = (current as? any GantryError)?.underlying
        }
        return nil
    }

    static func absolute(_ path: String, in directory: String?) -> String {
        let joined = path.hasPrefix("/") ? path : (directory ?? "/") + "/" + path
        var parts: [Substring] = []
        for part in joined.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }
}
