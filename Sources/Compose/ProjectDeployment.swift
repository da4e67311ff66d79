import Foundation
public import Reconciler
import OCIImage
public import Runtime
import Scheduler
#if canImport(Glibc)
import Glibc
#endif

/// What applying a compose project did.
public struct ProjectReport: Hashable, Sendable {
    /// Networks that were created (the others existed or are external).
    public var createdNetworks: [String] = []
    /// Volumes that were created.
    public var createdVolumes: [String] = []
    /// Services created or changed.
    public var appliedServices: [String] = []
    /// Services of the project that the file no longer has, deleted.
    public var deletedServices: [String] = []
    /// Images pulled for the services (those missing, or all with `pull_policy: always`).
    public var pulledImages: [String] = []
    /// Images built for services with a `build:` (those missing, or all when asked or with `pull_policy: build`).
    public var builtImages: [String] = []
}

/// The label that marks networks and volumes a project created.
public let projectLabel = ReplicaLabel.project

extension Reconciler {
    /// Applies a compose project: builds or pulls the images its services
    /// lack (as their `build:` and pull policies say), creates its missing networks and volumes
    /// (labelled with the project), applies its services and deletes the
    /// project's services that the file no longer has.
    ///
    /// - Parameters:
    ///   - project: the loaded compose project; its name must be this reconciler's project.
    ///   - rebuilding: whether services with a `build:` are built even
    ///     when the store has their images (`gantry up --build`).
    /// - Throws: `ReconcilerError` naming what is wrong, or a runtime error
    ///   when a network or volume cannot be made.
    @discardableResult
    public func apply(_ project: ComposeProject, rebuilding: Bool = false) async throws -> ProjectReport {
        guard project.name == options.project else {
            throw ReconcilerError(.invalidSpec, "compose project \(project.name) is not this reconciler's project (\(options.project))")
        }
        guard let runtime = runtime as? ContainerRuntime else {
            throw ReconcilerError(.invalidState, "compose project \(project.name) needs networks and volumes, which only a ContainerRuntime has")
        }
        var report = ProjectReport()
        // Images first: a service that cannot have its image makes nothing.
        report.builtImages = try await buildImages(project, runtime: runtime, always: rebuilding)
        report.pulledImages = try await pullImages(project, images: runtime.images)
        let existingNetworks = Set(try runtime.networks.list().map(\.name))
        for network in project.networks {
            if network.external {
                guard existingNetworks.contains(network.name) else {
                    throw ReconcilerError(.invalidSpec, "network \(network.key) is external, but there is no network \(network.name)")
                }
                continue
            }
            guard !existingNetworks.contains(network.name) else { continue }
            var subnet: IPv4Subnet?
            if let text = network.subnet {
                guard let parsed = IPv4Subnet(text) else { throw ReconcilerError(.invalidSpec, "network \(network.key): \"\(text)\" is not an IPv4 subnet") }
                subnet = parsed
            }
            var labels = network.labels
            labels[projectLabel] = project.name
            _ = try await runtime.networks.create(network.name, subnet: subnet, internal: network.internal, labels: labels)
            report.createdNetworks.append(network.name)
        }
        let existingVolumes = Set(try runtime.volumes.list().map(\.name))
        for volume in project.volumes {
            if volume.external {
                guard existingVolumes.contains(volume.name) else {
                    throw ReconcilerError(.invalidSpec, "volume \(volume.key) is external, but there is no volume \(volume.name)")
                }
                continue
            }
            guard !existingVolumes.contains(volume.name) else { continue }
            var labels = volume.labels
            labels[projectLabel] = project.name
            _ = try await runtime.volumes.create(volume.name, labels: labels)
            report.createdVolumes.append(volume.name)
        }
        let wanted = Set(project.services.map(\.name))
        for service in project.services {
            let (_, changed) = try store.apply(service)
            if changed { report.appliedServices.append(service.name) }
        }
        for record in try store.services(project: options.project) where !wanted.contains(record.spec.name) {
            try store.delete(record.spec.name, project: options.project)
            report.deletedServices.append(record.spec.name)
        }
        try refresh()
        return report
    }

    /// Pulls the services' images as their pull policies say: each image
    /// once, those the store lacks (or all, for `always`); an image the
    /// store lacks under `never`, or that cannot be pulled, is an error
    /// naming the service.
    private func pullImages(_ project: ComposeProject, images: ImageStore) async throws -> [String] {
        // A service that is built is not pulled.
        var wanted: [(user: String, reference: String, policy: PullPolicy)] = []
        for service in project.services {
            let policy = project.pullPolicies[service.name] ?? .missing
            if project.builds[service.name] == nil, case .image(let reference) = service.template.root {
                wanted.append(("service \(service.name)", reference, policy))
            }
            for (index, container) in service.initContainers.enumerated() {
                if case .image(let reference) = container.root { wanted.append(("service \(service.name): init container \(index + 1)", reference, policy)) }
            }
        }
        return try await Self.pullImages(wanted, images: images)
    }

