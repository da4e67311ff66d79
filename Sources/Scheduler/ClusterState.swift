/// A workload as placement remembers it once bound to a node.
public struct PlacedWorkload: Hashable, Sendable {
    public var name: String
    public var labels: [String: String]
    public var priority: Int
    public var queue: String
    public var requests: ResourceVector
    public var assignment: Assignment
    /// The workload's terms that keep others away, checked against newcomers.
    public var requiredAwayFrom: [WorkloadAffinityTerm]
    /// Binding order in the cluster: higher is newer.
    public var sequence: Int
    /// The selectors of its spread constraints and workload affinity terms,
    /// whose matching workloads the cluster counts per node while it is bound.
    var countedSelectors: [LabelSelector]
}

/// One node's state in a ``ClusterState``: what it offers and what is
/// bound to it.
public struct NodeState: Sendable {
    public let info: NodeInfo
    /// What workloads may request in total.
    public let allocatable: ResourceVector
    /// The sum of the requests of the workloads bound here.
    public internal(set) var requested: ResourceVector = .zero
    public internal(set) var workloads: [PlacedWorkload] = []
    /// Exclusive CPUs not given to anyone, lowest first.
    public internal(set) var freeExclusiveCPUs: [Int]
    /// Devices not given to anyone, lowest first.
    public internal(set) var freeGPUs: [Int]

    init(_ info: NodeInfo) {
        self.info = info
        allocatable = info.allocatable
        freeExclusiveCPUs = info.exclusiveCPUs.sorted()
        freeGPUs = info.gpuIndices.sorted()
    }

    /// What is still free.
    public var free: ResourceVector { allocatable - requested }
}

/// What placement reads of every node on every placement, kept flat so
/// that a scan over the nodes touches no reference-counted storage.
struct NodeSummary {
    var allocatable: ResourceVector
    var free: ResourceVector
    var freeGPUs: Int
    var freeExclusiveCPUs: Int
    var exclusiveCPUs: Int
    var workloads: Int
    /// Whether the node carries `NoSchedule` or `NoExecute` taints.
    var hardTaints: Bool
    /// Whether it carries `PreferNoSchedule` taints.
    var softTaints: Bool
}

/// The cluster as placement sees it: nodes and the workloads bound to them.
/// A value: placement works on it, and callers keep or drop the result.
public struct ClusterState: Sendable {
    public private(set) var nodes: [NodeState] = []
    private(set) var summaries: [NodeSummary] = []
    /// Changes whenever the set of nodes does, so that what was derived
    /// from node labels can be kept while it holds.
    private(set) var nodesToken: UInt64 = 0
    /// For each selector counted, how many bound workloads need it and how
    /// many matching workloads each node holds.
    private(set) var selectorCounts: [LabelSelector: SelectorCounts] = [:]
    /// For each required anti-affinity term of a bound workload, how many
    /// such workloads each node holds.
    private(set) var repellers: [WorkloadAffinityTerm: [Int: Int]] = [:]
    private var nodeIndex: [String: Int] = [:]
    private var location: [String: Int] = [:]
    private var sequence = 0

    struct SelectorCounts {
        var users: Int
        var perNode: [Int32]
    }

    /// A cluster of `nodes`.
    ///
    /// - Throws: ``SchedulerError`` when two nodes share a name.
    public init(nodes: [NodeInfo] = []) throws {
        for node in nodes { try add(node) }
    }

    /// Adds a node.
    ///
    /// - Throws: ``SchedulerError`` when a node of that name exists.
    public mutating func add(_ node: NodeInfo) throws {
        guard nodeIndex[node.name] == nil else {
            throw SchedulerError(.invalidSpec, "a node named \"\(node.name)\" is in the cluster already")
        }
        nodeIndex[node.name] = nodes.count
        let state = NodeState(node)
        nodes.append(state)
        summaries.append(NodeSummary(
            allocatable: state.allocatable, free: state.allocatable, freeGPUs: state.freeGPUs.count,
            freeExclusiveCPUs: state.freeExclusiveCPUs.count, exclusiveCPUs: state.freeExclusiveCPUs.count, workloads: 0,
            hardTaints: node.taints.contains { $0.effect != .preferNoSchedule },
            softTaints: node.taints.contains { $0.effect == .preferNoSchedule }))
        // (Keys first: mutating the dictionary while iterating it would copy it.)
        for selector in Array(selectorCounts.keys) { selectorCounts[selector]!.perNode.append(0) }
        var random = SystemRandomNumberGenerator()
        nodesToken = random.next()
    }

    /// The index of the node named `name`.
    public func index(of name: String) -> Int? { nodeIndex[name] }

    /// The node a workload is bound to.
    public func node(of workload: String) -> Int? { location[workload] }

    /// The workload named `name`, if bound.
    public func placed(_ name: String) -> PlacedWorkload? {
        guard let node = location[name] else { return nil }
        return nodes[node].workloads.first { $0.name == name }
    }

