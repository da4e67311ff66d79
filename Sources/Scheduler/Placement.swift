/// How placement ranks the nodes a workload fits on by their resources.
public enum ScoringStrategy: String, Hashable, Sendable, Codable, CaseIterable {
    /// Prefer the emptiest nodes: load spreads by resources.
    case leastAllocated = "LeastAllocated"
    /// Prefer the fullest nodes that still fit: bin-packing, leaving whole
    /// nodes free.
    case mostAllocated = "MostAllocated"
    /// Prefer the nodes running the fewest workloads.
    case spread = "Spread"
}

/// How many nodes placement examines for one workload.
public enum NodeSampling: Hashable, Sendable {
    /// Every node.
    case all
    /// As the Kubernetes scheduler's default: every node up to 100; above,
    /// stop after finding `max(100, n × (50 − n/125) %)` feasible nodes (at
    /// least 5 %), starting where the previous workload stopped.
    case adaptive
    /// Stop after finding this percentage of the nodes feasible.
    case percentage(Int)
}

/// A custom filter: whether a workload may run on a node at all.
public protocol PlacementFilter: Sendable {
    /// A short name for messages, such as `GPUModel`.
    var name: String { get }
    /// `nil` when `workload` may run on `node`, or the reason it may not.
    func reject(_ workload: Workload, on node: NodeState, in cluster: ClusterState) -> String?
}

/// A custom scorer: how much placement likes a node, from 0 to 100.
public protocol PlacementScorer: Sendable {
    var name: String { get }
    /// Multiplies the score in the sum.
    var weight: Int { get }
    func score(_ workload: Workload, on node: NodeState, in cluster: ClusterState) -> Int
}

/// The rules placement follows: filter the nodes, score those left, take the best.
public struct PlacementPolicy: Sendable {
    public var strategy: ScoringStrategy
    public var sampling: NodeSampling
    public var filters: [any PlacementFilter]
    public var scorers: [any PlacementScorer]
    /// Seeds the choice among equally good nodes, so runs can be repeated.
    public var seed: UInt64

    /// A policy; `LeastAllocated` over every node by default.
    public init(strategy: ScoringStrategy = .leastAllocated, sampling: NodeSampling = .all,
                filters: [any PlacementFilter] = [], scorers: [any PlacementScorer] = [], seed: UInt64 = 0x9E37_79B9) {
        self.strategy = strategy
        self.sampling = sampling
        self.filters = filters
        self.scorers = scorers
        self.seed = seed
    }
}

/// The outcome of placing one workload.
public enum PlacementDecision: Sendable, Equatable {
    /// It goes to the node at this index, with this assignment.
    case node(Int, Assignment)
    /// No node fits; the reasons, each with the number of nodes it ruled out.
    case unschedulable([String: Int])

    /// The node index, when placed.
    public var nodeIndex: Int? {
        if case .node(let index, _) = self { return index }
        return nil
    }
}

/// What preemption would do to place a workload: stop these on that node.
public struct PreemptionPlan: Sendable, Equatable {
    public var node: Int
    /// The workloads to stop, lowest priority first.
    public var victims: [String]
}

/// Places workloads on nodes as the Kubernetes scheduler framework does:
/// filters (resource fit, node selector and affinity, taints, workload
/// affinity and anti-affinity, topology spread, custom filters), then
/// scores (the strategy, preferred affinity, taints to avoid, spread,
/// custom scorers), then the best node, ties broken by a seeded choice.
public struct Placer: Sendable {
    public var policy: PlacementPolicy
    private var nextStart = 0
    private var random: SplitMix
    /// What was derived from the node labels of the cluster last seen.
    private var derived = DerivedFromNodes()

    /// A placer following `policy`.
    public init(policy: PlacementPolicy = PlacementPolicy()) {
        self.policy = policy
        random = SplitMix(seed: policy.seed)
    }

    // Kubernetes' default weights of its scoring plugins.
    private static let resourceWeight = 1, taintWeight = 3, nodeAffinityWeight = 2
    private static let workloadAffinityWeight = 2, spreadWeight = 2

