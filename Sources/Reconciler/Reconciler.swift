public import CoreMetrics
import Foundation
public import Logging
import OCIImage
public import Runtime
import Scheduler
import SystemPackage
public import ServiceLifecycle
import Synchronization
public import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// Keeps a project's services as declared: Kubernetes' controller model,
/// embedded in the host process. Desired state lives in the ``ServiceStore``;
/// the reconciler runs replicas, replaces those that end (at once the first
/// time, then with crash-loop back-off), probes them, rolls templates out
/// and back, and reports every transition as a ``ServiceEvent``.
///
/// It is a ServiceLifecycle `Service`: ``run()`` adopts the project's
/// surviving replicas, then reconciles until graceful shutdown or
/// cancellation, and then stops its replicas or leaves them running, as
/// ``Options/onShutdown`` says.
///
/// Reactions are driven by the runtime's exit notifications and probe
/// results, through a de-duplicating work queue, plus a periodic resync and
/// a watch on the store for changes made by other processes.
public final class Reconciler: Service, Sendable {
    /// What happens to replicas when the reconciler shuts down.
    public enum ShutdownBehavior: String, Hashable, Sendable, Codable {
        /// They are stopped and removed.
        case stopReplicas
        /// They keep running, and are adopted by the next reconciler of the
        /// project (replicas are then made to survive this process).
        case leaveRunning
    }

    /// How the reconciler works.
    public struct Options: Sendable {
        /// The project whose services it manages.
        public var project: String
        /// Services reconciled at once.
        public var workers: Int
        /// How often every service is reconciled even without events.
        public var resyncPeriod: Duration
        /// How often the store is checked for changes made by other processes.
        public var storePollInterval: Duration
        /// What happens to replicas at shutdown.
        public var onShutdown: ShutdownBehavior
        /// The work queue's retry limits.
        public var rateLimits: WorkQueueRateLimits
        /// Replicas created and started at once by one reconcile.
        public var startConcurrency: Int
        /// How often autoscalers read their metrics and decide (15 s, as
        /// Kubernetes' horizontal pod autoscaler controller).
        public var autoscaleInterval: Duration
        /// Where autoscalers read their metrics; without one, services'
        /// autoscalers report that they cannot work.
        public var metricSource: (any ReplicaMetricSource)?

        /// The defaults: the default project, 4 workers, a resync every
        /// 30 s, the store checked every 200 ms, replicas stopped at
        /// shutdown, autoscalers deciding every 15 s.
        ///
        /// - Parameters:
        ///   - project: the project whose services it manages.
        ///   - workers: services reconciled at once.
        ///   - resyncPeriod: how often every service is reconciled anyway.
        ///   - storePollInterval: how often the store is checked for changes.
        ///   - onShutdown: what happens to replicas at shutdown.
        ///   - rateLimits: the work queue's retry limits.
        ///   - startConcurrency: replicas started at once by one reconcile.
        ///   - autoscaleInterval: how often autoscalers decide.
        ///   - metricSource: where autoscalers read their metrics.
        public init(project: String = ServiceSpec.defaultProject, workers: Int = 4, resyncPeriod: Duration = .seconds(30),
                    storePollInterval: Duration = .milliseconds(200), onShutdown: ShutdownBehavior = .stopReplicas,
                    rateLimits: WorkQueueRateLimits = WorkQueueRateLimits(), startConcurrency: Int = 4,
                    autoscaleInterval: Duration = .seconds(15), metricSource: (any ReplicaMetricSource)? = nil) {
            self.project = project
            self.workers = workers
            self.resyncPeriod = resyncPeriod
            self.storePollInterval = storePollInterval
            self.onShutdown = onShutdown
            self.rateLimits = rateLimits
            self.startConcurrency = startConcurrency
            self.autoscaleInterval = autoscaleInterval
            self.metricSource = metricSource
        }
    }

