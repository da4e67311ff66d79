/// Amounts of the resources the scheduler accounts for: CPU in millicores,
/// memory in bytes, process ids, and devices (GPUs) by count.
///
/// A field that is `nil` is not specified, which is different from zero for
/// requests and limits (Kubernetes defaults a missing request to the limit).
public struct ResourceAmounts: Hashable, Sendable, Codable, CustomStringConvertible {
    /// CPU in thousandths of a core.
    public var milliCPU: Int64?
    /// Memory in bytes.
    public var memory: Int64?
    /// Process ids.
    public var pids: Int64?
    /// Whole devices (GPUs).
    public var gpus: Int?

    /// Amounts; all unspecified by default.
    public init(milliCPU: Int64? = nil, memory: Int64? = nil, pids: Int64? = nil, gpus: Int? = nil) {
        self.milliCPU = milliCPU
        self.memory = memory
        self.pids = pids
        self.gpus = gpus
    }

    /// Amounts in the units people write: `cpus: 0.5`, `memory: 64 << 20`.
    public static func cpus(_ cores: Double? = nil, memory: Int64? = nil, pids: Int64? = nil, gpus: Int? = nil) -> ResourceAmounts {
        ResourceAmounts(milliCPU: cores.map { Int64(($0 * 1000).rounded()) }, memory: memory, pids: pids, gpus: gpus)
    }

    /// Whether nothing is specified.
    public var isEmpty: Bool { milliCPU == nil && memory == nil && pids == nil && gpus == nil }

    public var description: String {
        var parts: [String] = []
        if let milliCPU { parts.append("cpu=\(ResourceQuantity(milliValue: milliCPU))") }
        if let memory { parts.append("memory=\(memory)") }
        if let pids { parts.append("pids=\(pids)") }
        if let gpus { parts.append("gpus=\(gpus)") }
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }
}

/// What a workload asks to be guaranteed (requests, used for placement) and
/// the most it may use (limits, enforced by cgroups).
public struct ResourceRequirements: Hashable, Sendable, Codable {
    /// The amounts placement reserves on a node.
    public var requests: ResourceAmounts
    /// The amounts the runtime enforces.
    public var limits: ResourceAmounts

    /// Requirements; a request left out defaults to its limit, as in Kubernetes.
    public init(requests: ResourceAmounts = ResourceAmounts(), limits: ResourceAmounts = ResourceAmounts()) {
        self.requests = requests
        self.limits = limits
    }

    /// The requests placement uses: each missing request is its limit, or zero.
    public var effectiveRequests: ResourceVector {
        ResourceVector(
            milliCPU: requests.milliCPU ?? limits.milliCPU ?? 0,
            memory: requests.memory ?? limits.memory ?? 0,
            pids: requests.pids ?? limits.pids ?? 0,
            gpus: requests.gpus ?? limits.gpus ?? 0
        )
    }

    /// The quality-of-service class, as Kubernetes derives it from CPU and memory.
    public var qosClass: QoSClass {
        let request = effectiveRequests
        if requests.milliCPU == nil, requests.memory == nil, limits.milliCPU == nil, limits.memory == nil {
            return .bestEffort
        }
        if let cpuLimit = limits.milliCPU, let memoryLimit = limits.memory,
           request.milliCPU == cpuLimit, request.memory == memoryLimit {
            return .guaranteed
        }
        return .burstable
    }

    /// Checks that no request exceeds its limit.
    ///
    /// - Throws: ``SchedulerError`` naming the resource and `what`.
    public func validate(_ what: String) throws {
        let request = effectiveRequests
        let pairs: [(String, Int64, Int64?)] = [
            ("cpu", request.milliCPU, limits.milliCPU), ("memory", request.memory, limits.memory),
            ("pids", request.pids, limits.pids), ("gpus", Int64(request.gpus), limits.gpus.map(Int64.init)),
        ]
        for (name, requested, limit) in pairs {
            if requested < 0 { throw SchedulerError(.invalidSpec, "\(what): the \(name) request is negative") }
            if let limit, requested > limit {
                throw SchedulerError(.invalidSpec, "\(what): the \(name) request (\(requested)) is above its limit (\(limit))")
            }
        }
    }
}

