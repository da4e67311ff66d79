/// Why a node was ruled out for a workload.
enum Rejection: Hashable {
    case cpu, memory, pids, gpus, exclusiveCPUs, mismatch, affinityUnmet, antiAffinity, repelled, skew
    case lacksKey(String)
    case taint(Taint)
    case filter(String, String)

    var description: String {
        switch self {
        case .cpu: "insufficient cpu"
        case .memory: "insufficient memory"
        case .pids: "insufficient pids"
        case .gpus: "insufficient gpus"
        case .exclusiveCPUs: "insufficient exclusive cpus"
        case .mismatch: "node selector or affinity mismatch"
        case .affinityUnmet: "workload affinity unmet"
        case .antiAffinity: "workload anti-affinity"
        case .repelled: "anti-affinity of a running workload"
        case .skew: "topology spread skew"
        case .lacksKey(let key): "node lacks topology key \(key)"
        case .taint(let taint): "untolerated taint \(taint)"
        case .filter(let name, let reason): "\(name): \(reason)"
        }
    }
}

/// Rejections counted by reason, without hashing a string per node.
struct RejectionTally {
    private var fixed = [Int](repeating: 0, count: 10)
    private var other: [Rejection: Int] = [:]

    mutating func add(_ rejection: Rejection) {
        switch rejection {
        case .cpu: fixed[0] += 1
        case .memory: fixed[1] += 1
        case .pids: fixed[2] += 1
        case .gpus: fixed[3] += 1
        case .exclusiveCPUs: fixed[4] += 1
        case .mismatch: fixed[5] += 1
        case .affinityUnmet: fixed[6] += 1
        case .antiAffinity: fixed[7] += 1
        case .repelled: fixed[8] += 1
        case .skew: fixed[9] += 1
        default: other[rejection, default: 0] += 1
        }
    }

    var reasons: [String: Int] {
        let cases: [Rejection] = [.cpu, .memory, .pids, .gpus, .exclusiveCPUs, .mismatch, .affinityUnmet, .antiAffinity, .repelled, .skew]
        var reasons: [String: Int] = [:]
        for (rejection, count) in zip(cases, fixed) where count > 0 { reasons[rejection.description] = count }
        for (rejection, count) in other { reasons[rejection.description, default: 0] += count }
        return reasons
    }
}

/// The nodes grouped by the value of one label: each node's domain number,
/// or -1 when it lacks the label.
struct TopologyDomains {
    var ofNode: [Int32]
    var count: Int

    init(_ key: String, _ nodes: [NodeState]) {
        var numbers: [String: Int32] = [:]
        ofNode = nodes.map { node in
            guard let value = node.info.labels[key] else { return -1 }
            if let number = numbers[value] { return number }
            let number = Int32(numbers.count)
            numbers[value] = number
            return number
        }
        count = numbers.count
    }
}

/// What placement derives from node labels alone, kept while the
/// cluster's nodes stay the same: topology domains per key, and which
/// nodes each node selector allows.
struct DerivedFromNodes: Sendable {
    struct EligibilityKey: Hashable {
        var selector: [String: String]
        var terms: [LabelSelector]
    }

    private var token: UInt64?
    private var domains: [String: TopologyDomains] = [:]
    private var eligibility: [EligibilityKey: [Bool]] = [:]
    /// Beyond this many selectors remembered, the memory starts again.
    private static let limit = 256

    mutating func follow(_ cluster: ClusterState) {
        guard token != cluster.nodesToken else { return }
        token = cluster.nodesToken
        domains = [:]
        eligibility = [:]
    }

    mutating func domains(_ key: String, _ cluster: ClusterState) -> TopologyDomains {
        if let known = domains[key] { return known }
        let found = TopologyDomains(key, cluster.nodes)
        if domains.count >= Self.limit { domains = [:] }
        domains[key] = found
        return found
    }

    /// Which nodes allow `workload` by their labels; `nil` when all do.
    mutating func eligible(_ workload: Workload, _ cluster: ClusterState) -> [Bool]? {
        let key = EligibilityKey(selector: workload.nodeSelector, terms: workload.affinity.requiredNodeTerms)
        guard !key.selector.isEmpty || !key.terms.isEmpty else { return nil }
        if let known = eligibility[key] { return known }
        let found = cluster.nodes.map { node in
            key.selector.allSatisfy { node.info.labels[$0.key] == $0.value }
                && (key.terms.isEmpty || key.terms.contains { $0.matches(node.info.labels) })
        }
        if eligibility.count >= Self.limit { eligibility = [:] }
        eligibility[key] = found
        return found
    }
}

/// What one placement computes once for all nodes: requests, which nodes
/// the node selector allows, and the workload counts per topology domain
/// that its spread and affinity terms need.
struct CycleContext {
    struct Spread {
        var constraint: TopologySpreadConstraint
        var domainOf: [Int32]
        /// Matching workloads per domain, over eligible nodes.
        var counts: [Int]
        /// The lowest count among the domains of eligible nodes.
        var minimum: Int
        /// 1 when the workload itself matches the selector.
        var own: Int
    }

    struct Preference {
        /// Positive for affinity, negative for anti-affinity.
        var weight: Int
        var domainOf: [Int32]
        /// Whether a matching workload runs in each domain.
        var present: [Bool]
    }

