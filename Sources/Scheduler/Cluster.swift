public import Logging

/// Admission and placement for a set of nodes: workloads wait in an
/// ``AdmissionQueue`` until placement finds them room, higher priorities
/// first, preempting lower ones where allowed, then run on their node.
///
/// Each workload runs in its caller's task (``run(_:)``): there is no
/// background loop to start or stop. Cancelling the caller stops its
/// workload.
///
/// ```swift
/// let cluster = try Cluster(nodes: [LocalNode(runtime: runtime)])
/// let exit = try await cluster.run(Workload(name: "resize-42", container: spec,
///     resources: ResourceRequirements(limits: .cpus(1, memory: 256 << 20))))
/// ```
public actor Cluster {
    /// How admission and placement behave.
    public struct Options: Sendable {
        public var placement: PlacementPolicy
        public var backoff: AdmissionQueue.Backoff
        /// Relative weights of named queues (1 when not listed).
        public var queueWeights: [String: Int]

        /// Options; Kubernetes' defaults.
        public init(placement: PlacementPolicy = PlacementPolicy(), backoff: AdmissionQueue.Backoff = AdmissionQueue.Backoff(),
                    queueWeights: [String: Int] = [:]) {
            self.placement = placement
            self.backoff = backoff
            self.queueWeights = queueWeights
        }
    }

    /// A workload waiting for room.
    public struct Pending: Sendable, Hashable {
        public var name: String
        public var queue: String
        public var priority: Int
        /// Failed placements so far.
        public var attempts: Int
        /// Why the last placement failed, each reason with the nodes it ruled out.
        public var reasons: [String: Int]
    }

    private var state: ClusterState
    private var nodes: [String: any Node]
    private var placer: Placer
    private var queue: AdmissionQueue
    private let clock: ElapsedClock
    private let logger: Logger
    private var wakers: [String: AsyncStream<Void>.Continuation] = [:]
    private var admitted: [String: Assignment] = [:]
    private var running: [String: any RunningWorkload] = [:]
    private var preempted: Set<String> = []
    private var victimsOf: [String: [String]] = [:]
    private var reasons: [String: [String: Int]] = [:]
    private var queueUsage: [String: ResourceVector] = [:]
    private var totals: ResourceVector

    /// A cluster of `nodes`.
    ///
    /// - Throws: ``SchedulerError`` when two nodes share a name.
    public init<C: Clock & Sendable>(nodes: [any Node], options: Options = Options(), clock: C = ContinuousClock(),
                                     logger: Logger = Logger(label: "gantry.scheduler")) throws
    where C.Duration == Duration, C.Instant: Sendable {
        var state = try ClusterState()
        var byName: [String: any Node] = [:]
        var totals = ResourceVector.zero
        for node in nodes {
            try state.add(node.info)
            byName[node.info.name] = node
            totals += node.info.allocatable
        }
        self.state = state
        self.nodes = byName
        self.totals = totals
        placer = Placer(policy: options.placement)
        queue = AdmissionQueue(backoff: options.backoff, weights: options.queueWeights)
        self.clock = ElapsedClock(clock)
        self.logger = logger
    }

    /// The nodes and what is bound to them now.
    public var snapshot: ClusterState { state }

    /// The workloads waiting for room, in the order they would be tried.
    public var pending: [Pending] {
        queue.names.compactMap { name in
            guard let workload = queue.workload(name) else { return nil }
            return Pending(name: name, queue: workload.queue, priority: workload.priority,
                           attempts: queue.attempts(of: name), reasons: reasons[name] ?? [:])
        }
    }

    /// Adds a node; waiting workloads are tried on it at once.
    ///
    /// - Throws: ``SchedulerError`` when a node of that name exists.
    public func add(_ node: any Node) throws {
        try state.add(node.info)
        nodes[node.info.name] = node
        totals += node.info.allocatable
        schedule(capacityChanged: true)
    }

    /// Waits until `workload` is placed, launches it on its node, waits
    /// until it ends and frees its place.
    ///
    /// - Returns: how it ended; its reason is `preempted` when a
    ///   higher-priority workload stopped it.
    /// - Throws: ``SchedulerError`` when it can never fit or its name is
    ///   taken; the node's error when it cannot be launched;
    ///   `CancellationError` when cancelled (the workload is stopped).
    public func run(_ workload: Workload) async throws -> WorkloadExit {
        let assignment = try await admit(workload)
        guard let node = nodes[assignment.node] else {
            release(workload.name)
            throw SchedulerError(.notFound, "node \"\(assignment.node)\" of workload \"\(workload.name)\" is gone")
        }
        let handle: any RunningWorkload
        do {
            handle = try await node.launch(workload, assignment: assignment)
        } catch {
            release(workload.name)
            throw error
        }
        running[workload.name] = handle
        if preempted.contains(workload.name) { try? await handle.stop(grace: workload.stopGrace) }
        do {
            var exit = try await handle.wait()
            if preempted.contains(workload.name) { exit.reason = "preempted" }
            release(workload.name)
            return exit
        } catch {
            release(workload.name)
            throw error
        }
    }

    /// Waits until `workload` is placed and returns where; the caller runs
    /// it and must call ``release(_:)`` afterwards. Lower-priority
    /// workloads it preempts are stopped before this returns.
    ///
    /// - Throws: ``SchedulerError`` when it can never fit or its name is
    ///   taken; `CancellationError` when cancelled while waiting.
    public func admit(_ workload: Workload) async throws -> Assignment {
        try workload.resources.validate("workload \(workload.name)")
        let name = workload.name
        guard !queue.contains(name), state.node(of: name) == nil, admitted[name] == nil else {
            throw SchedulerError(.exists, "a workload named \"\(name)\" is waiting or running already")
        }
        let requests = workload.resources.effectiveRequests
        guard state.canEverFit(requests, exclusiveCPUs: workload.exclusiveCPUCount)
        else {
            throw SchedulerError(.unschedulable, "workload \"\(name)\" requests \(requests), more than any node can ever offer")
        }
        let (wake, waker) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        wakers[name] = waker
        defer { wakers[name] = nil }
        queue.push(workload)
        while true {
            schedule(capacityChanged: false)
            if let assignment = admitted.removeValue(forKey: name) {
                if preempted.remove(name) != nil {
                    // Preempted between its placement and now: it waits again.
                    queue.push(workload)
                    continue
                }
                let victims = victimsOf.removeValue(forKey: name) ?? []
                for victim in victims {
                    try? await running[victim]?.stop(grace: workload.stopGrace)
                }
                return assignment
            }
            if Task.isCancelled {
                if queue.remove(name) == nil { release(name) }
                throw CancellationError()
            }
            let deadline = queue.retryAt(of: name)
            let clock = self.clock
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    var iterator = wake.makeAsyncIterator()
                    _ = await iterator.next()
                }
                if let deadline {
                    group.addTask { try? await clock.sleepUntil(deadline) }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }

    /// Frees the place of a workload that ended; waiting workloads are
    /// tried again at once.
    public func release(_ name: String) {
        running[name] = nil
        preempted.remove(name)
        admitted[name] = nil
        if let placed = state.release(name) {
            queueUsage[placed.queue, default: .zero] -= placed.requests
            schedule(capacityChanged: true)
        }
    }

    /// Places every ready workload it can, preempting where that is allowed
    /// and needed, and wakes the callers of those placed.
    private func schedule(capacityChanged: Bool) {
        let now = clock.now()
        queue.retry(now: now, capacityChanged: capacityChanged)
        let totals = self.totals
        let usage = queueUsage
        while let workload = queue.pop(share: { queue in
            let used = usage[queue] ?? .zero
            let cpu = totals.milliCPU > 0 ? Double(used.milliCPU) / Double(totals.milliCPU) : 0
            let memory = totals.memory > 0 ? Double(used.memory) / Double(totals.memory) : 0
            return max(cpu, memory)
        }) {
            let decision = placer.place(workload, in: state)
            if case .node(let index, let assignment) = decision {
                bind(workload, index, assignment)
                continue
            }
            if let plan = placer.preemption(for: workload, in: state) {
                for victim in plan.victims {
                    guard let placed = state.release(victim) else { continue }
                    queueUsage[placed.queue, default: .zero] -= placed.requests
                    preempted.insert(victim)
                    logger.info("preempting workload for a higher priority", metadata: [
                        "victim": "\(victim)", "by": "\(workload.name)", "node": "\(state.nodes[plan.node].info.name)",
                    ])
                }
                // The plan's node fits once its victims are gone: bind there.
                bind(workload, plan.node, placer.assignment(for: workload, on: state.nodes[plan.node]))
                victimsOf[workload.name] = plan.victims
                continue
            }
            if case .unschedulable(let why) = decision { reasons[workload.name] = why }
            queue.backOff(workload.name, now: now)
        }
    }

    private func bind(_ workload: Workload, _ index: Int, _ assignment: Assignment) {
        do {
            try state.bind(workload, to: index, assignment: assignment)
        } catch {
            // Placement chose a node the workload fits on; this cannot fail.
            preconditionFailure("placement chose a node that does not fit: \(error)")
        }
        queue.remove(workload.name)
        reasons[workload.name] = nil
        queueUsage[workload.queue, default: .zero] += workload.resources.effectiveRequests
        admitted[workload.name] = assignment
        wakers[workload.name]?.yield()
    }
}
