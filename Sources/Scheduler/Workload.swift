public import Runtime

/// Something to place and run: a container with resource requirements,
/// a priority, an admission queue and placement constraints.
public struct Workload: Sendable {
    /// A name unique among the cluster's workloads.
    public var name: String
    /// Labels, matched by other workloads' affinity and spread constraints.
    public var labels: [String: String]
    public var resources: ResourceRequirements
    /// Higher runs first and may preempt lower.
    public var priority: Int
    /// Whether this workload may stop lower-priority ones to make room.
    public var preemption: PreemptionPolicy
    /// The admission queue it waits in; queues share the cluster fairly.
    public var queue: String
    /// Labels a node must carry, all of them.
    public var nodeSelector: [String: String]
    public var tolerations: [Toleration]
    public var affinity: Affinity
    public var topologySpread: [TopologySpreadConstraint]
    /// Asks for CPUs of its own (a cpuset) when it is guaranteed and
    /// requests whole CPUs, as the kubelet's static CPU manager policy does.
    public var exclusiveCPUs: Bool
    /// What runs, on nodes that run containers. Simulated nodes ignore it.
    public var container: ContainerSpec?
    /// How long a stop (for preemption, a deadline) waits before SIGKILL.
    public var stopGrace: Duration

    /// A workload in the `default` queue at priority 0.
    public init(name: String, container: ContainerSpec? = nil, resources: ResourceRequirements = ResourceRequirements(),
                labels: [String: String] = [:], priority: Int = 0, preemption: PreemptionPolicy = .preemptLowerPriority,
                queue: String = "default", nodeSelector: [String: String] = [:], tolerations: [Toleration] = [],
                affinity: Affinity = Affinity(), topologySpread: [TopologySpreadConstraint] = [],
                exclusiveCPUs: Bool = false, stopGrace: Duration = .seconds(10)) {
        self.name = name
        self.container = container
        self.resources = resources
        self.labels = labels
        self.priority = priority
        self.preemption = preemption
        self.queue = queue
        self.nodeSelector = nodeSelector
        self.tolerations = tolerations
        self.affinity = affinity
        self.topologySpread = topologySpread
        self.exclusiveCPUs = exclusiveCPUs
        self.stopGrace = stopGrace
    }

    /// The number of exclusive CPUs it gets: its CPU request in whole CPUs
    /// when it asked for them, is guaranteed and requests a whole number.
    public var exclusiveCPUCount: Int {
        guard exclusiveCPUs, resources.qosClass == .guaranteed else { return 0 }
        let milli = resources.effectiveRequests.milliCPU
        return milli > 0 && milli % 1000 == 0 ? Int(milli / 1000) : 0
    }
}

/// Whether a workload may preempt others.
public enum PreemptionPolicy: String, Hashable, Sendable, Codable {
    /// Lower-priority workloads may be stopped to make room.
    case preemptLowerPriority = "PreemptLowerPriority"
    /// It waits instead.
    case never = "Never"
}

/// A test of one label: `key in (values)`, `key notin (values)`, `key`,
/// `!key`, or a numeric comparison.
public struct LabelRequirement: Hashable, Sendable, Codable {
    public enum Operator: String, Hashable, Sendable, Codable {
        case `in` = "In", notIn = "NotIn", exists = "Exists", doesNotExist = "DoesNotExist"
        /// The value, as an integer, is greater (node labels only in Kubernetes).
        case greaterThan = "Gt"
        /// The value, as an integer, is lower.
        case lessThan = "Lt"
    }

    public var key: String
    public var `operator`: Operator
    public var values: [String]

    /// A requirement.
    public init(_ key: String, _ operator: Operator, _ values: [String] = []) {
        self.key = key
        self.operator = `operator`
        self.values = values
    }

    /// Whether `labels` satisfy it.
    @inlinable public func matches(_ labels: [String: String]) -> Bool {
        let value = labels[key]
        switch `operator` {
        case .in: return value.map { values.contains($0) } ?? false
        case .notIn: return value.map { !values.contains($0) } ?? true
        case .exists: return value != nil
        case .doesNotExist: return value == nil
        case .greaterThan, .lessThan:
            guard let value, let number = Int(value), values.count == 1, let bound = Int(values[0]) else { return false }
            return `operator` == .greaterThan ? number > bound : number < bound
        }
    }
}

