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

/// The cluster as placement sees it: nodes and the workloads bound to them.
/// A value: placement works on it, and callers keep or drop the result.
public struct ClusterState: Sendable {
    public private(set) var nodes: [NodeState] = []
    private var nodeIndex: [String: Int] = [:]
    private var location: [String: Int] = [:]
    private var sequence = 0
    /// How many bound workloads carry required anti-affinity terms.
    public private(set) var repellingCount = 0

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
        nodes.append(NodeState(node))
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
        nodes[node].requested += requests
        nodes[node].freeExclusiveCPUs.removeAll { assignment.exclusiveCPUs.contains($0) }
        nodes[node].freeGPUs.removeAll { assignment.gpus.contains($0) }
        nodes[node].workloads.append(PlacedWorkload(
            name: workload.name, labels: workload.labels, priority: workload.priority, queue: workload.queue,
            requests: requests, assignment: assignment, requiredAwayFrom: workload.affinity.requiredAwayFrom,
            sequence: sequence))
        location[workload.name] = node
        if !workload.affinity.requiredAwayFrom.isEmpty { repellingCount += 1 }
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
        if !placed.requiredAwayFrom.isEmpty { repellingCount -= 1 }
        nodes[node].freeExclusiveCPUs = (nodes[node].freeExclusiveCPUs + placed.assignment.exclusiveCPUs).sorted()
        nodes[node].freeGPUs = (nodes[node].freeGPUs + placed.assignment.gpus).sorted()
        return placed
    }
}