/// Fully specified amounts, for arithmetic on node capacity.
public struct ResourceVector: Hashable, Sendable, CustomStringConvertible {
    /// CPU in thousandths of a core.
    public var milliCPU: Int64
    /// Memory in bytes.
    public var memory: Int64
    /// Process ids.
    public var pids: Int64
    /// Whole devices (GPUs).
    public var gpus: Int

    /// A vector; zero by default.
    public init(milliCPU: Int64 = 0, memory: Int64 = 0, pids: Int64 = 0, gpus: Int = 0) {
        self.milliCPU = milliCPU
        self.memory = memory
        self.pids = pids
        self.gpus = gpus
    }

    /// Nothing.
    public static let zero = ResourceVector()

    /// Whether every amount of `other` fits within this one.
    @inlinable public func covers(_ other: ResourceVector) -> Bool {
        other.milliCPU <= milliCPU && other.memory <= memory && other.pids <= pids && other.gpus <= gpus
    }

    @inlinable public static func + (lhs: ResourceVector, rhs: ResourceVector) -> ResourceVector {
        ResourceVector(milliCPU: lhs.milliCPU + rhs.milliCPU, memory: lhs.memory + rhs.memory,
                       pids: lhs.pids + rhs.pids, gpus: lhs.gpus + rhs.gpus)
    }

    @inlinable public static func - (lhs: ResourceVector, rhs: ResourceVector) -> ResourceVector {
        ResourceVector(milliCPU: lhs.milliCPU - rhs.milliCPU, memory: lhs.memory - rhs.memory,
                       pids: lhs.pids - rhs.pids, gpus: lhs.gpus - rhs.gpus)
    }

    @inlinable public static func += (lhs: inout ResourceVector, rhs: ResourceVector) { lhs = lhs + rhs }
    @inlinable public static func -= (lhs: inout ResourceVector, rhs: ResourceVector) { lhs = lhs - rhs }

    /// Each amount no lower than zero.
    public var clampedAtZero: ResourceVector {
        ResourceVector(milliCPU: max(0, milliCPU), memory: max(0, memory), pids: max(0, pids), gpus: max(0, gpus))
    }

    public var description: String {
        "cpu=\(ResourceQuantity(milliValue: milliCPU)),memory=\(memory),pids=\(pids),gpus=\(gpus)"
    }
}

/// Kubernetes' quality-of-service classes, which decide who the kernel's OOM
/// killer picks first.
public enum QoSClass: String, Hashable, Sendable, Codable, CaseIterable {
    /// CPU and memory limits set, and requests equal to them.
    case guaranteed = "Guaranteed"
    /// Some request or limit set, but not guaranteed.
    case burstable = "Burstable"
    /// No CPU or memory request or limit.
    case bestEffort = "BestEffort"

    /// The `oom_score_adj` the kubelet gives a container of this class:
    /// −997 guaranteed, 1000 best effort, and for burstable
    /// `1000 − 1000 × request / capacity` in whole numbers, kept within
    /// 3…999 (so that it stays above guaranteed and below best effort).
    ///
    /// - Parameters:
    ///   - memoryRequest: the container's memory request in bytes.
    ///   - memoryCapacity: the node's memory capacity in bytes.
    public func oomScoreAdjustment(memoryRequest: Int64, memoryCapacity: Int64) -> Int {
        switch self {
        case .guaranteed: return -997
        case .bestEffort: return 1000
        case .burstable:
            guard memoryCapacity > 0 else { return 999 }
            let (product, overflow) = memoryRequest.multipliedReportingOverflow(by: 1000)
            let score = overflow ? 0 : 1000 - product / memoryCapacity
            return Int(min(max(score, 3), 999))
        }
    }
}