    /// How many workloads are bound.
    public var boundCount: Int { location.count }

    /// Whether some node could hold `requests` and `exclusiveCPUs` were it empty.
    public func canEverFit(_ requests: ResourceVector, exclusiveCPUs: Int = 0) -> Bool {
        summaries.contains { $0.allocatable.covers(requests) && $0.exclusiveCPUs >= exclusiveCPUs }
    }

    /// Binds `workload` to a node, taking its requests and assignment.
    ///
    /// - Throws: ``SchedulerError`` when it is bound already or does not fit.
    public mutating func bind(_ workload: Workload, to node: Int, assignment: Assignment) throws {
        guard location[workload.name] == nil else {
            throw SchedulerError(.invalidSpec, "workload \"\(workload.name)\" is bound already")
        }
        let requests = workload.resources.effectiveRequests
        guard nodes[node].free.covers(requests) else {
            throw SchedulerError(.unschedulable, "workload \"\(workload.name)\" does not fit on node \"\(nodes[node].info.name)\"")
        }
        sequence += 1
        // Counting starts before the workload joins its node: it is counted below.
        let counted = Self.countedSelectors(of: workload)
        for selector in counted { startCounting(selector) }
        nodes[node].requested += requests
        nodes[node].freeExclusiveCPUs.removeAll { assignment.exclusiveCPUs.contains($0) }
        nodes[node].freeGPUs.removeAll { assignment.gpus.contains($0) }
        nodes[node].workloads.append(PlacedWorkload(
            name: workload.name, labels: workload.labels, priority: workload.priority, queue: workload.queue,
            requests: requests, assignment: assignment, requiredAwayFrom: workload.affinity.requiredAwayFrom,
            sequence: sequence, countedSelectors: counted))
        summarise(node)
        location[workload.name] = node
        count(workload.labels, on: node, by: 1)
        for term in workload.affinity.requiredAwayFrom { repellers[term, default: [:]][node, default: 0] += 1 }
    }

    /// Unbinds a workload, freeing what it held.
    ///
    /// - Returns: what it held, or `nil` when it was not bound.
    @discardableResult
    public mutating func release(_ name: String) -> PlacedWorkload? {
        guard let node = location.removeValue(forKey: name),
              let at = nodes[node].workloads.firstIndex(where: { $0.name == name }) else { return nil }
        let placed = nodes[node].workloads.remove(at: at)
        nodes[node].requested -= placed.requests
        nodes[node].freeExclusiveCPUs = (nodes[node].freeExclusiveCPUs + placed.assignment.exclusiveCPUs).sorted()
        nodes[node].freeGPUs = (nodes[node].freeGPUs + placed.assignment.gpus).sorted()
        summarise(node)
        count(placed.labels, on: node, by: -1)
        for selector in placed.countedSelectors {
            selectorCounts[selector]!.users -= 1
            if selectorCounts[selector]!.users == 0 { selectorCounts[selector] = nil }
        }
        for term in placed.requiredAwayFrom {
            repellers[term]![node]! -= 1
            if repellers[term]![node] == 0 { repellers[term]![node] = nil }
            if repellers[term]!.isEmpty { repellers[term] = nil }
        }
        return placed
    }

    /// The selectors whose matches the cluster counts while `workload` is bound.
    private static func countedSelectors(of workload: Workload) -> [LabelSelector] {
        let affinity = workload.affinity
        var selectors = workload.topologySpread.map(\.selector)
        selectors += (affinity.requiredWith + affinity.requiredAwayFrom).map(\.selector)
        selectors += (affinity.preferredWith + affinity.preferredAwayFrom).map(\.term.selector)
        var seen = Set<LabelSelector>()
        return selectors.filter { seen.insert($0).inserted }
    }

    private mutating func startCounting(_ selector: LabelSelector) {
        if selectorCounts[selector] != nil {
            selectorCounts[selector]!.users += 1
            return
        }
        selectorCounts[selector] = SelectorCounts(users: 1, perNode: Self.matching(selector, in: nodes))
    }

    /// How many workloads matching `selector` each of `nodes` holds.
    static func matching(_ selector: LabelSelector, in nodes: [NodeState]) -> [Int32] {
        nodes.withUnsafeBufferPointer { nodes in
            nodes.indices.map { index in
                var matching: Int32 = 0
                for placed in nodes[index].workloads where selector.matches(placed.labels) { matching += 1 }
                return matching
            }
        }
    }

    private mutating func count(_ labels: [String: String], on node: Int, by change: Int32) {
        let matched = selectorCounts.keys.filter { $0.matches(labels) }
        for selector in matched { selectorCounts[selector]!.perNode[node] += change }
    }

    private mutating func summarise(_ node: Int) {
        summaries[node].free = nodes[node].free
        summaries[node].freeGPUs = nodes[node].freeGPUs.count
        summaries[node].freeExclusiveCPUs = nodes[node].freeExclusiveCPUs.count
        summaries[node].workloads = nodes[node].workloads.count
    }
}