    /// Chooses a node for `workload` in `cluster`, without binding it.
    public mutating func place(_ workload: Workload, in cluster: ClusterState) -> PlacementDecision {
        let count = cluster.nodes.count
        guard count > 0 else { return .unschedulable(["no nodes": 0]) }
        derived.follow(cluster)
        let context = CycleContext(workload, cluster, &derived)
        let wanted = feasibleToFind(count)
        var tally = RejectionTally()
        var feasible: [Int] = []
        feasible.reserveCapacity(min(wanted, count))
        let start = wanted < count ? nextStart % count : 0
        var examined = 0
        // Through buffers, so each node is borrowed, not copied.
        cluster.nodes.withUnsafeBufferPointer { nodes in
            cluster.summaries.withUnsafeBufferPointer { summaries in
                while examined < count && feasible.count < wanted {
                    var index = start + examined
                    if index >= count { index -= count }
                    examined += 1
                    if let rejection = reject(workload, at: index, nodes, summaries, context, cluster) {
                        tally.add(rejection)
                    } else {
                        feasible.append(index)
                    }
                }
            }
        }
        if wanted < count { nextStart = (start + examined) % count }
        guard !feasible.isEmpty else { return .unschedulable(tally.reasons) }
        let best = feasible.count == 1 ? feasible[0] : choose(among: feasible, workload, context, cluster)
        return .node(best, assignment(for: workload, on: cluster.nodes[best]))
    }

    /// Finds the node where stopping the fewest and least important
    /// lower-priority workloads makes room for `workload`, as Kubernetes'
    /// default preemption does: on each node all lower-priority workloads
    /// are removed, then put back from the most important down while the
    /// workload still fits. Nodes are compared by the highest victim
    /// priority, then the sum of victim priorities, then the victim count.
    ///
    /// - Returns: `nil` when the workload may not preempt or no node would do.
    public func preemption(for workload: Workload, in cluster: ClusterState) -> PreemptionPlan? {
        guard workload.preemption == .preemptLowerPriority else { return nil }
        var derived = self.derived
        derived.follow(cluster)
        let context = CycleContext(workload, cluster, &derived)
        let requests = workload.resources.effectiveRequests
        var best: (plan: PreemptionPlan, key: (Int, Int, Int))?
        for (index, node) in cluster.nodes.enumerated() {
            // Only resources can be freed; other filters must pass as they are.
            let rejected = cluster.nodes.withUnsafeBufferPointer { nodes in
                cluster.summaries.withUnsafeBufferPointer { summaries in
                    rejectIgnoringResources(workload, at: index, nodes, summaries, context, cluster)
                }
            }
            if rejected != nil { continue }
            var candidates = node.workloads.filter { $0.priority < workload.priority }
            guard !candidates.isEmpty else { continue }
            var freed = node.requested
            var cpus = node.freeExclusiveCPUs.count, gpus = node.freeGPUs.count
            for victim in candidates {
                freed -= victim.requests
                cpus += victim.assignment.exclusiveCPUs.count
                gpus += victim.assignment.gpus.count
            }
            func fits(_ requested: ResourceVector, _ cpus: Int, _ gpus: Int) -> Bool {
                node.allocatable.covers(requested + requests) && cpus >= workload.exclusiveCPUCount && gpus >= requests.gpus
            }
            guard fits(freed, cpus, gpus) else { continue }
            // Reprieve the most important (then the oldest) first.
            candidates.sort { ($0.priority, -$0.sequence) > ($1.priority, -$1.sequence) }
            var victims: [PlacedWorkload] = []
            for candidate in candidates {
                let kept = freed + candidate.requests
                let keptCPUs = cpus - candidate.assignment.exclusiveCPUs.count
                let keptGPUs = gpus - candidate.assignment.gpus.count
                if fits(kept, keptCPUs, keptGPUs) {
                    freed = kept
                    cpus = keptCPUs
                    gpus = keptGPUs
                } else {
                    victims.append(candidate)
                }
            }
            victims.sort { ($0.priority, $0.sequence) < ($1.priority, $1.sequence) }
            let key = (victims.map(\.priority).max() ?? Int.min, victims.reduce(0) { $0 + $1.priority }, victims.count)
            if best == nil || key < best!.key {
                best = (PreemptionPlan(node: index, victims: victims.map(\.name)), key)
            }
        }
        return best?.plan
    }

