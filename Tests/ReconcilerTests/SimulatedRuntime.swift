import Foundation
import Runtime
import Synchronization
@testable import Reconciler

/// A runtime whose containers are records in memory: they start, run until
/// a test ends them, and answer probes as the test scripts, so that the
/// reconciler's decisions can be tested without root and under a
/// `ManualClock`.
final class SimulatedRuntime: ReplicaRuntime {
    let stateRoot: StateRoot

    /// How a container's first command behaves.
    enum Behaviour: Sendable {
        /// Runs until ended or stopped.
        case runs
        /// Ends at once with this status after starting.
        case exits(ProcessExit)
        /// Cannot be started.
        case failsToStart
    }

    private struct State {
        var containers: [String: SimulatedContainer] = [:]
        var created = 0
        var behaviours: [String: Behaviour] = [:]
    }

    private let state = Mutex(State())
    // What the containers share with the runtime, apart from it, so that
    // they need no reference back to it.
    private let shared = SimulatedHost()

    init(root: String) {
        stateRoot = StateRoot(root)
    }

    /// Makes containers whose command starts with `command` behave so.
    func behave(_ command: String, _ behaviour: Behaviour) {
        state.withLock { $0.behaviours[command] = behaviour }
    }

    /// Makes exec probes running `command` pass or fail.
    func probe(_ command: String, passes: Bool) {
        shared.state.withLock { $0.probeResults[command] = passes }
    }

    /// Every container made so far, removed or not.
    var createdCount: Int { state.withLock { $0.created } }
    /// The most containers that ran at once.
    var peakRunning: Int { shared.state.withLock { $0.peakRunning } }

    /// The containers that run now, with the given label value.
    func running(_ value: String, label: String = ReplicaLabel.service) -> [SimulatedContainer] {
        state.withLock { state in
            state.containers.values.filter { $0.spec.labels[label] == value && $0.currentStatus == .running }.sorted { $0.name < $1.name }
        }
    }

    func createReplica(_ spec: ContainerSpec) async throws -> any ReplicaContainer {
        try state.withLock { state in
            let id = String(format: "%064x", state.created + 1)
            let name = spec.name ?? id
            guard !state.containers.values.contains(where: { $0.name == name && $0.currentStatus != .removed }) else {
                throw RuntimeError(.invalidSpec, "a container named \(name) exists")
            }
            let behaviour = state.behaviours[spec.command?.first ?? ""] ?? .runs
            let container = SimulatedContainer(id: id, spec: spec, behaviour: behaviour, host: shared)
            state.containers[id] = container
            state.created += 1
            return container
        }
    }

    func existingContainers() throws -> [ExistingContainer] {
        state.withLock { state in
            state.containers.values.filter { $0.currentStatus != .removed }
                .map { ExistingContainer(id: $0.id, labels: $0.spec.labels, status: $0.currentStatus, startedAt: nil) }
        }
    }

    func replica(_ id: String) throws -> any ReplicaContainer {
        guard let container = state.withLock({ $0.containers[id] }), container.currentStatus != .removed else {
            throw RuntimeError(.notFound, "no container \(id)")
        }
        return container
    }

}

/// The counters and scripted probe results a simulated runtime's containers share.
private final class SimulatedHost: Sendable {
    struct State {
        var running = 0
        var peakRunning = 0
        var probeResults: [String: Bool] = [:]
    }

    let state = Mutex(State())

    func counted(started: Bool) {
        state.withLock { state in
            state.running += started ? 1 : -1
            state.peakRunning = max(state.peakRunning, state.running)
        }
    }

    func probePasses(_ command: String) -> Bool {
        state.withLock { $0.probeResults[command] ?? true }
    }
}

/// A container of a ``SimulatedRuntime``.
final class SimulatedContainer: ReplicaContainer {
    let id: String
    let spec: ContainerSpec
    var name: String { spec.name ?? id }
    private let behaviour: SimulatedRuntime.Behaviour
    private let host: SimulatedHost

    private struct State {
        var status = ContainerStatus.created
        var exit: ContainerExit?
        var handlers: [@Sendable (ContainerExit) -> Void] = []
    }

    private let state = Mutex(State())

    fileprivate init(id: String, spec: ContainerSpec, behaviour: SimulatedRuntime.Behaviour, host: SimulatedHost) {
        self.id = id
        self.spec = spec
        self.behaviour = behaviour
        self.host = host
    }

    var currentStatus: ContainerStatus { state.withLock { $0.status } }
    var status: ContainerStatus { get throws { currentStatus } }

    func start() async throws {
        if case .failsToStart = behaviour { throw RuntimeError(.launch, "container \(name) cannot start (simulated)") }
        try state.withLock { state in
            guard state.status == .created else { throw RuntimeError(.invalidState, "container \(name) is \(state.status)") }
            state.status = .running
        }
        host.counted(started: true)
        if case .exits(let status) = behaviour { end(status) }
    }

    /// Ends the container's process as if it exited with `status`.
    func end(_ status: ProcessExit, reason: ExitReason = .exited) {
        let (handlers, exit) = state.withLock { state -> ([@Sendable (ContainerExit) -> Void], ContainerExit?) in
            guard state.status == .running else { return ([], nil) }
            let exit = ContainerExit(status: status, reason: reason)
            state.status = .stopped
            state.exit = exit
            defer { state.handlers.removeAll() }
            return (state.handlers, exit)
        }
        guard let exit else { return }
        host.counted(started: false)
        handlers.forEach { $0(exit) }
    }

    func stop(grace: Duration?) async throws -> ContainerExit? {
        guard currentStatus == .running else { return nil }
        end(.signaled(.terminate), reason: .stopped)
        return state.withLock { $0.exit }
    }

    func remove(force: Bool) async throws {
        if currentStatus == .running {
            guard force else { throw RuntimeError(.invalidState, "container \(name) runs") }
            end(.signaled(.kill))
        }
        state.withLock { $0.status = .removed }
    }

    func onExit(_ handler: @escaping @Sendable (ContainerExit) -> Void) throws {
        let exit = state.withLock { state -> ContainerExit? in
            if state.exit == nil { state.handlers.append(handler) }
            return state.exit
        }
        if let exit { handler(exit) }
    }

    func check(_ probe: Probe) async -> ProbeResult {
        guard case .exec(let command) = probe.action else { return ProbeResult(passed: false, message: "only exec probes are simulated") }
        let passes = host.probePasses(command.first ?? "")
        return ProbeResult(passed: passes, message: passes ? "" : "\(command.joined(separator: " ")) failed (simulated)")
    }
}
