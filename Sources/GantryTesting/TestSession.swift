import Build
import Foundation
public import Gantry
import GantryCore
public import Logging
import Synchronization

/// What a test run's containers live in: one state root and its runtime,
/// and the networks and volumes the run made.
///
/// Most tests use ``shared`` through ``withTestContainer(_:_:)`` and the
/// container trait; a suite that wants a state root of its own makes one:
///
/// ```swift
/// let session = try TestSession(root: StateRoot("/tmp/my-tests"))
/// try await session.withContainer(TestContainer(image: "busybox:test", command: ["sleep", "60"])) { box in
///     _ = try await box.exec(["true"])
/// }
/// ```
///
/// Nothing outlives the process that made it unless asked: containers are
/// bound to it (the kernel kills them the moment it dies, even by
/// `SIGKILL`, and their mounts go with their mount namespaces), and the
/// next session to open the state root removes what such a process left:
/// its containers' records and cgroups, its networks and its volumes.
/// Only containers started with ``TestContainer/reusable(_:)`` stay.
public final class TestSession: Sendable {
    /// The Gantry over the session's state root.
    public let gantry: Gantry
    let logger: Logger

    /// The label that marks a network or volume with the process that
    /// made it (`PID-START`), so that a later session removes it once that
    /// process has ended.
    public static let ownerLabel = "dev.gantry.testing.owner"
    /// The label of a reusable container, holding its configuration's hash.
    public static let reuseLabel = "dev.gantry.testing.reuse"

    private static let sharedSession = Mutex<TestSession?>(nil)

    /// The logger a session uses unless given one: `gantry.testing`, at
    /// the warning level.
    public static var defaultLogger: Logger {
        var logger = Logger(label: "gantry.testing")
        logger.logLevel = .warning
        return logger
    }

    /// The session most tests share, opened on first use: over the state
    /// root in `GANTRY_TESTING_ROOT`, or Gantry's default state root
    /// (`/var/lib/gantry` for root, `$XDG_DATA_HOME/gantry` otherwise),
    /// where images pulled or built before are found.
    public static var shared: TestSession {
        get throws {
            try sharedSession.withLock { session in
                if let session { return session }
                let environment = ProcessInfo.processInfo.environment["GANTRY_TESTING_ROOT"]
                let opened = try TestSession(root: environment.map(StateRoot.init) ?? .default)
                session = opened
                return opened
            }
        }
    }

    #if Registry
    /// Opens a session over `root`. What sessions of processes that have
    /// ended left there is removed before its first container.
    ///
    /// - Parameters:
    ///   - root: The state root, created when missing.
    ///   - registry: The client that pulls images the state root lacks; by
    ///     default one that gives up on a registry it cannot connect to
    ///     within about four seconds, so that a test fails fast.
    ///   - cgroupParent: The cgroup the containers are created under.
    ///   - runWithoutUnenforceableLimits: For an ordinary user without a
    ///     delegated cgroup: run containers that ask for limits without
    ///     them instead of failing.
    ///   - logger: Where the session logs; by default warnings and errors
    ///     only, so that a test's output is not filled with routine notes.
    public init(root: StateRoot = .default, registry: RegistryClient? = nil, cgroupParent: String = "gantry",
                runWithoutUnenforceableLimits: Bool = false, logger: Logger = TestSession.defaultLogger) throws {
        // The HTTP client keeps trying to connect until its connect
        // timeout, even when refused: both bounds are short.
        let client = try registry ?? RegistryClient(options: RegistryOptions(retry: RetryPolicy(attempts: 2, connectionWindow: .seconds(3)),
                                                                             connectTimeout: .seconds(2)))
        gantry = try Gantry(root: root, registry: client, cgroupParent: cgroupParent,
                            runWithoutUnenforceableLimits: runWithoutUnenforceableLimits, logger: logger)
        self.logger = logger
    }
    #else
    /// Opens a session over `root`. What sessions of processes that have
    /// ended left there is removed before its first container.
    ///
    /// - Parameters:
    ///   - root: The state root, created when missing.
    ///   - cgroupParent: The cgroup the containers are created under.
    ///   - runWithoutUnenforceableLimits: For an ordinary user without a
    ///     delegated cgroup: run containers that ask for limits without
    ///     them instead of failing.
    ///   - logger: Where the session logs; by default warnings and errors
    ///     only, so that a test's output is not filled with routine notes.
    public init(root: StateRoot = .default, cgroupParent: String = "gantry", runWithoutUnenforceableLimits: Bool = false,
                logger: Logger = TestSession.defaultLogger) throws {
        gantry = try Gantry(root: root, cgroupParent: cgroupParent, runWithoutUnenforceableLimits: runWithoutUnenforceableLimits, logger: logger)
        self.logger = logger
    }
    #endif