    /// A replica as the reconciler sees it.
    public struct ReplicaInfo: Hashable, Sendable {
        /// The container's ID.
        public var id: String
        /// The container's name.
        public var name: String
        /// The revision it was made for.
        public var revision: Int
        /// Whether it runs the service's current template (a rollback makes
        /// replicas of an earlier revision current again).
        public var current: Bool
        /// Whether its readiness passes.
        public var ready: Bool
        /// Whether it is being stopped.
        public var terminating: Bool
        /// How it ended, once it has.
        public var exit: ContainerExit?
    }

    /// The runtime replicas run in.
    public let runtime: any ReplicaRuntime
    /// Where services, revisions and events are kept.
    public let store: ServiceStore
    /// How it works.
    public let options: Options
    let clock: ElapsedClock
    let logger: Logger
    let metrics: ReconcilerMetrics
    let tracer: any Tracer
    let broadcast = EventBroadcast<ServiceEvent>(bufferLimit: 4096)
    let state = Mutex(State())
    /// Held while the store is read and applied, so views apply in order.
    private let refreshing = Mutex(())
    let jobs: AsyncStream<@Sendable () async -> Void>
    let jobsInput: AsyncStream<@Sendable () async -> Void>.Continuation
    let journal: AsyncStream<ServiceEvent>
    let journalInput: AsyncStream<ServiceEvent>.Continuation
    let queue: WorkQueue<String>
    /// Each autoscaled service's autoscaler, with its history.
    let autoscalers = Mutex<[String: HorizontalAutoscaler]>([:])

    /// Opens a reconciler over `runtime`'s state root.
    ///
    /// - Parameters:
    ///   - runtime: the runtime replicas run in.
    ///   - store: the service store; the one in the runtime's state root by default.
    ///   - options: how it works.
    ///   - clock: the clock for back-off, probe periods and deadlines (tests inject a `ManualClock`).
    ///   - metricsFactory: where metrics go; the bootstrapped factory by default.
    ///   - tracer: where spans go; the bootstrapped tracer by default.
    ///   - logger: where it logs.
    public init<C: Clock & Sendable>(runtime: any ReplicaRuntime, store: ServiceStore? = nil, options: Options = Options(),
                                     clock: C = ContinuousClock(), metricsFactory: (any MetricsFactory)? = nil,
                                     tracer: (any Tracer)? = nil, logger: Logger = Logger(label: "gantry.reconciler")) throws
        where C.Duration == Duration, C.Instant: Sendable {
        try ServiceSpec.validate(name: options.project, kind: "project")
        self.runtime = runtime
        self.store = try store ?? ServiceStore(root: runtime.stateRoot)
        self.options = options
        self.clock = ElapsedClock(clock)
        self.logger = logger
        metrics = ReconcilerMetrics(factory: metricsFactory ?? MetricsSystem.factory)
        self.tracer = tracer ?? InstrumentationSystem.tracer
        (jobs, jobsInput) = AsyncStream.makeStream()
        (journal, journalInput) = AsyncStream.makeStream()
        let spawn = jobsInput
        queue = WorkQueue(limits: options.rateLimits, clock: self.clock) { job in spawn.yield(job) }
    }

    // MARK: - State

    struct State {
        var services: [String: ServiceState] = [:]
        var stopping = false
        var started = false
        var lock: Int32 = -1
    }

    struct ServiceState {
        var record: ServiceRecord
        /// Whether the store no longer has it.
        var deleted = false
        var replicas: [String: Replica] = [:]
        var lineages: [String: Lineage] = [:]
        /// The revision the rollout tracking is about, and its last progress.
        var rolloutRevision = 0
        var progressAt: Duration = .zero
        var lastNewAvailable = 0
        var lastOldCount = 0
        var announcedComplete = 0
        var announcedWaiting = false
        var lastReplicas: Int
        /// What the last automatic rollback said, until the spec changes.
        var rollbackNote: String?
        /// The current template's hash.
        var templateHash: String
        /// Templates whose rollout failed, never rolled back to automatically.
        var failedHashes: Set<String> = []
        /// The load-balanced endpoint as last installed, and its backends.
        var endpoint: ServiceEndpointRecord?
        var endpointBackends: [String]?
    }

