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
        let nodes = cluster.nodes
        guard !nodes.isEmpty else { return .unschedulable(["no nodes": 0]) }
        let context = CycleContext(workload, cluster)
        let wanted = feasibleToFind(nodes.count)
        var reasons: [String: Int] = [:]
        var feasible: [Int] = []
        feasible.reserveCapacity(min(wanted, nodes.count))
        let start = wanted < nodes.count ? nextStart % nodes.count : 0
        var examined = 0
        // Through a buffer, so each node is borrowed, not copied.
        nodes.withUnsafeBufferPointer { nodes in
            while examined < nodes.count && feasible.count < wanted {
                let index = (start + examined) % nodes.count
                examined += 1
                if let reason = reject(workload, on: nodes.baseAddress! + index, context: context, cluster: cluster) {
                    reasons[reason, default: 0] += 1
                } else {
                    feasible.append(index)
                }
            }
        }
        if wanted < nodes.count { nextStart = (start + examined) % nodes.count }
        guard !feasible.isEmpty else { return .unschedulable(reasons) }
        let best = feasible.count == 1 ? feasible[0] : choose(among: feasible, workload, context, cluster)
        return .node(best, assignment(for: workload, on: nodes[best]))
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
        let context = CycleContext(workload, cluster)
        let requests = workload.resources.effectiveRequests
        var best: (plan: PreemptionPlan, key: (Int, Int, Int))?
        for (index, node) in cluster.nodes.enumerated() {
            // Only resources can be freed; other filters must pass as they are.
            let rejected = withUnsafePointer(to: node) { rejectIgnoringResources(workload, on: $0, context: context, cluster: cluster) }
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
    private func reject(_ workload: Workload, on node: UnsafePointer<NodeState>, context: CycleContext, cluster: ClusterState) -> String? {
        let requests = context.requests
        if !node.pointee.free.covers(requests) {
            if requests.milliCPU > node.pointee.free.milliCPU { return "insufficient cpu" }
            if requests.memory > node.pointee.free.memory { return "insufficient memory" }
            if requests.pids > node.pointee.free.pids { return "insufficient pids" }
            return "insufficient gpus"
        }
        if node.pointee.freeGPUs.count < requests.gpus { return "insufficient gpus" }
        if node.pointee.freeExclusiveCPUs.count < context.exclusiveCPUs { return "insufficient exclusive cpus" }
        return rejectIgnoringResources(workload, on: node, context: context, cluster: cluster)
    }

    @inline(__always)
    private func rejectIgnoringResources(_ workload: Workload, on node: UnsafePointer<NodeState>, context: CycleContext,
                                         cluster: ClusterState) -> String? {
        if !context.nodeEligible(node.pointee.info) { return "node selector or affinity mismatch" }
        for taint in node.pointee.info.taints where taint.effect != .preferNoSchedule {
            if !workload.tolerations.contains(where: { $0.tolerates(taint) }) { return "untolerated taint \(taint)" }
        }
        if context.hasWorkloadTerms, let reason = context.rejectByWorkloadTerms(node.pointee.info.labels, workload) { return reason }
        if !context.spread.isEmpty, let reason = context.rejectBySpread(node.pointee.info.labels) { return reason }
        guard !policy.filters.isEmpty else { return nil }
        let state = node.pointee
        for filter in policy.filters {
            if let reason = filter.reject(workload, on: state, in: cluster) { return "\(filter.name): \(reason)" }
        }
        return nil
    }

    // MARK: - Scoring

    private mutating func choose(among feasible: [Int], _ workload: Workload, _ context: CycleContext, _ cluster: ClusterState) -> Int {
        cluster.nodes.withUnsafeBufferPointer { nodes in choose(among: feasible, workload, context, cluster, nodes) }
    }

    private mutating func choose(among feasible: [Int], _ workload: Workload, _ context: CycleContext, _ cluster: ClusterState,
                                 _ nodes: UnsafeBufferPointer<NodeState>) -> Int {
        var totals = [Int](repeating: 0, count: feasible.count)
        // Resources, by the strategy.
        let maxCount = feasible.reduce(0) { max($0, nodes[$1].workloads.count) }
        for (slot, index) in feasible.enumerated() {
            totals[slot] += Self.resourceWeight * resourceScore(nodes[index], context.requests, maxCount: maxCount)
        }
        // Preferred node affinity, normalised to the best node.
        if !workload.affinity.preferredNodeTerms.isEmpty {
            let raw = feasible.map { index in
                workload.affinity.preferredNodeTerms.reduce(0) { $0 + ($1.term.matches(nodes[index].info.labels) ? $1.weight : 0) }
            }
            add(normalised(raw), weight: Self.nodeAffinityWeight, to: &totals)
        }
        // Fewer untolerated PreferNoSchedule taints is better.
        let avoided = feasible.map { index in
            nodes[index].info.taints.filter { taint in
                taint.effect == .preferNoSchedule && !workload.tolerations.contains { $0.tolerates(taint) }
            }.count
        }
        if avoided.contains(where: { $0 > 0 }) { add(normalised(avoided, reverse: true), weight: Self.taintWeight, to: &totals) }
        // Preferred workload affinity and anti-affinity.
        if !workload.affinity.preferredWith.isEmpty || !workload.affinity.preferredAwayFrom.isEmpty {
            let raw = feasible.map { context.preferenceScore(nodes[$0], workload) }
            add(normalisedSigned(raw), weight: Self.workloadAffinityWeight, to: &totals)
        }
        // Soft spread: fewer matching workloads in the node's domains is better.
        if context.spread.contains(where: { $0.constraint.whenUnsatisfiable == .scheduleAnyway }) {
            let raw = feasible.map { context.softSpreadCount(nodes[$0]) }
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
    private func resourceScore(_ node: borrowing NodeState, _ requests: ResourceVector, maxCount: Int) -> Int {
        let allocatable = node.allocatable
        func fraction(_ used: Int64, _ total: Int64) -> Int64 { total > 0 ? min(100, used * 100 / total) : 100 }
        let after = node.requested + requests
        let cpu = fraction(after.milliCPU, allocatable.milliCPU)
        let memory = fraction(after.memory, allocatable.memory)
        switch policy.strategy {
        case .leastAllocated: return Int(((100 - cpu) + (100 - memory)) / 2)
        case .mostAllocated: return Int((cpu + memory) / 2)
        case .spread: return maxCount == 0 ? 100 : 100 - node.workloads.count * 100 / (maxCount + 1)
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

/// What one placement computes once for all nodes: requests, and the
/// workload counts per topology domain its spread and affinity terms need.
private struct CycleContext {
    struct Spread {
        var constraint: TopologySpreadConstraint
        /// Matching workloads per value of the topology key, over eligible nodes.
        var counts: [String: Int]
        var minimum: Int
    }

    let requests: ResourceVector
    let exclusiveCPUs: Int
    let selector: [String: String]
    let requiredNodeTerms: [LabelSelector]
    let hasWorkloadTerms: Bool
    let spread: [Spread]
    /// For each required "with" term, the domains holding a matching workload.
    let withDomains: [Set<String>]
    let awayDomains: [Set<String>]
    let preferredWith: [(Int, String, Set<String>)]
    let preferredAway: [(Int, String, Set<String>)]
    /// Domains (key, value) whose bound workloads keep this one away.
    let repelledDomains: Set<TopologyDomain>
    let workload: Workload

    init(_ workload: Workload, _ cluster: ClusterState) {
        self.workload = workload
        requests = workload.resources.effectiveRequests
        exclusiveCPUs = workload.exclusiveCPUCount
        selector = workload.nodeSelector
        requiredNodeTerms = workload.affinity.requiredNodeTerms
        let affinity = workload.affinity
        // Existing workloads whose required anti-affinity matches this one.
        var repelled = Set<TopologyDomain>()
        var anyRepelling = false
        // (Checked first: looping over the nodes for nothing would copy each.)
        if cluster.repellingCount > 0 {
            for node in cluster.nodes {
                for placed in node.workloads where !placed.requiredAwayFrom.isEmpty {
                    anyRepelling = true
                    for term in placed.requiredAwayFrom where term.selector.matches(workload.labels) {
                        if let value = node.info.labels[term.topologyKey] { repelled.insert(TopologyDomain(key: term.topologyKey, value: value)) }
                    }
                }
            }
        }
        repelledDomains = repelled
        hasWorkloadTerms = affinity.hasWorkloadTerms || anyRepelling
        func domains(_ term: WorkloadAffinityTerm) -> Set<String> {
            var found = Set<String>()
            for node in cluster.nodes {
                guard let value = node.info.labels[term.topologyKey], !found.contains(value) else { continue }
                if node.workloads.contains(where: { term.selector.matches($0.labels) }) { found.insert(value) }
            }
            return found
        }
        withDomains = affinity.requiredWith.map(domains)
        awayDomains = affinity.requiredAwayFrom.map(domains)
        preferredWith = affinity.preferredWith.map { ($0.weight, $0.term.topologyKey, domains($0.term)) }
        preferredAway = affinity.preferredAwayFrom.map { ($0.weight, $0.term.topologyKey, domains($0.term)) }
        let eligible = { (info: NodeInfo) in Self.eligible(info, workload.nodeSelector, workload.affinity.requiredNodeTerms) }
        spread = workload.topologySpread.map { constraint in
            var counts: [String: Int] = [:]
            cluster.nodes.withUnsafeBufferPointer { nodes in
                for index in nodes.indices where eligible(nodes[index].info) {
                    guard let value = nodes[index].info.labels[constraint.topologyKey] else { continue }
                    var matching = 0
                    for placed in nodes[index].workloads where constraint.selector.matches(placed.labels) { matching += 1 }
                    counts[value, default: 0] += matching
                }
            }
            return Spread(constraint: constraint, counts: counts, minimum: counts.values.min() ?? 0)
        }
    }

    @inline(__always)
    static func eligible(_ info: NodeInfo, _ selector: [String: String], _ terms: [LabelSelector]) -> Bool {
        for (key, value) in selector where info.labels[key] != value { return false }
        return terms.isEmpty || terms.contains { $0.matches(info.labels) }
    }

    @inline(__always)
    func nodeEligible(_ info: NodeInfo) -> Bool { Self.eligible(info, selector, requiredNodeTerms) }

    @inline(__always)
    func rejectByWorkloadTerms(_ labels: [String: String], _ workload: Workload) -> String? {
        for (term, found) in zip(workload.affinity.requiredWith, withDomains) {
            guard let value = labels[term.topologyKey], found.contains(value) || (found.isEmpty && term.selector.matches(workload.labels))
            else { return "workload affinity unmet" }
        }
        for (term, found) in zip(workload.affinity.requiredAwayFrom, awayDomains) {
            if let value = labels[term.topologyKey], found.contains(value) { return "workload anti-affinity" }
        }
        for domain in repelledDomains where labels[domain.key] == domain.value { return "anti-affinity of a running workload" }
        return nil
    }

    @inline(__always)
    func rejectBySpread(_ labels: [String: String]) -> String? {
        for item in spread where item.constraint.whenUnsatisfiable == .doNotSchedule {
            guard let value = labels[item.constraint.topologyKey] else { return "node lacks topology key \(item.constraint.topologyKey)" }
            let own = item.constraint.selector.matches(workload.labels) ? 1 : 0
            if (item.counts[value] ?? 0) + own - item.minimum > item.constraint.maxSkew { return "topology spread skew" }
        }
        return nil
    }

    func preferenceScore(_ node: borrowing NodeState, _ workload: Workload) -> Int {
        var score = 0
        for (weight, key, found) in preferredWith {
            if let value = node.info.labels[key], found.contains(value) { score += weight }
        }
        for (weight, key, found) in preferredAway {
            if let value = node.info.labels[key], found.contains(value) { score -= weight }
        }
        return score
    }

    @inline(__always)
    func softSpreadCount(_ node: borrowing NodeState) -> Int {
        var total = 0
        for item in spread where item.constraint.whenUnsatisfiable == .scheduleAnyway {
            total += node.info.labels[item.constraint.topologyKey].map { item.counts[$0] ?? 0 } ?? 0
        }
        return total
    }
}

private struct TopologyDomain: Hashable {
    var key: String
    var value: String
}

/// A small, fast, seedable random number generator (SplitMix64).
struct SplitMix: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