    /// The session's container runtime.
    public var runtime: ContainerRuntime {
        get throws { try gantry.containers }
    }

    private let leftoversRemoved = Mutex(false)

    /// The runtime, once what sessions of processes that have ended left
    /// is gone: opening the runtime removes their containers; their
    /// networks and volumes go the first time a session needs the runtime.
    func preparedRuntime() async throws -> ContainerRuntime {
        let runtime = try runtime
        guard leftoversRemoved.withLock({ done in defer { done = true }; return !done }) else { return runtime }
        try await removeLeftovers(runtime)
        return runtime
    }

    /// Removes what test processes that have ended left in the state
    /// root: their containers' records, cgroups and files, their networks
    /// and their volumes. A session does this once by itself, before its
    /// first container; call it again to clean up after a process that
    /// ended since.
    public func removeLeftovers() async throws {
        let runtime = try runtime
        _ = await offload { runtime.recoverLeftovers() }
        try await removeLeftovers(runtime)
    }

    /// Removes the networks and volumes of sessions whose processes have ended.
    private func removeLeftovers(_ runtime: ContainerRuntime) async throws {
        for network in try runtime.networks.list() where Self.ownerHasEnded(network.labels) {
            do {
                try await runtime.networks.remove(network.name)
            } catch {
                // A container of a running process may still be on it.
                logger.warning("cannot remove network \(network.name) left by an ended test process: \(error)")
            }
        }
        for volume in try runtime.volumes.list() where Self.ownerHasEnded(volume.labels) {
            do {
                try await runtime.volumes.remove(volume.name)
            } catch {
                logger.warning("cannot remove volume \(volume.name) left by an ended test process: \(error)")
            }
        }
    }

    static func ownerHasEnded(_ labels: [String: String]) -> Bool {
        guard let owner = labels[ownerLabel] else { return false }
        return ProcessMark.hasEnded(owner) ?? false
    }

    /// Labels for what this process makes.
    static var ownerLabels: [String: String] { [ownerLabel: ProcessMark.current] }

    // MARK: - Images

    /// Builds an image from a Dockerfile and returns its name; steps the
    /// build cache knows are not run again.
    ///
    /// - Parameters:
    ///   - context: The build context's directory.
    ///   - dockerfile: The Dockerfile, relative to the context (or
    ///     absolute); by default the context's `Dockerfile`.
    ///   - arguments: Build arguments (`ARG`).
    ///   - tag: The image's name; by default one made from the context,
    ///     the Dockerfile and the arguments.
    /// - Throws: ``TestingError`` with code `image`, the build's error
    ///   (naming the Dockerfile's line) underneath.
    @discardableResult
    public func buildImage(context: String, dockerfile: String? = nil, arguments: [String: String] = [:],
                           tag: String? = nil) async throws -> String {
        let runtime = try await preparedRuntime()
        let name = tag ?? "gantry-testing/built:" + fingerprint([context, dockerfile ?? "", arguments.sorted { $0.key < $1.key }.description])
        let path = dockerfile.map { $0.hasPrefix("/") ? $0 : context + "/" + $0 }
        do {
            try await ImageBuilder(runtime: runtime).build(context: context, options: BuildOptions(dockerfile: path, arguments: arguments, tags: [name]))
        } catch {
            throw TestingError(.image, "cannot build the image of \(context)", underlying: error)
        }
        return name
    }

    // MARK: - Containers