    struct Replica {
        var container: any ReplicaContainer
        var lineage: String
        var revision: Int
        var templateHash: String
        var startedAt: Duration
        var exit: ContainerExit?
        var terminating = false
        var unhealthy = false
        var startupPassed: Bool
        var ready: Bool
        var readySince: Duration?
        var probes: ServiceProbes
        /// The container whose network namespace it shares, if one.
        var joined: String?
    }

    /// One replica slot's history: its crash-loop back-off.
    struct Lineage {
        var backoff: RestartBackoff
        /// Not to be refilled before this time.
        var notBefore: Duration = .zero
        var announcedDelay: Duration?
        /// Ended for good (per the restart policy), with this exit.
        var finished: ContainerExit?
        /// Whether a replica of it ran before, so the next one is a restart.
        var ranBefore = false
        /// The stopped container kept for its logs until replaced.
        var previous: (any ReplicaContainer)?
    }

    // MARK: - Desired state

    /// Creates or updates a service; the reconciler then converges to it.
    /// Returns the stored record.
    ///
    /// - Parameter spec: the service, of this reconciler's project.
    /// - Throws: ``ReconcilerError`` naming what is wrong in the spec.
    @discardableResult
    public func apply(_ spec: ServiceSpec) throws -> ServiceRecord {
        guard spec.project == options.project else {
            throw ReconcilerError(.invalidSpec, "service \(spec.name) belongs to project \(spec.project); this reconciler manages project \(options.project)")
        }
        let (record, _) = try store.apply(spec)
        try refresh()
        return record
    }

    /// Deletes a service; its replicas are stopped and removed.
    ///
    /// - Parameter name: the service.
    /// - Throws: ``ReconcilerError`` with code `notFound` when there is none.
    public func delete(_ name: String) throws {
        guard try store.delete(name, project: options.project) else {
            throw ReconcilerError(.notFound, "no service \(name) in project \(options.project)")
        }
        try refresh()
    }

    /// Changes a service's desired replica count.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - replicas: the new count.
    @discardableResult
    public func scale(_ name: String, replicas: Int) throws -> ServiceRecord {
        let record = try store.scale(name, project: options.project, replicas: replicas)
        try refresh()
        return record
    }

    /// Rolls a service back to an earlier revision (the previous one by default).
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - revision: the revision to go back to, or nil for the previous one.
    @discardableResult
    public func rollBack(_ name: String, to revision: Int? = nil) throws -> ServiceRecord {
        let (record, from, to) = try store.rollBack(name, project: options.project, to: revision)
        emit(ServiceEvent(project: options.project, service: name, kind: .rolledBack(from: from, to: to),
                          message: "rolled back from revision \(from) to revision \(to)"))
        try refresh()
        return record
    }

    /// The service as the reconciler knows it now.
    ///
    /// - Parameter name: the service.
    public func service(_ name: String) throws -> ServiceRecord {
        if let record = state.withLock({ $0.services[name].map(\.record) }) { return record }
        return try store.service(name, project: options.project)
    }

    /// The service's replicas now: running, stopping and ended ones.
    ///
    /// - Parameter name: the service.
    public func replicas(of name: String) -> [ReplicaInfo] {
        state.withLock { state in
            let hash = state.services[name]?.templateHash
            return (state.services[name]?.replicas ?? [:]).map { id, replica in
                ReplicaInfo(id: id, name: replica.container.name, revision: replica.revision, current: replica.templateHash == hash, ready: replica.ready,
                            terminating: replica.terminating, exit: replica.exit)
            }.sorted { $0.name < $1.name }
        }
    }

    /// Every event from now on, as it happens. Slow readers keep the newest 4096.
    public func events() -> AsyncStream<ServiceEvent> { broadcast.subscribe() }