/// A conjunction of label requirements; the empty selector matches everything.
public struct LabelSelector: Hashable, Sendable, Codable {
    public var requirements: [LabelRequirement]

    /// A selector from requirements.
    public init(_ requirements: [LabelRequirement] = []) { self.requirements = requirements }

    /// A selector of equalities, as `matchLabels`.
    public init(matching labels: [String: String]) {
        requirements = labels.sorted { $0.key < $1.key }.map { LabelRequirement($0.key, .in, [$0.value]) }
    }

    /// Whether `labels` satisfy every requirement.
    @inlinable public func matches(_ labels: [String: String]) -> Bool {
        for requirement in requirements where !requirement.matches(labels) { return false }
        return true
    }
}

/// A preference with a weight (1…100) added to a node's score when it holds.
public struct Weighted<Term: Hashable & Sendable>: Hashable, Sendable {
    public var weight: Int
    public var term: Term

    /// A weighted term.
    public init(weight: Int, _ term: Term) {
        self.weight = weight
        self.term = term
    }
}

/// "With (or away from) workloads matching `selector` in the same topology
/// domain", the domain being the nodes sharing the value of `topologyKey`.
public struct WorkloadAffinityTerm: Hashable, Sendable {
    public var selector: LabelSelector
    public var topologyKey: String

    /// A term.
    public init(selector: LabelSelector, topologyKey: String = NodeInfo.hostnameLabel) {
        self.selector = selector
        self.topologyKey = topologyKey
    }
}

/// Where a workload must or would rather run, relative to node labels and
/// to other workloads.
public struct Affinity: Hashable, Sendable {
    /// Node selector terms, any one of which must hold (empty: any node).
    public var requiredNodeTerms: [LabelSelector]
    public var preferredNodeTerms: [Weighted<LabelSelector>]
    /// Each term must hold: some matching workload runs in the domain.
    public var requiredWith: [WorkloadAffinityTerm]
    public var preferredWith: [Weighted<WorkloadAffinityTerm>]
    /// Each term must hold: no matching workload runs in the domain.
    public var requiredAwayFrom: [WorkloadAffinityTerm]
    public var preferredAwayFrom: [Weighted<WorkloadAffinityTerm>]

    /// Constraints; none by default.
    public init(requiredNodeTerms: [LabelSelector] = [], preferredNodeTerms: [Weighted<LabelSelector>] = [],
                requiredWith: [WorkloadAffinityTerm] = [], preferredWith: [Weighted<WorkloadAffinityTerm>] = [],
                requiredAwayFrom: [WorkloadAffinityTerm] = [], preferredAwayFrom: [Weighted<WorkloadAffinityTerm>] = []) {
        self.requiredNodeTerms = requiredNodeTerms
        self.preferredNodeTerms = preferredNodeTerms
        self.requiredWith = requiredWith
        self.preferredWith = preferredWith
        self.requiredAwayFrom = requiredAwayFrom
        self.preferredAwayFrom = preferredAwayFrom
    }

    /// Whether any workload-to-workload term is present.
    public var hasWorkloadTerms: Bool {
        !requiredWith.isEmpty || !preferredWith.isEmpty || !requiredAwayFrom.isEmpty || !preferredAwayFrom.isEmpty
    }
}

/// Keeps matching workloads evenly spread over topology domains: placing
/// this one must not make the busiest domain exceed the emptiest by more
/// than `maxSkew`.
public struct TopologySpreadConstraint: Hashable, Sendable {
    public enum Unsatisfiable: String, Hashable, Sendable {
        /// Nodes that would break the skew are filtered out.
        case doNotSchedule = "DoNotSchedule"
        /// They are scored lower instead.
        case scheduleAnyway = "ScheduleAnyway"
    }

    public var maxSkew: Int
    public var topologyKey: String
    public var whenUnsatisfiable: Unsatisfiable
    /// The workloads counted, usually the workload's own kind.
    public var selector: LabelSelector

    /// A constraint.
    public init(maxSkew: Int = 1, topologyKey: String, whenUnsatisfiable: Unsatisfiable = .doNotSchedule, selector: LabelSelector) {
        self.maxSkew = maxSkew
        self.topologyKey = topologyKey
        self.whenUnsatisfiable = whenUnsatisfiable
        self.selector = selector
    }
}
