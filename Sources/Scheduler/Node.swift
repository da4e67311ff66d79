/// A taint keeps workloads off a node unless they tolerate it.
public struct Taint: Hashable, Sendable, Codable, CustomStringConvertible {
    /// What a taint does to workloads that do not tolerate it.
    public enum Effect: String, Hashable, Sendable, Codable {
        /// New workloads are not placed on the node.
        case noSchedule = "NoSchedule"
        /// Placement avoids the node when it can.
        case preferNoSchedule = "PreferNoSchedule"
        /// New workloads are not placed, and running ones that do not
        /// tolerate it are evicted.
        case noExecute = "NoExecute"
    }

    public var key: String
    public var value: String
    public var effect: Effect

    /// A taint `key=value:effect`.
    public init(key: String, value: String = "", effect: Effect) {
        self.key = key
        self.value = value
        self.effect = effect
    }

    public var description: String { value.isEmpty ? "\(key):\(effect.rawValue)" : "\(key)=\(value):\(effect.rawValue)" }
}

/// A workload's permission to run on nodes carrying a matching taint.
public struct Toleration: Hashable, Sendable, Codable {
    /// How the key and value are compared.
    public enum Operator: String, Hashable, Sendable, Codable {
        /// The key and the value match.
        case equal = "Equal"
        /// The key matches, whatever the value; with no key, every taint.
        case exists = "Exists"
    }

    /// The taint key; `nil` with `.exists` tolerates every taint.
    public var key: String?
    public var `operator`: Operator
    public var value: String
    /// The effect tolerated; `nil` tolerates all effects.
    public var effect: Taint.Effect?

    /// A toleration.
    public init(key: String?, operator: Operator = .equal, value: String = "", effect: Taint.Effect? = nil) {
        self.key = key
        self.operator = `operator`
        self.value = value
        self.effect = effect
    }

    /// Whether this toleration covers `taint`.
    public func tolerates(_ taint: Taint) -> Bool {
        if let effect, effect != taint.effect { return false }
        guard let key else { return `operator` == .exists }
        guard key == taint.key else { return false }
        return `operator` == .exists || value == taint.value
    }
}

/// What a node offers, as placement sees it: a name, labels (topology
/// domains among them), taints, and allocatable resources — its capacity
/// minus what is reserved for the host.
public struct NodeInfo: Hashable, Sendable {
    /// The label giving a node's name, as a topology key.
    public static let hostnameLabel = "kubernetes.io/hostname"

    /// The node's name, unique in its cluster.
    public var name: String
    /// Labels, used by selectors, affinity and topology spread. The
    /// hostname label is added when missing.
    public var labels: [String: String]
    public var taints: [Taint]
    /// Everything the node has.
    public var capacity: ResourceVector
    /// What is kept for the host and never given to workloads.
    public var reserved: ResourceVector
    /// CPU numbers that may be given exclusively to guaranteed workloads
    /// with whole CPUs; empty when the node offers none.
    public var exclusiveCPUs: [Int]
    /// Device (GPU) indices.
    public var gpuIndices: [Int]

    /// A node.
    public init(name: String, labels: [String: String] = [:], taints: [Taint] = [], capacity: ResourceVector,
                reserved: ResourceVector = .zero, exclusiveCPUs: [Int] = [], gpuIndices: [Int]? = nil) {
        self.name = name
        var labels = labels
        if labels[Self.hostnameLabel] == nil { labels[Self.hostnameLabel] = name }
        self.labels = labels
        self.taints = taints
        self.capacity = capacity
        self.reserved = reserved
        self.exclusiveCPUs = exclusiveCPUs
        self.gpuIndices = gpuIndices ?? Array(0..<capacity.gpus)
    }

    /// What workloads may request in total.
    public var allocatable: ResourceVector { (capacity - reserved).clampedAtZero }
}

/// A place workloads run. Placement reads ``info``; ``launch(_:assignment:)``
/// starts a placed workload there. ``LocalNode`` is this host,
/// ``SimulatedNode`` a model for tests and capacity planning; tooling can
/// provide its own.
public protocol Node: Sendable {
    /// What the node offers.
    var info: NodeInfo { get }

    /// Starts `workload` with the resources placement assigned it.
    ///
    /// - Returns: the running workload, to wait for or stop.
    func launch(_ workload: Workload, assignment: Assignment) async throws -> any RunningWorkload
}

/// A workload a ``Node`` started.
public protocol RunningWorkload: Sendable {
    /// Waits until it ends.
    func wait() async throws -> WorkloadExit
    /// Asks it to stop: its stop signal, then SIGKILL after `grace`.
    func stop(grace: Duration) async throws
}

/// How a workload ended.
public struct WorkloadExit: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The exit status: the process's code, or 128 plus a signal number.
    public var status: Int32
    /// Why, when not a plain exit: `oomKilled`, `timedOut`, `stopped`, `preempted`.
    public var reason: String?

    /// An exit.
    public init(status: Int32, reason: String? = nil) {
        self.status = status
        self.reason = reason
    }

    /// Whether it succeeded.
    public var succeeded: Bool { status == 0 }

    public var description: String { reason.map { "status \(status) (\($0))" } ?? "status \(status)" }
}

/// What placement gave a workload on its node.
public struct Assignment: Hashable, Sendable {
    /// The node's name.
    public var node: String
    /// The CPUs given to it alone (the cpuset), when it qualified.
    public var exclusiveCPUs: [Int]
    /// The devices (GPU indices) given to it.
    public var gpus: [Int]
    /// The `oom_score_adj` for its quality-of-service class.
    public var oomScoreAdjustment: Int

    /// An assignment.
    public init(node: String, exclusiveCPUs: [Int] = [], gpus: [Int] = [], oomScoreAdjustment: Int = 0) {
        self.node = node
        self.exclusiveCPUs = exclusiveCPUs
        self.gpus = gpus
        self.oomScoreAdjustment = oomScoreAdjustment
    }
}
