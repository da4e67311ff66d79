import Compose
import Foundation
public import Reconciler
import Runtime

/// A compose file's services, started for a test.
///
/// ```swift
/// let environment = TestCompose(file: "compose.yaml")
///     .waiting(for: "web", .http("/", port: 80))
/// try await TestSession.shared.withCompose(environment) { project in
///     print(try project.endpoint("web", 80))       // 127.0.0.1:40551
/// }
/// ```
///
/// Each run gets a project name of its own, so that tests using one file
/// side by side do not meet; host ports the file fixes are replaced with
/// free ones unless ``keepingHostPorts()`` says otherwise.
public struct TestCompose: Sendable {
    /// The compose file.
    public var file: String
    /// Variables for interpolation, over the process's and the file's `.env`.
    public var environment: [String: String]
    /// The project's name; by default a fresh one for each run.
    public var projectName: String?
    /// The active profiles.
    public var profiles: [String]?
    /// Waits by service, checked on each service's first replica once the
    /// service has rolled out.
    public var waits: [String: WaitStrategy] = [:]
    /// How long the services may take, from the start to ready.
    public var startupTimeout: Duration = .seconds(120)
    /// Whether host ports the file fixes are kept.
    public var keepsHostPorts = false

    /// The services of `file`.
    public init(file: String, environment: [String: String] = [:], projectName: String? = nil, profiles: [String]? = nil) {
        self.file = file
        self.environment = environment
        self.projectName = projectName
        self.profiles = profiles
    }

    /// Waits for `service` as `strategy` says, after it has rolled out.
    public func waiting(for service: String, _ strategy: WaitStrategy) -> TestCompose {
        var copy = self
        copy.waits[service] = strategy
        return copy
    }

    /// How long the services may take to be ready (120 s unless set).
    public func startupTimeout(_ timeout: Duration) -> TestCompose {
        var copy = self
        copy.startupTimeout = timeout
        return copy
    }

    /// Keeps the host ports the file fixes (`"8080:80"`) instead of
    /// choosing free ones.
    public func keepingHostPorts() -> TestCompose {
        var copy = self
        copy.keepsHostPorts = true
        return copy
    }
}

/// A compose project that runs for a test: its services' replicas and ports.
public struct RunningCompose: Sendable {
    /// The project's name.
    public let project: String
    /// The reconciler that keeps its services running.
    public let reconciler: Reconciler
    let runtime: ContainerRuntime

    /// The running replicas of `service`, each with the service's ports.
    public func replicas(_ service: String) throws -> [RunningContainer] {
        let record = try reconciler.store.service(service, project: project)
        let ports = record.status.publishedPorts ?? []
        return try runtime.list()
            .filter { $0.spec.labels[ReplicaLabel.project] == project && $0.spec.labels[ReplicaLabel.service] == service && $0.status == .running }
            .map { replica in
                var description = TestContainer(image: "", command: replica.spec.command)
                description.spec = replica.spec
                return RunningContainer(container: try runtime.container(replica.id), runtime: runtime, description: description,
                                        volumes: [], kept: true, servicePorts: ports)
            }
    }

    /// The last lines of output of `service`'s replicas, running or
    /// not, for a failure's message.
    func lastLines(of service: String) async -> String {
        var text = ""
        for replica in (try? runtime.list()) ?? [] where replica.spec.labels[ReplicaLabel.project] == project
            && replica.spec.labels[ReplicaLabel.service] == service {
            let logs = (try? await runtime.container(replica.id).logs.text()) ?? ""
            let lines = logs.split(separator: "\n").suffix(20)
            text += "\n\(replica.name) (\(replica.status)\(replica.exit.map { ", \($0)" } ?? "")): "
                + (lines.isEmpty ? "it wrote nothing" : "its last lines:\n" + lines.map { "  | " + $0 }.joined(separator: "\n"))
        }
        return text
    }