    // MARK: - Filtering

    private func feasibleToFind(_ count: Int) -> Int {
        switch policy.sampling {
        case .all: return count
        case .percentage(let percent): return max(1, min(count, count * max(1, min(100, percent)) / 100))
        case .adaptive:
            guard count > 100 else { return count }
            let percent = max(5, 50 - count / 125)
            return min(count, max(100, count * percent / 100))
        }
    }

    @inline(__always)
    private func reject(_ workload: Workload, at index: Int, _ nodes: UnsafeBufferPointer<NodeState>,
                        _ summaries: UnsafeBufferPointer<NodeSummary>, _ context: CycleContext, _ cluster: ClusterState) -> Rejection? {
        let requests = context.requests
        let free = summaries[index].free
        if !free.covers(requests) {
            if requests.milliCPU > free.milliCPU { return .cpu }
            if requests.memory > free.memory { return .memory }
            if requests.pids > free.pids { return .pids }
            return .gpus
        }
        if summaries[index].freeGPUs < requests.gpus { return .gpus }
        if summaries[index].freeExclusiveCPUs < context.exclusiveCPUs { return .exclusiveCPUs }
        return rejectIgnoringResources(workload, at: index, nodes, summaries, context, cluster)
    }

    @inline(__always)
    private func rejectIgnoringResources(_ workload: Workload, at index: Int, _ nodes: UnsafeBufferPointer<NodeState>,
                                         _ summaries: UnsafeBufferPointer<NodeSummary>, _ context: CycleContext,
                                         _ cluster: ClusterState) -> Rejection? {
        if let eligible = context.eligible, !eligible[index] { return .mismatch }
        if summaries[index].hardTaints {
            for taint in nodes[index].info.taints where taint.effect != .preferNoSchedule {
                if !workload.tolerations.contains(where: { $0.tolerates(taint) }) { return .taint(taint) }
            }
        }
        if let blocked = context.blocked, let rejection = blocked[index] { return rejection }
        for spread in context.hardSpread {
            let domain = spread.domainOf[index]
            guard domain >= 0 else { return .lacksKey(spread.constraint.topologyKey) }
            if spread.counts[Int(domain)] + spread.own - spread.minimum > spread.constraint.maxSkew { return .skew }
        }
        guard !policy.filters.isEmpty else { return nil }
        let state = nodes[index]
        for filter in policy.filters {
            if let reason = filter.reject(workload, on: state, in: cluster) { return .filter(filter.name, reason) }
        }
        return nil
    }

    // MARK: - Scoring

    private mutating func choose(among feasible: [Int], _ workload: Workload, _ context: CycleContext, _ cluster: ClusterState) -> Int {
        cluster.nodes.withUnsafeBufferPointer { nodes in
            cluster.summaries.withUnsafeBufferPointer { summaries in
                choose(among: feasible, workload, context, cluster, nodes, summaries)
            }
        }
    }