    /// Pulls images as their pull policies say: each once, those the store
    /// lacks (or all, for `always`); one the store lacks under `never`, or
    /// that cannot be pulled, is an error naming its user.
    ///
    /// - Parameter wanted: each image with what uses it (for messages: `service web`) and its policy.
    /// - Returns: the images pulled.
    static func pullImages(_ wanted: [(user: String, reference: String, policy: PullPolicy)], images: ImageStore) async throws -> [String] {
        var pulled: [String] = []
        for (user, reference, policy) in wanted where !pulled.contains(reference) {
            let present = (try? await images.image(reference)) != nil
            if present && policy != .always { continue }
            guard policy != .never else {
                throw ReconcilerError(.invalidSpec, "\(user): image \(reference) is not in the image store, and its pull_policy is never")
            }
            #if Registry
            do {
                _ = try await images.pull(reference)
            } catch {
                throw ReconcilerError(.invalidSpec, "\(user): cannot pull image \(reference): \(error)")
            }
            pulled.append(reference)
            #else
            if !present {
                throw ReconcilerError(.invalidSpec, "\(user): image \(reference) is not in the image store, and this build of Gantry has no registry client")
            }
            #endif
        }
        return pulled
    }

    /// Whether a reconciler (in any process) runs `project` on this state root now.
    ///
    /// - Parameters:
    ///   - project: the project.
    ///   - root: the state root.
    public static func isRunning(project: String, root: StateRoot) -> Bool {
        guard let fd = OwnedDescriptor(opening: root.path + "/reconciler/" + project + ".lock", O_RDWR | O_CLOEXEC) else { return false }
        return flock(fd.raw, LOCK_EX | LOCK_NB) != 0
    }

    /// The pid of the process reconciling `project`, if one does.
    ///
    /// - Parameters:
    ///   - project: the project.
    ///   - root: the state root.
    public static func reconcilingProcess(project: String, root: StateRoot) -> Int32? {
        guard isRunning(project: project, root: root),
              let text = try? String(contentsOfFile: root.path + "/reconciler/" + project + ".lock", encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Takes a project down: deletes its services, removes its replicas (a
    /// reconciler running the project in another process removes them; this
    /// waits for that), then the networks the project created and, when
    /// asked, its volumes.
    ///
    /// - Parameters:
    ///   - project: the project.
    ///   - runtime: the runtime its replicas run in.
    ///   - store: the service store.
    ///   - removingVolumes: whether the project's volumes go too.
    ///   - timeout: how long to wait for a running reconciler to remove the replicas.
    public static func tearDown(project: String, runtime: ContainerRuntime, store: ServiceStore, removingVolumes: Bool = false,
                                timeout: Duration = .seconds(60)) async throws {
        for record in try store.services(project: project) {
            try store.delete(record.spec.name, project: project)
        }
        func replicas() throws -> [ContainerRecord] {
            try runtime.list().filter { $0.spec.labels[ReplicaLabel.project] == project && $0.spec.labels[ReplicaLabel.service] != nil }
        }
        if isRunning(project: project, root: runtime.images.root) {
            let deadline = ContinuousClock.now + timeout
            while try !replicas().filter({ $0.status != .stopped }).isEmpty, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // What is left: ended replicas, or those of a reconciler that is not
        // running, and the runs of the project's jobs.
        let runs = try runtime.list().filter { $0.spec.labels[ReplicaLabel.project] == project && $0.spec.labels[JobRunner.jobLabel] != nil }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for record in try replicas() + runs {
                group.addTask {
                    // A reconciler may have removed it meanwhile.
                    guard let container = try? runtime.container(record.id) else { return }
                    if record.status == .running || record.status == .paused { _ = try? await container.stop() }
                    try? await container.remove(force: true)
                }
            }
            try await group.waitForAll()
        }
        for endpoint in try runtime.endpoints() where endpoint.key.hasPrefix(endpointKey(project: project, service: "")) {
            try await runtime.removeEndpoint(endpoint.key)
        }
        for network in try runtime.networks.list() where network.labels[projectLabel] == project {
            try await runtime.networks.remove(network.name)
        }
        if removingVolumes {
            for volume in try runtime.volumes.list() where volume.labels[projectLabel] == project {
                try await runtime.volumes.remove(volume.name)
            }
        }
    }
}
