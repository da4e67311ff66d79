public import Foundation
public import Runtime

/// A container as the reconciler drives it. `Container` is one; a
/// simulated runtime's containers let the reconciler's decisions be tested
/// without root, and under a `ManualClock`.
public protocol ReplicaContainer: Sendable {
    /// The container's ID.
    var id: String { get }
    /// The container's name.
    var name: String { get }
    /// Where it is in its life.
    var status: ContainerStatus { get throws }
    /// Starts the container's process.
    func start() async throws
    /// Sends the stop signal, waits up to `grace` (the spec's grace period
    /// when `nil`), then kills; returns how it ended, or `nil` when it was
    /// not running.
    func stop(grace: Duration?) async throws -> ContainerExit?
    /// Removes the container, killing it first with `force`.
    func remove(force: Bool) async throws
    /// Calls `handler` once, when the container ends (at once if it has).
    /// The handler must not block.
    func onExit(_ handler: @escaping @Sendable (ContainerExit) -> Void) throws
    /// Runs `probe` against the container once.
    func check(_ probe: Probe) async -> ProbeResult
}

/// What a probe found: whether it passed, and why not.
public struct ProbeResult: Hashable, Sendable {
    /// Whether the probe passed.
    public var passed: Bool
    /// Why it failed (empty when it passed).
    public var message: String

    /// A result: passed, or failed for `message`.
    public init(passed: Bool, message: String = "") {
        self.passed = passed
        self.message = message
    }
}

/// A container that exists in a runtime, as the reconciler adopts it.
public struct ExistingContainer: Sendable {
    /// Its ID.
    public var id: String
    /// Its labels (the reconciler's, ``ReplicaLabel``, among them).
    public var labels: [String: String]
    /// Where it is in its life.
    public var status: ContainerStatus
    /// When its process started, if it has.
    public var startedAt: Date?
    /// Its address on its (first) bridge network, if it has one.
    public var address: IPv4Address?

    /// Describes an existing container.
    public init(id: String, labels: [String: String], status: ContainerStatus, startedAt: Date?, address: IPv4Address? = nil) {
        self.id = id
        self.labels = labels
        self.status = status
        self.startedAt = startedAt
        self.address = address
    }
}

/// What the reconciler needs of a runtime: `ContainerRuntime` is one.
public protocol ReplicaRuntime: Sendable {
    /// The state root the reconciler keeps its store and locks in.
    var stateRoot: StateRoot { get }
    /// Creates a container (not started) from `spec`.
    func createReplica(_ spec: ContainerSpec) async throws -> any ReplicaContainer
    /// Every container the runtime has.
    func existingContainers() throws -> [ExistingContainer]
    /// The container with this ID.
    func replica(_ id: String) throws -> any ReplicaContainer
    /// Whether the runtime has load-balanced endpoints; a runtime without
    /// them has services reached replica by replica.
    var supportsEndpoints: Bool { get }
    /// Installs or updates the endpoint `key` over the containers `backends`.
    @discardableResult
    func setEndpoint(_ key: String, _ endpoint: ServiceEndpoint, backends: [String]) async throws -> ServiceEndpointRecord
    /// Removes the endpoint `key`, if there is one.
    func removeEndpoint(_ key: String) async throws
    /// Every endpoint the runtime has.
    func endpoints() throws -> [ServiceEndpointRecord]
}

extension ReplicaRuntime {
    /// None, by default.
    public var supportsEndpoints: Bool { false }

    /// Refused, by default.
    public func setEndpoint(_ key: String, _ endpoint: ServiceEndpoint, backends: [String]) async throws -> ServiceEndpointRecord {
        throw ReconcilerError(.invalidSpec, "this runtime has no load-balanced endpoints")
    }

    /// Nothing to remove, by default.
    public func removeEndpoint(_ key: String) async throws {}

    /// None, by default.
    public func endpoints() throws -> [ServiceEndpointRecord] { [] }
}

extension ContainerRuntime: ReplicaRuntime {
    public var stateRoot: StateRoot { images.root }

    public func createReplica(_ spec: ContainerSpec) async throws -> any ReplicaContainer {
        try await create(spec)
    }

    public func existingContainers() throws -> [ExistingContainer] {
        try list().map { ExistingContainer(id: $0.id, labels: $0.spec.labels, status: $0.status, startedAt: $0.startedAt, address: $0.network?.address) }
    }

    public func replica(_ id: String) throws -> any ReplicaContainer { try container(id) }
}

extension Container: ReplicaContainer {
    public func check(_ probe: Probe) async -> ProbeResult {
        await Prober.check(probe, container: self)
    }
}