    private mutating func choose(among feasible: [Int], _ workload: Workload, _ context: CycleContext, _ cluster: ClusterState,
                                 _ nodes: UnsafeBufferPointer<NodeState>, _ summaries: UnsafeBufferPointer<NodeSummary>) -> Int {
        var totals = [Int](repeating: 0, count: feasible.count)
        // Resources, by the strategy.
        let maxCount = feasible.reduce(0) { max($0, summaries[$1].workloads) }
        for (slot, index) in feasible.enumerated() {
            totals[slot] += Self.resourceWeight * resourceScore(summaries[index], context.requests, maxCount: maxCount)
        }
        // Preferred node affinity, normalised to the best node.
        if !workload.affinity.preferredNodeTerms.isEmpty {
            let raw = feasible.map { index in
                workload.affinity.preferredNodeTerms.reduce(0) { $0 + ($1.term.matches(nodes[index].info.labels) ? $1.weight : 0) }
            }
            add(normalised(raw), weight: Self.nodeAffinityWeight, to: &totals)
        }
        // Fewer untolerated PreferNoSchedule taints is better.
        if feasible.contains(where: { summaries[$0].softTaints }) {
            let avoided = feasible.map { index in
                guard summaries[index].softTaints else { return 0 }
                var count = 0
                for taint in nodes[index].info.taints where taint.effect == .preferNoSchedule {
                    if !workload.tolerations.contains(where: { $0.tolerates(taint) }) { count += 1 }
                }
                return count
            }
            if avoided.contains(where: { $0 > 0 }) { add(normalised(avoided, reverse: true), weight: Self.taintWeight, to: &totals) }
        }
        // Preferred workload affinity and anti-affinity.
        if !context.preferred.isEmpty {
            let raw = feasible.map { context.preferenceScore(at: $0) }
            add(normalisedSigned(raw), weight: Self.workloadAffinityWeight, to: &totals)
        }
        // Soft spread: fewer matching workloads in the node's domains is better.
        if !context.softSpread.isEmpty {
            let raw = feasible.map { context.softSpreadCount(at: $0) }
            add(normalised(raw, reverse: true), weight: Self.spreadWeight, to: &totals)
        }
        for scorer in policy.scorers {
            for (slot, index) in feasible.enumerated() {
                totals[slot] += scorer.weight * min(100, max(0, scorer.score(workload, on: nodes[index], in: cluster)))
            }
        }
        // The best, a seeded choice among ties (reservoir sampling).
        var best = 0, ties = 0
        for slot in totals.indices {
            if totals[slot] > totals[best] {
                best = slot
                ties = 1
            } else if totals[slot] == totals[best] {
                ties += 1
                if slot != best, random.next() % UInt64(ties) == 0 { best = slot }
            }
        }
        return feasible[best]
    }

    @inline(__always)
    private func resourceScore(_ node: NodeSummary, _ requests: ResourceVector, maxCount: Int) -> Int {
        let allocatable = node.allocatable
        func fraction(_ used: Int64, _ total: Int64) -> Int64 { total > 0 ? min(100, used * 100 / total) : 100 }
        let after = allocatable - node.free + requests
        let cpu = fraction(after.milliCPU, allocatable.milliCPU)
        let memory = fraction(after.memory, allocatable.memory)
        switch policy.strategy {
        case .leastAllocated: return Int(((100 - cpu) + (100 - memory)) / 2)
        case .mostAllocated: return Int((cpu + memory) / 2)
        case .spread: return maxCount == 0 ? 100 : 100 - node.workloads * 100 / (maxCount + 1)
        }
    }

    private func normalised(_ raw: [Int], reverse: Bool = false) -> [Int] {
        let top = raw.max() ?? 0
        guard top > 0 else { return raw.map { _ in reverse ? 100 : 0 } }
        return raw.map { reverse ? 100 - $0 * 100 / top : $0 * 100 / top }
    }

    private func normalisedSigned(_ raw: [Int]) -> [Int] {
        let low = raw.min() ?? 0, high = raw.max() ?? 0
        guard high > low else { return raw.map { _ in 0 } }
        return raw.map { ($0 - low) * 100 / (high - low) }
    }

    private func add(_ scores: [Int], weight: Int, to totals: inout [Int]) {
        for slot in totals.indices { totals[slot] += weight * scores[slot] }
    }

    /// What `workload` gets on `node`: the lowest free exclusive CPUs and
    /// devices, and the OOM score of its class.
    func assignment(for workload: Workload, on node: NodeState) -> Assignment {
        let requests = workload.resources.effectiveRequests
        return Assignment(
            node: node.info.name,
            exclusiveCPUs: Array(node.freeExclusiveCPUs.prefix(workload.exclusiveCPUCount)),
            gpus: Array(node.freeGPUs.prefix(requests.gpus)),
            oomScoreAdjustment: workload.resources.qosClass.oomScoreAdjustment(
                memoryRequest: requests.memory, memoryCapacity: node.info.capacity.memory))
    }
}