    let requests: ResourceVector
    let exclusiveCPUs: Int
    /// Which nodes the node selector and required node affinity allow; `nil`: all.
    let eligible: [Bool]?
    /// Per node, why the workload terms rule it out; `nil` when none do.
    let blocked: [Rejection?]?
    let hardSpread: [Spread]
    let softSpread: [Spread]
    let preferred: [Preference]

    init(_ workload: Workload, _ cluster: ClusterState, _ derived: inout DerivedFromNodes) {
        requests = workload.resources.effectiveRequests
        exclusiveCPUs = workload.exclusiveCPUCount
        let eligible = derived.eligible(workload, cluster)
        self.eligible = eligible
        let affinity = workload.affinity
        let count = cluster.nodes.count

        func perNode(_ selector: LabelSelector) -> [Int32] {
            cluster.selectorCounts[selector]?.perNode ?? ClusterState.matching(selector, in: cluster.nodes)
        }
        /// Whether each domain of `domains` holds a workload matching `selector`.
        func presence(_ selector: LabelSelector, _ domains: TopologyDomains) -> [Bool] {
            var present = [Bool](repeating: false, count: domains.count)
            for (node, matching) in perNode(selector).enumerated() where matching > 0 && domains.ofNode[node] >= 0 {
                present[Int(domains.ofNode[node])] = true
            }
            return present
        }

        // Required workload terms, and the required anti-affinity of bound
        // workloads that this one matches.
        let repelling = cluster.repellers.filter { $0.key.selector.matches(workload.labels) }
        if !affinity.requiredWith.isEmpty || !affinity.requiredAwayFrom.isEmpty || !repelling.isEmpty {
            var blocked = [Rejection?](repeating: nil, count: count)
            for term in affinity.requiredWith {
                let domains = derived.domains(term.topologyKey, cluster)
                let present = presence(term.selector, domains)
                // The first of a group may go anywhere when it matches its own term.
                let anywhere = !present.contains(true) && term.selector.matches(workload.labels)
                for node in 0 ..< count where blocked[node] == nil {
                    let domain = domains.ofNode[node]
                    if domain < 0 || !(anywhere || present[Int(domain)]) { blocked[node] = .affinityUnmet }
                }
            }
            for term in affinity.requiredAwayFrom {
                let domains = derived.domains(term.topologyKey, cluster)
                let present = presence(term.selector, domains)
                for node in 0 ..< count where blocked[node] == nil {
                    let domain = domains.ofNode[node]
                    if domain >= 0 && present[Int(domain)] { blocked[node] = .antiAffinity }
                }
            }
            for (term, holders) in repelling {
                let domains = derived.domains(term.topologyKey, cluster)
                var repelled = [Bool](repeating: false, count: domains.count)
                for holder in holders.keys where domains.ofNode[holder] >= 0 { repelled[Int(domains.ofNode[holder])] = true }
                for node in 0 ..< count where blocked[node] == nil {
                    let domain = domains.ofNode[node]
                    if domain >= 0 && repelled[Int(domain)] { blocked[node] = .repelled }
                }
            }
            self.blocked = blocked
        } else {
            blocked = nil
        }

        var preferred: [Preference] = []
        for (weight, term) in affinity.preferredWith.map({ ($0.weight, $0.term) }) + affinity.preferredAwayFrom.map({ (-$0.weight, $0.term) }) {
            let domains = derived.domains(term.topologyKey, cluster)
            preferred.append(Preference(weight: weight, domainOf: domains.ofNode, present: presence(term.selector, domains)))
        }
        self.preferred = preferred

        var hardSpread: [Spread] = [], softSpread: [Spread] = []
        for constraint in workload.topologySpread {
            let domains = derived.domains(constraint.topologyKey, cluster)
            let matching = perNode(constraint.selector)
            var counts = [Int](repeating: 0, count: domains.count)
            var seen = [Bool](repeating: false, count: domains.count)
            for node in 0 ..< count where eligible?[node] ?? true {
                let domain = Int(domains.ofNode[node])
                guard domain >= 0 else { continue }
                seen[domain] = true
                counts[domain] += Int(matching[node])
            }
            var minimum: Int?
            for domain in counts.indices where seen[domain] { minimum = min(minimum ?? .max, counts[domain]) }
            let spread = Spread(constraint: constraint, domainOf: domains.ofNode, counts: counts, minimum: minimum ?? 0,
                                own: constraint.selector.matches(workload.labels) ? 1 : 0)
            if constraint.whenUnsatisfiable == .doNotSchedule { hardSpread.append(spread) } else { softSpread.append(spread) }
        }
        self.hardSpread = hardSpread
        self.softSpread = softSpread
    }

    func preferenceScore(at node: Int) -> Int {
        var score = 0
        for preference in preferred {
            let domain = preference.domainOf[node]
            if domain >= 0 && preference.present[Int(domain)] { score += preference.weight }
        }
        return score
    }

    @inline(__always)
    func softSpreadCount(at node: Int) -> Int {
        var total = 0
        for spread in softSpread {
            let domain = spread.domainOf[node]
            if domain >= 0 { total += spread.counts[Int(domain)] }
        }
        return total
    }
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