    /// A running replica of `service`.
    ///
    /// - Throws: ``TestingError`` when the project has no such service, or
    ///   none of its replicas runs.
    public func service(_ service: String) throws -> RunningContainer {
        guard (try? reconciler.store.service(service, project: project)) != nil else {
            let known = ((try? reconciler.store.services(project: project)) ?? []).map(\.spec.name).sorted()
            throw TestingError(.invalidSpec, "compose project \(project) has no service \(service); its services: \(known.joined(separator: ", "))")
        }
        guard let first = try replicas(service).first else {
            throw TestingError(.exited, "no replica of service \(service) of compose project \(project) runs")
        }
        return first
    }

    /// The host port that reaches `port` of `service`, through the
    /// service's load-balanced endpoint.
    public func mappedPort(_ service: String, _ port: UInt16) throws -> UInt16 {
        try self.service(service).mappedPort(port)
    }

    /// `127.0.0.1:PORT` for `port` of `service`.
    public func endpoint(_ service: String, _ port: UInt16) throws -> String {
        try self.service(service).endpoint(port)
    }
}

extension TestSession {
    /// Runs `body` with the services of `compose` running and ready, and
    /// takes the project down afterwards (its containers, networks and
    /// volumes), after `body` returns or throws, and on cancellation.
    ///
    /// - Throws: ``TestingError`` when the file cannot be read, a service
    ///   does not roll out, or a wait is not satisfied in time (naming the
    ///   service, with its replicas' last lines); the file's errors as the
    ///   compose reader words them.
    public func withCompose<T: Sendable>(_ compose: TestCompose, _ body: @Sendable (RunningCompose) async throws -> T) async throws -> T {
        let runtime = try await preparedRuntime()
        let name = compose.projectName ?? "testing-" + freshSuffix(8)
        var environment = ProcessInfo.processInfo.environment
        environment.merge(compose.environment) { $1 }
        // Relative to the working directory, which a message names.
        let file = URL(fileURLWithPath: compose.file).standardizedFileURL.path
        var loaded = try ComposeProject.load(path: file, environment: environment, projectName: name, profiles: compose.profiles)
        if !compose.keepsHostPorts {
            for index in loaded.services.indices {
                loaded.services[index].template.publishedPorts = loaded.services[index].template.publishedPorts.map {
                    PublishedPort(hostIP: $0.hostIP, hostPort: 0, containerPort: $0.containerPort, protocol: $0.protocol)
                }
            }
        }
        let project = loaded
        let known = Set(project.services.map(\.name))
        for service in compose.waits.keys.sorted() where !known.contains(service) {
            throw TestingError(.invalidSpec, "\(file) has no service \(service) to wait for; its services: \(known.sorted().joined(separator: ", "))")
        }
        let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: project.name))
        let services = project.services.map(\.name)
        let deadline = ContinuousClock.now + compose.startupTimeout
        do {
            let result = try await reconciler.withRunning { reconciler in
                try await reconciler.apply(project)
                let running = RunningCompose(project: project.name, reconciler: reconciler, runtime: runtime)
                for service in services {
                    let what = "service \(service) of compose project \(project.name)"
                    let record: ServiceRecord
                    do {
                        record = try await reconciler.waitForRollout(service, timeout: max(deadline - .now, .zero))
                    } catch let error as ReconcilerError {
                        throw TestingError(.timedOut, "\(what) did not roll out within \(compose.startupTimeout): \(error.message)"
                            + (await running.lastLines(of: service)))
                    }
                    if record.status.rollout == .failed {
                        throw TestingError(.exited, "\(what) did not roll out: \(record.status.message ?? "")" + (await running.lastLines(of: service)))
                    }
                }
                for service in services {
                    // The store's record follows the reconciler a moment later.
                    for _ in 0 ..< 100 where (try? running.service(service)) == nil { try await Task.sleep(for: .milliseconds(20)) }
                }
                for (service, strategy) in compose.waits.sorted(by: { $0.key < $1.key }) {
                    let replica = try running.service(service)
                    try await replica.awaitReady(strategy, timeout: max(deadline - .now, .milliseconds(1)), healthCheck: nil,
                                                 image: "service \(service) of compose project \(project.name)",
                                                 reportedTimeout: compose.startupTimeout)
                }
                return try await body(running)
            }
            try await Task { try await Reconciler.tearDown(project: name, runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20)) }.value
            return result
        } catch {
            try? await Task { try await Reconciler.tearDown(project: name, runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20)) }.value
            throw error
        }
    }
}
