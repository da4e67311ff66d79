import Foundation
import Runtime

extension Reconciler {
    /// What one reconcile decided, taken under the lock and carried out after it.
    private struct Plan {
        var spec: ServiceSpec
        var revision: Int
        var hash: String
        var create: [(lineage: String, restart: Bool)] = []
        var remove: [String] = []
        var discard: [any ReplicaContainer] = []
        var events: [ServiceEvent] = []
        var retryAfter: Duration?
        var rollBack: (from: Int, reason: String)?
        var pruneRevisions = false
        var status = ServiceStatus()
        var dependents: [String] = []
    }

    /// Brings one service towards its spec: level-triggered, from what the
    /// reconciler sees now, whatever event queued it.
    func reconcile(_ name: String) async throws {
        let now = clock.now()
        guard let decision = state.withLock({ state -> Plan?? in
            guard !state.stopping, var service = state.services[name] else { return .some(nil) }
            if service.deleted { return nil }
            let plan = decide(&service, services: state.services, now: now)
            state.services[name] = service
            return plan
        }) else {
            return try await tearDown(name)
        }
        guard var plan = decision else { return }
        // Replicas in the network of a replica that is gone lost their
        // network with it: they go, and are replaced in its successor's.
        if let target = plan.spec.networkService {
            let orphaned = state.withLock { state -> [String] in
                let alive = Set(state.services[target]?.replicas.filter { $0.value.exit == nil && !$0.value.terminating }.map(\.key) ?? [])
                return state.services[name]?.replicas.filter { entry in
                    entry.value.exit == nil && !entry.value.terminating && entry.value.joined.map { !alive.contains($0) } == true
                }.map(\.key) ?? []
            }
            for id in orphaned { await terminate(name, id) }
        }
        plan.events.forEach(emit)
        plan.events.removeAll()
        // The endpoint before anything is stopped; a failure to change it
        // does not hold up healing, and is retried.
        var endpointFailure: (any Error)?
        do {
            try await updateEndpoint(name)
        } catch {
            endpointFailure = error
        }
        // The status says what is installed now (decided before it was).
        let installed = state.withLock { $0.services[name]?.endpoint }
        plan.status.virtualAddress = installed?.virtualAddress
        plan.status.publishedPorts = installed?.ports
        // A named replica's ended container goes before its successor takes the name.
        if plan.spec.template.name != nil {
            for container in plan.discard { try? await container.remove(force: true) }
            plan.discard.removeAll()
        }
        // Replicas first: healing is what must be fast.
        do {
            try await create(plan.create, for: plan.spec, revision: plan.revision, hash: plan.hash)
        } catch {
            // The status still says what runs: a replica that ended and
            // could not be replaced no longer counts.
            plan.create.removeAll()
            try record(&plan, of: name)
            throw error
        }
        for id in plan.remove { await terminate(name, id) }
        for container in plan.discard { try? await container.remove(force: true) }
        if let rollBack = plan.rollBack {
            let avoid = state.withLock { $0.services[name]?.failedHashes ?? [] }
            let (record, from, to) = try store.rollBack(name, project: options.project, avoiding: avoid)
            let note = "revision \(from) \(rollBack.reason); rolled back to the template of the revision before (now revision \(to))"
            plan.events.append(ServiceEvent(project: options.project, service: name, kind: .rolledBack(from: from, to: to), message: note))
            state.withLock { state in
                state.services[name]?.record.spec = record.spec
                state.services[name]?.record.generation = record.generation
                state.services[name]?.record.revision = record.revision
                state.services[name]?.templateHash = record.spec.revisionTemplate.hash
                state.services[name]?.rollbackNote = note
            }
            plan.status.rollout = .rolledBack
            plan.status.message = note
            queue.add(name)
        }
        if plan.pruneRevisions {
            try store.pruneRevisions(name, project: options.project, keeping: plan.spec.update.revisionHistoryLimit, current: plan.revision)
        }
        plan.events.forEach(emit)
        try record(&plan, of: name)
        if let delay = plan.retryAfter { queue.add(name, after: delay) }
        // What was started or stopped is seen (and the status updated) in another pass.
        if !plan.create.isEmpty || !plan.discard.isEmpty { queue.add(name) }
        plan.dependents.forEach(queue.add)
        if let endpointFailure { throw endpointFailure }
    }

