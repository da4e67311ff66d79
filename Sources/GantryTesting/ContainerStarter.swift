import Foundation
import GantryCore
import Logging
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Starts one test container: its image found, pulled or built; created;
/// files copied in; started; waited for. Whatever fails after the create
/// removes what was made before the error is thrown.
struct ContainerStarter {
    let session: TestSession
    let container: TestContainer

    func start() async throws -> RunningContainer {
        let runtime = try await session.preparedRuntime()
        let image = try await imageName(runtime)
        let resolved = try await runtime.images.resolve(image)
        let healthCheck = resolved.configuration.config?.healthcheck?.test
        var spec = container.spec
        spec.root = .image(image)
        try place(&spec, runtime)

        let reuseKey = container.reuse ? try reuseKey(image, digest: resolved.record.descriptor.digest.description) : nil
        if let reuseKey {
            spec.name = "testing-reuse-" + reuseKey
            spec.labels[TestSession.reuseLabel] = reuseKey
            spec.lifetime = .independent
            if let found = try await reusable(spec.name ?? "", runtime) {
                let running = RunningContainer(container: found, runtime: runtime, description: container, volumes: [], kept: true)
                try await running.awaitReady(container.waitStrategy, timeout: container.startupTimeout, healthCheck: healthCheck, image: imageDescription)
                try await runHooks(.ready, running)
                return running
            }
        } else if spec.name == nil {
            spec.name = "testing-" + freshSuffix(8)
        }

        var volumes: [String] = []
        do {
            for target in container.volumeTargets {
                let volume = try await runtime.volumes.create("testing-" + freshSuffix(12),
                                                              labels: reuseKey.map { [TestSession.reuseLabel: $0] } ?? TestSession.ownerLabels)
                volumes.append(volume.name)
                spec.mounts.append(.volume(name: volume.name, target: target))
            }
        } catch {
            for volume in volumes { try? await runtime.volumes.remove(volume) }
            throw error
        }
        let created: Container
        do {
            created = try await runtime.create(spec)
        } catch {
            for volume in volumes { try? await runtime.volumes.remove(volume) }
            throw error
        }
        let running = RunningContainer(container: created, runtime: runtime, description: container, volumes: volumes, kept: reuseKey != nil)
        do {
            try await copyFiles(into: created)
            try await runHooks(.created, running)
            try await created.start()
            consumeLogs(of: created)
            try await runHooks(.started, running)
            try await running.awaitReady(container.waitStrategy, timeout: container.startupTimeout, healthCheck: healthCheck, image: imageDescription)
            try await runHooks(.ready, running)
            return running
        } catch {
            try? await Task { try await running.discard() }.value
            throw error
        }
    }

    // MARK: - Image

    /// The image's name in the state root: found there, else pulled, or built.
    private func imageName(_ runtime: ContainerRuntime) async throws -> String {
        switch container.image {
        case .named(let name):
            if (try? await runtime.images.image(name)) != nil { return name }
            #if Registry
            do {
                try await runtime.images.pull(name)
                return name
            } catch {
                throw TestingError(.image, "image \(name) is not in the state root \(runtime.images.root) and cannot be pulled", underlying: error)
            }
            #else
            throw TestingError(.image, "image \(name) is not in the state root \(runtime.images.root), and this build has no registry client to pull it")
            #endif
        case .built(let context, let dockerfile, let arguments):
            return try await session.buildImage(context: context, dockerfile: dockerfile, arguments: arguments)
        }
    }

    // MARK: - Networks and ports

    /// Puts the container on its networks, with its exposed ports published.
    private func place(_ spec: inout ContainerSpec, _ runtime: ContainerRuntime) throws {
        if let first = container.networks.first {
            spec.network = .bridge(first.network.name)
            spec.networkAliases = first.aliases
            spec.additionalNetworks = container.networks.dropFirst().map { ContainerSpec.NetworkMembership($0.network.name, aliases: $0.aliases) }
        } else if !container.exposedPorts.isEmpty, spec.network == .none {
            spec.network = .bridge(Networks.defaultName)
        }
        spec.publishedPorts += container.exposedPorts.map { PublishedPort(hostPort: 0, containerPort: $0) }
    }

    // MARK: - Reuse

    /// The hash of what the container is: the same for the same image
    /// (by name and content), command, environment, ports, mounts and files.
    private func reuseKey(_ image: String, digest: String) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var parts = [image, digest, String(decoding: try encoder.encode(container.spec), as: UTF8.self)]
        parts.append(container.exposedPorts.map(String.init).joined(separator: ","))
        parts.append(container.volumeTargets.joined(separator: ","))
        for file in container.files {
            switch file {
            case .host(let path, let target): parts.append("\(path)>\(target):\(fileStamp(path))")
            case .contents(let bytes, let target, let mode): parts.append("\(target):\(mode):\(fingerprint([String(decoding: bytes, as: UTF8.self)]))")
            }
        }
        if !container.networks.isEmpty {
            throw TestingError(.invalidSpec, "a reusable container cannot join networks made for a test: they are removed with it")
        }
        return fingerprint(parts)
    }

    /// The reusable container of that name, when it runs; one that does
    /// not run is removed.
    private func reusable(_ name: String, _ runtime: ContainerRuntime) async throws -> Container? {
        guard let found = try? runtime.container(name) else { return nil }
        if try found.status == .running { return found }
        try await found.remove(force: true)
        return nil
    }

    // MARK: - Start

    private func copyFiles(into created: Container) async throws {
        for file in container.files {
            switch file {
            case .host(let path, let target):
                try await created.makeDirectories((target as NSString).deletingLastPathComponent)
                try await created.copyIn(from: path, to: target)
            case .contents(let bytes, let target, let mode):
                try await created.makeDirectories((target as NSString).deletingLastPathComponent)
                let staging = NSTemporaryDirectory() + "gantry-testing-" + UUID().uuidString
                defer { unlink(staging) }
                guard FileManager.default.createFile(atPath: staging, contents: Data(bytes), attributes: [.posixPermissions: mode]) else {
                    throw TestingError(.invalidSpec, "cannot stage the contents of \(target) at \(staging)")
                }
                chmod(staging, mode_t(mode))
                try await created.copyIn(from: staging, to: target)
            }
        }
    }

    private func runHooks(_ point: TestContainer.LifecyclePoint, _ running: RunningContainer) async throws {
        for hook in container.hooks[point] ?? [] { try await hook(running) }
    }

    /// Hands each line of output to the consumers, until the output ends
    /// with the container.
    private func consumeLogs(of created: Container) {
        let consumers = container.logConsumers
        guard !consumers.isEmpty else { return }
        Task {
            do {
                for try await line in created.output.lines {
                    for consumer in consumers { consumer(line) }
                }
            } catch {
                // The output ends with the container.
            }
        }
    }

    private var imageDescription: String {
        switch container.image {
        case .named(let name): name
        case .built(let context, _, _): "built from \(context)"
        }
    }
}

/// `count` random lowercase hexadecimal digits, for names.
func freshSuffix(_ count: Int) -> String {
    String(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(count)).lowercased()
}

/// The first 16 hexadecimal digits of the SHA-256 digest of `parts`,
/// each ended with a NUL.
func fingerprint(_ parts: [String]) -> String {
    String(Digest.compute(parts.flatMap { Array($0.utf8) + [0] }).encoded.prefix(16))
}

/// What changes when a host file changes: its size and modification time.
private func fileStamp(_ path: String) -> String {
    var status = stat()
    guard stat(path, &status) == 0 else { return "missing" }
    return "\(status.st_size).\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
}
