import Foundation
import Runtime
import Tracing

/// Labels the reconciler puts on every replica.
public enum ReplicaLabel {
    /// The project.
    public static let project = "gantry.project"
    /// The service.
    public static let service = "gantry.service"
    /// The revision number.
    public static let revision = "gantry.revision"
    /// The replica slot, which keeps its crash-loop back-off across replacements.
    public static let lineage = "gantry.replica"
    /// The hash of the template it runs.
    public static let templateHash = "gantry.template-hash"
    /// On an init container: its place among the service's, from 1.
    public static let initContainer = "gantry.init-container"
    /// The container whose network namespace a replica shares.
    public static let networkOf = "gantry.network-of"
}

extension Reconciler {
    /// Creates and starts replicas, a few at once.
    func create(_ lineages: [(lineage: String, restart: Bool)], for spec: ServiceSpec, revision: Int, hash: String) async throws {
        guard !lineages.isEmpty else { return }
        let limit = max(1, options.startConcurrency)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for (lineage, restart) in lineages {
                if running == limit {
                    try await group.next()
                    running -= 1
                }
                group.addTask { try await self.createReplica(spec, revision: revision, hash: hash, lineage: lineage, restart: restart) }
                running += 1
            }
            try await group.waitForAll()
        }
    }

    /// The container spec of a new replica.
    func replicaSpec(_ spec: ServiceSpec, revision: Int, hash: String, lineage: String) -> ContainerSpec {
        var container = spec.template
        let prefix = spec.project == ServiceSpec.defaultProject ? spec.name : spec.project + "-" + spec.name
        container.name = spec.template.name ?? prefix + "-" + Self.randomSuffix(5)
        for (key, value) in spec.labels where container.labels[key] == nil { container.labels[key] = value }
        container.labels[ReplicaLabel.project] = spec.project
        container.labels[ReplicaLabel.service] = spec.name
        container.labels[ReplicaLabel.revision] = String(revision)
        container.labels[ReplicaLabel.lineage] = lineage
        container.labels[ReplicaLabel.templateHash] = hash
        if endpoint(for: spec) != nil {
            // The endpoint publishes the ports and answers to the name.
            container.publishedPorts = []
        } else if case .bridge = container.network, !container.networkAliases.contains(spec.name) {
            container.networkAliases.append(spec.name)
        }
        // On its other networks the replicas answer to the service's name themselves.
        for index in container.additionalNetworks.indices where !container.additionalNetworks[index].aliases.contains(spec.name) {
            container.additionalNetworks[index].aliases.append(spec.name)
        }
        if options.onShutdown == .leaveRunning { container.lifetime = .independent }
        return container
    }

    private func createReplica(_ spec: ServiceSpec, revision: Int, hash: String, lineage: String, restart: Bool) async throws {
        var containerSpec = replicaSpec(spec, revision: revision, hash: hash, lineage: lineage)
        if let target = spec.networkService {
            // The network of the other service's running replica.
            let running = state.withLock { state in
                state.services[target]?.replicas.filter { $0.value.exit == nil && !$0.value.terminating }.min { $0.value.startedAt < $1.value.startedAt }?.key
            }
            guard let running else {
                throw ReconcilerError(.invalidState, "service \(spec.name) shares the network of service \(target), which runs no replica yet")
            }
            containerSpec.network = .container(running)
            containerSpec.labels[ReplicaLabel.networkOf] = running
        }
        for (index, initial) in spec.initContainers.enumerated() {
            try await runInitContainer(initial, number: index + 1, of: spec, replica: containerSpec)
        }
        let container = try await runtime.createReplica(containerSpec)
        do {
            try await container.start()
        } catch {
            try? await container.remove(force: true)
            throw error
        }
        let probes = spec.probes
        let registered = state.withLock { state -> Bool in
            guard !state.stopping, state.services[spec.name]?.deleted == false else { return false }
            let ready = probes.startup == nil && probes.readiness == nil
            state.services[spec.name]?.replicas[container.id] = Replica(
                container: container, lineage: lineage, revision: revision, templateHash: hash, startedAt: clock.now(),
                startupPassed: probes.startup == nil, ready: ready, readySince: ready ? clock.now() : nil, probes: probes,
                joined: containerSpec.labels[ReplicaLabel.networkOf])
            state.services[spec.name]?.lineages[lineage]?.ranBefore = true
            return true
        }
        guard registered else {
            // Deleted or shutting down meanwhile.
            await removeReplica(container)
            return
        }
        watch(container, service: spec.name)
        emit(ServiceEvent(project: spec.project, service: spec.name, container: container.name, kind: .started,
                          message: "revision \(revision) started"))
        if restart {
            metrics.restarted(spec.name)
            let count = state.withLock { $0.services[spec.name]?.record.status.restarts ?? 0 } + 1
            emit(ServiceEvent(project: spec.project, service: spec.name, container: container.name, kind: .restarted(count: count),
                              message: "replaced a replica that ended"))
        }
        if !probes.all.isEmpty {
            let id = container.id
            jobsInput.yield { await self.probe(spec.name, id: id, container: container, probes: probes) }
        }
    }

    /// Runs one of a service's init containers for the replica `replica`
    /// to its end, on the replica's networks, and removes it.
    ///
    /// - Throws: `ReconcilerError` when it does not end with status 0, or
    ///   `CancellationError` (it is stopped) when the pass is cancelled.
    private func runInitContainer(_ initial: ContainerSpec, number: Int, of spec: ServiceSpec, replica: ContainerSpec) async throws {
        var container = initial
        container.name = (replica.name ?? spec.name) + "-init-\(number)"
        for key in [ReplicaLabel.project, ReplicaLabel.service, ReplicaLabel.revision, ReplicaLabel.lineage] {
            container.labels[key] = replica.labels[key]
        }
        container.labels[ReplicaLabel.initContainer] = String(number)
        if case .bridge = replica.network {
            container.network = replica.network
            container.additionalNetworks = replica.additionalNetworks.map { ContainerSpec.NetworkMembership($0.network) }
        } else if container.network == .none {
            container.network = replica.network
        }
        container.networkAliases = []
        container.publishedPorts = []
        container.lifetime = replica.lifetime
        let created = try await runtime.createReplica(container)
        let exit: ContainerExit
        do {
            try await created.start()
            exit = try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ContainerExit, any Error>) in
                    do {
                        try created.onExit { continuation.resume(returning: $0) }
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            } onCancel: {
                Task { _ = try? await created.stop(grace: .seconds(1)) }
            }
        } catch {
            try? await created.remove(force: true)
            throw error
        }
        try? await created.remove(force: true)
        try Task.checkCancellation()
        guard exit.code == 0 else {
            emit(ServiceEvent(project: spec.project, service: spec.name, container: container.name ?? "", kind: .failed,
                              message: "init container \(number) ended: \(exit)"))
            throw ReconcilerError(.invalidState, "service \(spec.name): init container \(number) (\(container.name ?? "")) ended: \(exit); the replica is not started")
        }
    }

    /// Learns of the replica's end from the runtime, on its supervision thread.
    func watch(_ container: any ReplicaContainer, service: String) {
        let id = container.id
        do {
            try container.onExit { [self] exit in replicaEnded(service, id: id, exit: exit) }
        } catch {
            logger.warning("cannot watch a replica", metadata: ["container": "\(container.name)", "error": "\(error)"])
        }
    }

    /// Records an end, works out the back-off, and queues the service.
    private func replicaEnded(_ name: String, id: String, exit: ContainerExit) {
        let now = clock.now()
        let event = state.withLock { state -> ServiceEvent? in
            guard var service = state.services[name], var replica = service.replicas[id], replica.exit == nil else { return nil }
            replica.exit = exit
            let spec = service.record.spec
            if !replica.terminating && !state.stopping {
                var lineage = service.lineages[replica.lineage] ?? Lineage(backoff: RestartBackoff(spec.crashLoop))
                let failed = exit.status != .exited(0) || replica.unhealthy
                let restart = switch spec.restartPolicy {
                case .always: true
                case .onFailure: failed
                case .never: false
                }
                if restart {
                    let delay = lineage.backoff.delayAfterExit(runTime: now - replica.startedAt)
                    lineage.notBefore = now + delay
                } else {
                    lineage.finished = exit
                }
                // The ended container stays, for its logs, until its lineage is refilled.
                if let previous = lineage.previous, previous.id != id {
                    jobsInput.yield { try? await previous.remove(force: true) }
                }
                lineage.previous = replica.container
                service.lineages[replica.lineage] = lineage
                service.replicas[id] = nil
            } else {
                service.replicas[id] = replica
            }
            state.services[name] = service
            guard !state.stopping else { return nil }
            let code = exit.status.shellStatus
            return ServiceEvent(project: spec.project, service: name, container: replica.container.name,
                                kind: .exited(code: code, reason: exit.reason), message: "\(exit)")
        }
        guard let event else { return }
        queue.add(name)
        emit(event)
    }

    /// Stops a replica the reconciler no longer wants, then forgets it.
    func terminate(_ name: String, _ id: String) async {
        guard let container = state.withLock({ $0.services[name]?.replicas[id]?.container }) else { return }
        jobsInput.yield { [self] in
            await removeReplica(container)
            state.withLock { state in _ = state.services[name]?.replicas.removeValue(forKey: id) }
            queue.add(name)
        }
    }

    // MARK: - Adoption

    /// Takes over the project's replicas that survived an earlier reconciler,
    /// and removes those of deleted services or that had ended.
    func adopt() async throws {
        let existing = try runtime.existingContainers().filter { $0.labels[ReplicaLabel.project] == options.project && $0.labels[ReplicaLabel.service] != nil }
        // An init container left by a reconciler that ended: its replica was never started.
        for record in existing where record.labels[ReplicaLabel.initContainer] != nil {
            if let container = try? runtime.replica(record.id) { try? await container.remove(force: true) }
        }
        let records = existing.filter { $0.labels[ReplicaLabel.initContainer] == nil }
        // The replicas each endpoint serves: they passed their probes under
        // the reconciler before, and keep serving until a probe fails, so
        // that adopting them empties no endpoint.
        var served: [String: Set<IPv4Address>] = [:]
        if runtime.supportsEndpoints {
            for record in (try? runtime.endpoints()) ?? [] { served[record.key] = Set(record.backends) }
        }
        var stale: [any ReplicaContainer] = []
        var adopted: [(any ReplicaContainer, String)] = []
        for record in records {
            let name = record.labels[ReplicaLabel.service]!
            guard let container = try? runtime.replica(record.id) else { continue }
            let running = record.status == .running || record.status == .paused
            let taken = running && state.withLock { state -> Bool in
                guard let service = state.services[name], !service.deleted else { return false }
                let lineage = record.labels[ReplicaLabel.lineage] ?? Self.randomSuffix(8)
                let revision = Int(record.labels[ReplicaLabel.revision] ?? "") ?? 0
                let hash = record.labels[ReplicaLabel.templateHash] ?? ""
                let probes = hash == service.templateHash ? service.record.spec.probes : ServiceProbes()
                let age = record.startedAt.map { Duration.seconds(max(0, Date().timeIntervalSince($0))) } ?? .zero
                let key = Self.endpointKey(project: options.project, service: name)
                let serving = record.address.map { served[key]?.contains($0) == true } ?? false
                let ready = (probes.startup == nil && probes.readiness == nil) || serving
                state.services[name]?.replicas[record.id] = Replica(
                    container: container, lineage: lineage, revision: revision, templateHash: hash, startedAt: clock.now() - age,
                    startupPassed: probes.startup == nil || serving, ready: ready, readySince: ready ? clock.now() - age : nil, probes: probes,
                    joined: record.labels[ReplicaLabel.networkOf])
                if state.services[name]?.lineages[lineage] == nil {
                    state.services[name]?.lineages[lineage] = Lineage(backoff: RestartBackoff(service.record.spec.crashLoop), ranBefore: true)
                }
                return true
            }
            if taken { adopted.append((container, name)) } else { stale.append(container) }
        }
        for (container, name) in adopted {
            watch(container, service: name)
            let probes = state.withLock { $0.services[name]?.replicas[container.id]?.probes } ?? ServiceProbes()
            if !probes.all.isEmpty {
                let id = container.id
                jobsInput.yield { await self.probe(name, id: id, container: container, probes: probes) }
            }
        }
        for container in stale { await removeReplica(container) }
        if !adopted.isEmpty {
            logger.info("adopted replicas", metadata: ["project": "\(options.project)", "count": "\(adopted.count)"])
        }
    }

    // MARK: - Probes

    /// Runs a replica's probes until it ends: startup first, then liveness
    /// and readiness, each on its own period.
    func probe(_ name: String, id: String, container: any ReplicaContainer, probes: ServiceProbes) async {
        let start = clock.now()
        var due: [ProbeKind: Duration] = [:]
        var passes: [ProbeKind: Int] = [:]
        var failures: [ProbeKind: Int] = [:]
        var startupPassed = probes.startup == nil
        for (kind, probe) in probes.all where kind == .startup || startupPassed { due[kind] = start + probe.initialDelay }
        while !Task.isCancelled {
            let active = probes.all.filter { startupPassed ? $0.0 != .startup : $0.0 == .startup }
            guard let (kind, probe) = active.min(by: { due[$0.0, default: .zero] < due[$1.0, default: .zero] }) else { return }
            let wait = due[kind, default: .zero] - clock.now()
            if wait > .zero {
                do { try await clock.sleepUntil(due[kind, default: .zero]) } catch { return }
            }
            guard state.withLock({ $0.services[name]?.replicas[id].map { $0.exit == nil && !$0.terminating && !$0.unhealthy } ?? false }) else { return }
            let began = DispatchTime.now().uptimeNanoseconds
            let outcome = await tracer.withSpan("probe") { span in
                span.attributes["gantry.service"] = name
                span.attributes["gantry.container"] = container.name
                span.attributes["gantry.probe"] = kind.rawValue
                let outcome = await container.check(probe)
                if !outcome.passed { span.setStatus(SpanStatus(code: .error, message: outcome.message)) }
                return outcome
            }
            metrics.probed(name, kind: kind, nanoseconds: Int64(DispatchTime.now().uptimeNanoseconds - began), passed: outcome.passed)
            due[kind] = clock.now() + probe.period
            if outcome.passed {
                passes[kind, default: 0] += 1
                failures[kind] = 0
            } else {
                failures[kind, default: 0] += 1
                passes[kind] = 0
                emit(ServiceEvent(project: options.project, service: name, container: container.name, kind: .probeFailed(kind),
                                  message: "\(kind) probe failed (\(failures[kind]!) in a row; \(probe.failureThreshold) count): \(outcome.message)"))
            }
            switch kind {
            case .startup where outcome.passed:
                startupPassed = true
                for (other, probe) in probes.all where other != .startup { due[other] = clock.now() + probe.initialDelay }
                setReadiness(name, id: id, container: container, startupPassed: true, ready: probes.readiness == nil ? true : nil)
            case .startup, .liveness:
                if failures[kind, default: 0] >= probe.failureThreshold {
                    await restartUnhealthy(name, id: id, container: container, kind: kind, message: outcome.message)
                    return
                }
            case .readiness:
                if outcome.passed, passes[kind, default: 0] >= probe.successThreshold {
                    setReadiness(name, id: id, container: container, startupPassed: nil, ready: true)
                } else if !outcome.passed, failures[kind, default: 0] >= probe.failureThreshold {
                    setReadiness(name, id: id, container: container, startupPassed: nil, ready: false)
                }
            }
        }
    }

    private func setReadiness(_ name: String, id: String, container: any ReplicaContainer, startupPassed: Bool?, ready: Bool?) {
        let now = clock.now()
        let changed = state.withLock { state -> Bool in
            guard var replica = state.services[name]?.replicas[id], replica.exit == nil else { return false }
            if let startupPassed { replica.startupPassed = startupPassed }
            var changed = false
            if let ready, ready != replica.ready {
                replica.ready = ready
                replica.readySince = ready ? now : nil
                changed = true
            }
            state.services[name]?.replicas[id] = replica
            return changed
        }
        guard changed, let ready else { return }
        emit(ServiceEvent(project: options.project, service: name, container: container.name, kind: .readinessChanged(ready: ready),
                          message: ready ? "ready" : "not ready"))
        queue.add(name)
    }

    private func restartUnhealthy(_ name: String, id: String, container: any ReplicaContainer, kind: ProbeKind, message: String) async {
        let marked = state.withLock { state -> Bool in
            guard state.services[name]?.replicas[id]?.exit == nil else { return false }
            state.services[name]?.replicas[id]?.unhealthy = true
            state.services[name]?.replicas[id]?.ready = false
            return true
        }
        guard marked else { return }
        emit(ServiceEvent(project: options.project, service: name, container: container.name, kind: .unhealthy(kind),
                          message: "\(kind) probe failed; restarting: \(message)"))
        queue.add(name)
        do {
            _ = try await container.stop(grace: nil)
        } catch {
            logger.warning("cannot stop an unhealthy replica", metadata: ["container": "\(container.name)", "error": "\(error)"])
        }
    }
}