    /// Records a pass's status (in memory, the store and the metrics).
    private func record(_ plan: inout Plan, of name: String) throws {
        let recorded = state.withLock { state -> Bool in
            guard var service = state.services[name], !service.deleted else { return false }
            // After a rollback, the restored revision's rollout says so until the next change.
            if let note = service.rollbackNote, plan.status.message == nil {
                plan.status.message = note
                if plan.status.rollout == .progressing { plan.status.rollout = .rolledBack }
            }
            plan.status.restarts = service.record.status.restarts + plan.create.filter(\.restart).count
            guard service.record.status != plan.status else { return false }
            service.record.status = plan.status
            state.services[name] = service
            return true
        }
        if recorded { try store.setStatus(plan.status, project: options.project, name: name) }
        metrics.replicas(name, desired: plan.spec.replicas, ready: plan.status.readyReplicas, available: plan.status.availableReplicas)
    }

    /// Decides what to do, under the lock, from the service's replicas and lineages.
    private func decide(_ service: inout ServiceState, services: [String: ServiceState], now: Duration) -> Plan {
        let spec = service.record.spec
        let revision = service.record.revision
        let hash = service.templateHash
        var plan = Plan(spec: spec, revision: revision, hash: hash)
        let name = spec.name
        func event(_ kind: ServiceEvent.Kind, _ message: String, container: String? = nil) {
            plan.events.append(ServiceEvent(project: spec.project, service: name, container: container, kind: kind, message: message))
        }
        func retry(after delay: Duration) {
            plan.retryAfter = min(plan.retryAfter ?? delay, delay)
        }
        let minReady = spec.update.minReady
        func isAvailable(_ replica: Replica) -> Bool {
            guard replica.ready, let since = replica.readySince else { return false }
            if now - since >= minReady { return true }
            retry(after: minReady - (now - since))
            return false
        }

        if service.lastReplicas != spec.replicas {
            event(.scaled(from: service.lastReplicas, to: spec.replicas), "replicas \(service.lastReplicas) → \(spec.replicas)")
            service.lastReplicas = spec.replicas
        }

        let alive = service.replicas.filter { $0.value.exit == nil && !$0.value.terminating }
        // Replicas of the current template, whatever revision number they
        // were made under (a rollback restores an earlier template).
        let newAlive = alive.filter { $0.value.templateHash == hash }
        let oldAlive = alive.filter { $0.value.templateHash != hash }
        let terminating = service.replicas.filter { $0.value.exit == nil && $0.value.terminating }

        // Services this one depends on must be there first.
        if alive.isEmpty, let unmet = unmetDependency(spec, services: services) {
            if !service.announcedWaiting {
                event(.waiting, unmet)
                service.announcedWaiting = true
            }
            plan.status = status(service, spec: spec, now: now, message: unmet)
            plan.status.rollout = .progressing
            return plan
        }
        service.announcedWaiting = false

        // Lineages that ended for good count as done.
        let finished = service.lineages.values.filter { $0.finished != nil }
        let target = max(0, spec.replicas - finished.count)
        var toCreate = 0
        var remove: [String] = []

        if oldAlive.isEmpty {
            toCreate = max(0, target - newAlive.count)
            if newAlive.count > target {
                remove = Self.removalOrder(newAlive, now: now).prefix(newAlive.count - target).map(\.key)
            }
        } else {
            var (surge, unavailable) = spec.update.limits(replicas: spec.replicas)
            // Fixed host ports (without an endpoint) and a container name
            // cannot be held by two replicas: replace in place.
            let fixedPorts = (spec.template.publishesFixedHostPorts && endpoint(for: spec) == nil) || spec.template.name != nil
            if fixedPorts {
                surge = 0
                unavailable = max(1, unavailable)
            }
            let total = alive.count + (fixedPorts ? terminating.count : 0)
            toCreate = max(0, min(target + surge - total, target - newAlive.count))
            let minAvailable = spec.replicas - unavailable
            let newUnavailable = newAlive.values.filter { !isAvailable($0) }.count + toCreate
            var maxScaledDown = alive.count - minAvailable - newUnavailable
            if maxScaledDown > 0 {
                // Old replicas that serve nothing go first.
                let unhealthyOld = Self.removalOrder(oldAlive.filter { !isAvailable($0.value) }, now: now)
                let cleaned = unhealthyOld.prefix(maxScaledDown).map(\.key)
                remove += cleaned
                maxScaledDown -= cleaned.count
                let availableNow = alive.values.filter { isAvailable($0) }.count
                let canStop = min(maxScaledDown, availableNow - minAvailable)
                if canStop > 0 {
                    let healthyOld = Self.removalOrder(oldAlive.filter { isAvailable($0.value) }, now: now)
                    remove += healthyOld.prefix(canStop).map(\.key)
                }
            }
            // Too many new ones (after a scale-down during the rollout).
            if newAlive.count > target {
                remove += Self.removalOrder(newAlive, now: now).prefix(newAlive.count - target).map(\.key)
            }
        }

        // Lineages to fill, the ones free longest first.
        if toCreate > 0 {
            let occupied = Set(newAlive.values.map(\.lineage))
            var candidates = service.lineages.filter { $0.value.finished == nil && !occupied.contains($0.key) }
                .sorted { ($0.value.notBefore, $0.key) < ($1.value.notBefore, $1.key) }
            for _ in 0 ..< toCreate {
                if !candidates.isEmpty {
                    let (id, lineage) = candidates.removeFirst()
                    if lineage.notBefore > now {
                        let delay = lineage.notBefore - now
                        retry(after: delay)
                        if service.lineages[id]?.announcedDelay != lineage.notBefore {
                            service.lineages[id]?.announcedDelay = lineage.notBefore
                            event(.backingOff(delay: delay), "back-off \(delay) before restarting a replica that keeps ending")
                        }
                        continue
                    }
                    plan.create.append((id, lineage.ranBefore))
                } else {
                    let id = Self.randomSuffix(8)
                    service.lineages[id] = Lineage(backoff: RestartBackoff(spec.crashLoop))
                    plan.create.append((id, false))
                }
            }
        }

        // Stopped containers whose lineage gets a new replica now, and
        // lineages beyond the desired count, are discarded.
        for (id, _) in plan.create {
            if let previous = service.lineages[id]?.previous {
                plan.discard.append(previous)
                service.lineages[id]?.previous = nil
            }
        }
        let occupiedLineages = Set(alive.values.map(\.lineage) + terminating.values.map(\.lineage) + plan.create.map(\.lineage))
        let spare = service.lineages.filter { !occupiedLineages.contains($0.key) && $0.value.finished == nil }
        if service.lineages.count > spec.replicas, !spare.isEmpty {
            for (id, lineage) in spare.sorted(by: { $0.key < $1.key }).prefix(service.lineages.count - spec.replicas) {
                if let previous = lineage.previous { plan.discard.append(previous) }
                service.lineages[id] = nil
            }
        }
        // Finished lineages beyond the desired count (after a scale-down).
        let finishedIDs = service.lineages.filter { $0.value.finished != nil }.map(\.key).sorted()
        if finishedIDs.count > spec.replicas {
            for id in finishedIDs.prefix(finishedIDs.count - spec.replicas) {
                if let previous = service.lineages[id]?.previous { plan.discard.append(previous) }
                service.lineages[id] = nil
            }
        }
        plan.remove = remove
        for id in remove { service.replicas[id]?.terminating = true }

        // The rollout.
        let newAvailable = newAlive.values.filter { isAvailable($0) }.count
        if service.rolloutRevision != revision {
            service.rolloutRevision = revision
            service.progressAt = now
            service.lastNewAvailable = 0
            service.lastOldCount = oldAlive.count
            event(.rolloutStarted(revision: revision), "rolling out revision \(revision)")
        }
        if newAvailable > service.lastNewAvailable || oldAlive.count < service.lastOldCount {
            service.progressAt = now
            if newAvailable != service.lastNewAvailable {
                event(.rolloutProgressed(revision: revision, updated: newAlive.count, available: newAvailable),
                      "revision \(revision): \(newAvailable) of \(target) available")
            }
        }
        service.lastNewAvailable = newAvailable
        service.lastOldCount = oldAlive.count
        plan.status = status(service, spec: spec, now: now, message: nil)
        let complete = oldAlive.isEmpty && remove.isEmpty && newAvailable >= target && terminating.filter({ $0.value.templateHash != hash }).isEmpty
        if complete {
            plan.status.rollout = .complete
            if service.announcedComplete != revision {
                service.announcedComplete = revision
                event(.rolloutCompleted(revision: revision), "revision \(revision) rolled out: \(newAvailable) available")
                plan.pruneRevisions = true
            }
        } else if service.record.status.rollout == .failed, service.record.status.observedGeneration == service.record.generation {
            plan.status.rollout = .failed
            plan.status.message = service.record.status.message
        } else if now - service.progressAt >= spec.update.progressDeadline {
            let reason = "made no progress within \(spec.update.progressDeadline)"
            event(.rolloutFailed(revision: revision), "revision \(revision) \(reason)")
            service.failedHashes.insert(hash)
            plan.status.rollout = .failed
            plan.status.message = "revision \(revision) \(reason)"
            if spec.update.rollbackOnFailure, revision > 1 {
                plan.rollBack = (revision, reason)
            }
        } else {
            plan.status.rollout = .progressing
            retry(after: spec.update.progressDeadline - (now - service.progressAt))
        }
        // Waiting dependents may go on now.
        plan.dependents = services.values.filter { other in
            guard !other.deleted else { return false }
            // Those in its replica's network follow its replacements.
            if other.record.spec.networkService == name { return true }
            return other.record.spec.dependsOn.contains { $0.service == name } && !other.replicas.values.contains { $0.exit == nil }
        }.map(\.record.spec.name)
        return plan
    }