    /// Starts `container` and waits until it is ready, as its wait
    /// strategy says; the caller removes it (``RunningContainer/remove()``).
    ///
    /// - Throws: ``TestingError`` when its image cannot be found, pulled
    ///   or built, when it ends before it is ready, or when the start-up
    ///   deadline passes; the message then shows its last lines of output.
    ///   What the runtime refuses (a program or user the image lacks, a
    ///   name in use) is its `RuntimeError`, as it is. What was created is
    ///   removed first.
    public func start(_ container: TestContainer) async throws -> RunningContainer {
        try await ContainerStarter(session: self, container: container).start()
    }

    /// The container started under `key` for the whole run: started and
    /// waited for by the first call, the same for every later call (from
    /// any test, at once or after), and never removed by a test — it ends
    /// with the process, as every container of a session does, and the
    /// next session removes what it left.
    ///
    /// A start that failed is tried again by the next call.
    public func containerForTheRun(_ key: String, _ container: TestContainer) async throws -> RunningContainer {
        let task = runContainers.withLock { tasks in
            if let task = tasks[key] { return task }
            let task = Task { try await start(container) }
            tasks[key] = task
            return task
        }
        do {
            return try await task.value
        } catch {
            runContainers.withLock { tasks in if tasks[key] == task { tasks[key] = nil } }
            throw error
        }
    }

    private let runContainers = Mutex<[String: Task<RunningContainer, any Error>]>([:])

    /// Runs `body` with `container` started and ready, and removes it
    /// afterwards: after `body` returns or throws, and on cancellation.
    public func withContainer<T>(_ container: TestContainer, _ body: (RunningContainer) async throws -> T) async throws -> T {
        let running = try await start(container)
        let result: T
        do {
            result = try await body(running)
        } catch {
            // In a task of its own, which a cancellation of this one does not reach.
            try? await Task { try await running.remove() }.value
            throw error
        }
        try await Task { try await running.remove() }.value
        return result
    }

    /// Runs `body` with a new bridge network, on which containers find
    /// each other by name and alias, and removes it afterwards.
    ///
    /// - Parameters:
    ///   - name: The network's name; by default a fresh one.
    ///   - body: Works with the network.
    public func withNetwork<T>(_ name: String? = nil, _ body: (TestNetwork) async throws -> T) async throws -> T {
        let network = try await makeNetwork(name)
        let result: T
        do {
            result = try await body(network)
        } catch {
            try? await Task { try await removeNetwork(network) }.value
            throw error
        }
        try await Task { try await removeNetwork(network) }.value
        return result
    }

    /// Makes a bridge network owned by this process; ``removeNetwork(_:)``
    /// removes it, and so does the next session once this process has ended.
    public func makeNetwork(_ name: String? = nil) async throws -> TestNetwork {
        let chosen = name ?? "testing-" + freshSuffix(8)
        let record = try await preparedRuntime().networks.create(chosen, labels: Self.ownerLabels)
        return TestNetwork(name: record.name, subnet: record.subnet)
    }

    /// Removes a network made by ``makeNetwork(_:)``.
    public func removeNetwork(_ network: TestNetwork) async throws {
        try await runtime.networks.remove(network.name)
    }

    /// Removes every container kept by ``TestContainer/reusable(_:)`` in this
    /// state root, with the volumes made for them, and returns their names.
    @discardableResult
    public func removeReusedContainers() async throws -> [String] {
        let runtime = try await preparedRuntime()
        var removed: [String] = []
        for record in try runtime.list() where record.spec.labels[Self.reuseLabel] != nil {
            try await runtime.container(record.id).remove(force: true)
            removed.append(record.name)
        }
        for volume in try runtime.volumes.list() where volume.labels[Self.reuseLabel] != nil {
            try await runtime.volumes.remove(volume.name)
        }
        return removed
    }
}

/// A bridge network made for tests (see ``TestSession/withNetwork(_:_:)``).
public struct TestNetwork: Hashable, Sendable {
    /// The network's name in the state root.
    public let name: String
    /// Its addresses.
    public let subnet: IPv4Subnet
}