    /// Waits until `condition` holds for the service's record (nil once
    /// deleted) and replicas, checking every 10 ms.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - timeout: how long to wait at most.
    ///   - condition: what must hold.
    /// - Throws: ``ReconcilerError`` with code `invalidState` after the timeout.
    public func waitUntil(_ name: String, timeout: Duration = .seconds(60),
                          _ condition: @escaping @Sendable (ServiceRecord?, [ReplicaInfo]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let record = state.withLock { $0.services[name].flatMap { $0.deleted ? nil : $0.record } }
            if condition(record, replicas(of: name)) { return }
            guard ContinuousClock.now < deadline else {
                throw ReconcilerError(.invalidState, "service \(name) did not reach the awaited state within \(timeout); status: \(record.map { "\($0.status)" } ?? "deleted")")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Waits until the service's current generation is rolled out: every
    /// replica runs its revision and is available, or the rollout failed
    /// (a rollback is a new generation, so it is waited for too). Returns the record.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - timeout: how long to wait at most.
    @discardableResult
    public func waitForRollout(_ name: String, timeout: Duration = .seconds(60)) async throws -> ServiceRecord {
        try await waitUntil(name, timeout: timeout) { record, _ in
            guard let record else { return false }
            return record.status.observedGeneration == record.generation && (record.status.rollout == .complete || record.status.rollout == .failed)
        }
        return try service(name)
    }

    // MARK: - Events

    func emit(_ event: ServiceEvent) {
        broadcast.send(event)
        journalInput.yield(event)
        logger.debug("\(event.name)", metadata: ["service": "\(event.service)", "container": "\(event.container ?? "")", "message": "\(event.message)"])
    }

    /// Writes events to the journal as they come, in order.
    private func writeJournal() async {
        for await event in journal {
            do {
                try store.append([event])
            } catch {
                logger.warning("cannot write the event journal", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: - Running

    /// Adopts the project's surviving replicas and reconciles until graceful
    /// shutdown or cancellation; then stops the replicas or leaves them
    /// running, as ``Options/onShutdown`` says.
    ///
    /// - Throws: ``ReconcilerError`` with code `invalidState` when another
    ///   process reconciles the project, or the store cannot be read.
    public func run() async throws {
        // On threads of its own, so that healing does not wait for a busy
        // cooperative pool.
        try await withTaskExecutorPreference(ReconcilerThreads.shared) {
            try await runLoops()
        }
    }

    private func runLoops() async throws {
        try lockProject()
        defer { unlockProject() }
        try refresh()
        try await adopt()
        await removeStaleEndpoints()
        let signal = ShutdownSignal()
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    for _ in 0 ..< max(1, options.workers) {
                        group.addTask { await self.work() }
                    }
                    group.addTask { await self.resync() }
                    group.addTask { await self.watchStore() }
                    group.addTask { await self.writeJournal() }
                    group.addTask { await self.autoscaleLoop() }
                    group.addTask {
                        await signal.wait()
                        await self.shutDown()
                    }
                    for name in state.withLock({ Array($0.services.keys) }) { queue.add(name) }
                    for await job in jobs {
                        group.addTask { await job() }
                    }
                    group.cancelAll()
                }
            } onCancel: {
                signal.fire()
            }
        } onGracefulShutdown: {
            signal.fire()
        }
    }

    /// Runs the reconciler while `body` runs, then shuts it down (as
    /// ``Options/onShutdown`` says) and waits for it to end: the scoped
    /// form of ``run()``, for tests and short-lived programs.
    ///
    /// - Parameter body: what to do while it runs.
    /// - Returns: what `body` returns.
    public func withRunning<T: Sendable>(_ body: @Sendable (Reconciler) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await self.run()
                return nil
            }
            let result: Result<T, any Error>
            do {
                result = .success(try await body(self))
            } catch {
                result = .failure(error)
            }
            group.cancelAll()
            while let _ = try await group.next() {}
            return try result.get()
        }
    }

    private func work() async {
        while let key = await queue.next() {
            metrics.queueDepth.record(queue.depth)
            let start = DispatchTime.now().uptimeNanoseconds
            do {
                try await tracer.withSpan("reconcile") { span in
                    span.attributes["gantry.service"] = key
                    try await reconcile(key)
                }
                queue.forget(key)
            } catch {
                let delay = queue.addRateLimited(key)
                logger.warning("reconcile failed", metadata: ["service": "\(key)", "error": "\(error)", "retry": "\(delay)"])
                emit(ServiceEvent(project: options.project, service: key, kind: .failed, message: "\(error); retrying in \(delay)"))
            }
            metrics.reconciled(key, nanoseconds: Int64(DispatchTime.now().uptimeNanoseconds - start))
            queue.done(key)
        }
    }

    private func resync() async {
        while !Task.isCancelled {
            do {
                try await clock.sleep(options.resyncPeriod)
            } catch {
                return
            }
            for name in state.withLock({ Array($0.services.keys) }) { queue.add(name) }
        }
    }

    private func watchStore() async {
        var last = (try? store.changeCounter()) ?? 0
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: options.storePollInterval)
                let counter = try store.changeCounter()
                if counter != last {
                    last = counter
                    try refresh()
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("cannot read the service store", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Reads the project's services from the store; queues those that changed.
    package func refresh() throws {
        // The store is read and what it holds applied under one lock: a read
        // that lost a race must not apply its older view after a newer one
        // (it would take a just-applied service for deleted).
        let (changed, events) = try refreshing.withLock { _ -> ([String], [ServiceEvent]) in
            let records = try store.services(project: options.project)
            var changed: [String] = []
            var events: [ServiceEvent] = []
            state.withLock { state in
                let names = Set(records.map(\.spec.name))
                for record in records {
                    let name = record.spec.name
                    if var existing = state.services[name], !existing.deleted {
                        guard existing.record.generation != record.generation || existing.record.revision != record.revision else { continue }
                        existing.record.spec = record.spec
                        existing.record.generation = record.generation
                        existing.record.revision = record.revision
                        existing.templateHash = record.spec.revisionTemplate.hash
                        existing.rollbackNote = nil
                        state.services[name] = existing
                    } else {
                        var fresh = ServiceState(record: record, lastReplicas: record.spec.replicas, templateHash: record.spec.revisionTemplate.hash)
                        if let old = state.services[name] { fresh.replicas = old.replicas }
                        state.services[name] = fresh
                    }
                    changed.append(name)
                    events.append(ServiceEvent(project: options.project, service: name, kind: .applied(generation: record.generation),
                                               message: "generation \(record.generation), revision \(record.revision), \(record.spec.replicas) replicas"))
                }
                for (name, service) in state.services where !names.contains(name) && !service.deleted {
                    state.services[name]?.deleted = true
                    changed.append(name)
                    events.append(ServiceEvent(project: options.project, service: name, kind: .deleted, message: "deleted"))
                }
            }
            return (changed, events)
        }
        events.forEach(emit)
        changed.forEach(queue.add)
    }

    // MARK: - Shutdown

    private func shutDown() async {
        state.withLock { $0.stopping = true }
        queue.shutDown()
        if options.onShutdown == .stopReplicas {
            // The endpoints first: no new connection goes to a replica being stopped.
            for spec in state.withLock({ $0.services.values.map(\.record.spec) }) { await removeEndpoint(of: spec) }
            let containers = state.withLock { state in
                state.services.values.flatMap { service in
                    service.replicas.values.map(\.container) + service.lineages.values.compactMap(\.previous)
                }
            }
            await withTaskGroup(of: Void.self) { group in
                for container in containers {
                    group.addTask { await self.removeReplica(container) }
                }
            }
            state.withLock { state in
                for name in state.services.keys {
                    state.services[name]?.replicas.removeAll()
                    state.services[name]?.lineages.removeAll()
                }
            }
        }
        jobsInput.finish()
        journalInput.finish()
    }

    /// Stops (within its grace period) and removes a container.
    func removeReplica(_ container: any ReplicaContainer) async {
        do {
            if let status = try? container.status, status == .running || status == .paused {
                _ = try await container.stop(grace: nil)
            }
            try await container.remove(force: true)
        } catch {
            logger.warning("cannot remove a replica", metadata: ["container": "\(container.name)", "error": "\(error)"])
        }
    }

}