    /// The replicas to stop first: not ready, then the newest.
    private static func removalOrder(_ replicas: [String: Replica], now: Duration) -> [(key: String, value: Replica)] {
        replicas.sorted { left, right in
            if left.value.ready != right.value.ready { return !left.value.ready }
            return (left.value.startedAt, left.key) > (right.value.startedAt, right.key)
        }
    }

    private func status(_ service: ServiceState, spec: ServiceSpec, now: Duration, message: String?) -> ServiceStatus {
        var status = ServiceStatus()
        let running = service.replicas.values.filter { $0.exit == nil && !$0.terminating }
        status.observedGeneration = service.record.generation
        status.replicas = running.count
        status.readyReplicas = running.filter(\.ready).count
        status.availableReplicas = running.filter { $0.ready && $0.readySince.map { now - $0 >= spec.update.minReady } == true }.count
        status.updatedReplicas = running.filter { $0.templateHash == service.templateHash }.count
        let finished = service.lineages.values.compactMap(\.finished)
        status.succeeded = finished.filter { $0.status == .exited(0) }.count
        status.failed = finished.count - status.succeeded
        status.message = message
        return status
    }

    /// Why the service cannot start yet, if it cannot.
    private func unmetDependency(_ spec: ServiceSpec, services: [String: ServiceState]) -> String? {
        for dependency in spec.dependsOn {
            guard let other = services[dependency.service], !other.deleted else {
                return "waiting for service \(dependency.service), which does not exist"
            }
            let replicas = other.replicas.values
            let finished = other.lineages.values.compactMap(\.finished)
            let met: Bool
            switch dependency.condition {
            case .started:
                met = replicas.contains { $0.exit == nil } || !finished.isEmpty
            case .healthy:
                let ready = replicas.filter { $0.exit == nil && !$0.terminating && $0.ready }.count
                met = ready >= max(1, other.record.spec.replicas)
            case .completedSuccessfully:
                met = finished.count >= max(1, other.record.spec.replicas) && finished.allSatisfy { $0.status == .exited(0) }
            }
            if !met { return "waiting for service \(dependency.service) to be \(dependency.condition.rawValue.replacingOccurrences(of: "service_", with: "").replacingOccurrences(of: "_", with: " "))" }
        }
        return nil
    }

    /// Stops and removes every replica of a deleted service.
    private func tearDown(_ name: String) async throws {
        if let spec = state.withLock({ $0.services[name]?.record.spec }) { await removeEndpoint(of: spec) }
        let containers = state.withLock { state -> [any ReplicaContainer] in
            guard let service = state.services[name] else { return [] }
            for id in service.replicas.keys { state.services[name]?.replicas[id]?.terminating = true }
            return service.replicas.values.map(\.container) + service.lineages.values.compactMap(\.previous)
        }
        await withTaskGroup(of: Void.self) { group in
            for container in containers {
                group.addTask { await self.removeReplica(container) }
            }
        }
        state.withLock { state in
            if state.services[name]?.deleted == true { state.services[name] = nil }
        }
        metrics.remove(name)
    }

    static func randomSuffix(_ count: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0 ..< count).map { _ in alphabet[Int(generator.next(upperBound: UInt(alphabet.count)))] })
    }
}
