import Testing
@testable import Scheduler

private let gib: Int64 = 1 << 30

private func node(_ name: String, cpus: Int64 = 4, memory: Int64 = 8, labels: [String: String] = [:],
                  taints: [Taint] = [], exclusiveCPUs: [Int] = [], gpus: Int = 0) -> NodeInfo {
    NodeInfo(name: name, labels: labels, taints: taints,
             capacity: ResourceVector(milliCPU: cpus * 1000, memory: memory * gib, pids: 10_000, gpus: gpus),
             exclusiveCPUs: exclusiveCPUs)
}

private func workload(_ name: String, cpu: Double = 1, memory: Int64 = 1, priority: Int = 0,
                      labels: [String: String] = [:], queue: String = "default") -> Workload {
    Workload(name: name, resources: ResourceRequirements(requests: .cpus(cpu, memory: memory * gib)),
             labels: labels, priority: priority, queue: queue)
}

/// Places each workload in turn and binds it, returning the node names chosen.
private func placeAll(_ workloads: [Workload], on cluster: inout ClusterState, policy: PlacementPolicy = PlacementPolicy()) throws -> [String?] {
    var placer = Placer(policy: policy)
    return try workloads.map { workload in
        guard case .node(let index, let assignment) = placer.place(workload, in: cluster) else { return nil }
        try cluster.bind(workload, to: index, assignment: assignment)
        return cluster.nodes[index].info.name
    }
}

@Suite struct ResourceTests {
    @Test func qualityOfServiceClassesAsKubernetes() {
        #expect(ResourceRequirements().qosClass == .bestEffort)
        #expect(ResourceRequirements(limits: .cpus(1, memory: gib)).qosClass == .guaranteed)
        #expect(ResourceRequirements(requests: .cpus(1, memory: gib), limits: .cpus(1, memory: gib)).qosClass == .guaranteed)
        #expect(ResourceRequirements(requests: .cpus(0.5, memory: gib), limits: .cpus(1, memory: gib)).qosClass == .burstable)
        #expect(ResourceRequirements(limits: .cpus(1)).qosClass == .burstable)
        #expect(ResourceRequirements(requests: ResourceAmounts(pids: 10)).qosClass == .bestEffort)
    }

    @Test func oomScoresAsTheKubelet() {
        #expect(QoSClass.guaranteed.oomScoreAdjustment(memoryRequest: gib, memoryCapacity: 8 * gib) == -997)
        #expect(QoSClass.bestEffort.oomScoreAdjustment(memoryRequest: 0, memoryCapacity: 8 * gib) == 1000)
        #expect(QoSClass.burstable.oomScoreAdjustment(memoryRequest: 2 * gib, memoryCapacity: 8 * gib) == 750)
        #expect(QoSClass.burstable.oomScoreAdjustment(memoryRequest: 0, memoryCapacity: 8 * gib) == 999)
        #expect(QoSClass.burstable.oomScoreAdjustment(memoryRequest: 8 * gib, memoryCapacity: 8 * gib) == 3)
    }

    @Test func requestsAboveLimitsAreRejectedByName() {
        let requirements = ResourceRequirements(requests: .cpus(2), limits: .cpus(1))
        #expect { try requirements.validate("workload w") } throws: { error in
            "\(error)".contains("workload w") && "\(error)".contains("cpu request")
        }
    }

    @Test func allocatableIsCapacityMinusReserve() {
        let info = NodeInfo(name: "a", capacity: ResourceVector(milliCPU: 2000, memory: 4 * gib, pids: 100),
                            reserved: ResourceVector(milliCPU: 500, memory: gib))
        #expect(info.allocatable == ResourceVector(milliCPU: 1500, memory: 3 * gib, pids: 100))
        #expect(info.labels[NodeInfo.hostnameLabel] == "a")
    }

    @Test func cpuListsParse() throws {
        #expect(try LocalNode.parseCPUList("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11])
        #expect(throws: SchedulerError.self) { try LocalNode.parseCPUList("3-1") }
    }
}

@Suite struct PlacementTests {
    @Test func leastAllocatedSpreadsByResources() throws {
        var cluster = try ClusterState(nodes: [node("a"), node("b"), node("c")])
        let chosen = try placeAll((0..<6).map { workload("w\($0)") }, on: &cluster)
        #expect(Dictionary(grouping: chosen.compactMap { $0 }, by: { $0 }).mapValues(\.count) == ["a": 2, "b": 2, "c": 2])
    }

    @Test func mostAllocatedPacksNodes() throws {
        var cluster = try ClusterState(nodes: [node("a"), node("b"), node("c")])
        let chosen = try placeAll((0..<4).map { workload("w\($0)") }, on: &cluster, policy: PlacementPolicy(strategy: .mostAllocated))
        // All four cores of one node, before any other node is touched.
        #expect(Set(chosen.compactMap { $0 }).count == 1)
    }

    @Test func spreadCountsWorkloadsNotResources() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 64, memory: 64), node("b")])
        let chosen = try placeAll((0..<4).map { workload("w\($0)", cpu: 0.1) }, on: &cluster,
                                  policy: PlacementPolicy(strategy: .spread))
        #expect(chosen.filter { $0 == "a" }.count == 2)
        // LeastAllocated would have put them all on the big node.
        var other = try ClusterState(nodes: [node("a", cpus: 64, memory: 64), node("b")])
        #expect(try placeAll((0..<4).map { workload("w\($0)", cpu: 0.1) }, on: &other).allSatisfy { $0 == "a" })
    }

    @Test func unschedulableReportsReasons() throws {
        let cluster = try ClusterState(nodes: [node("a", cpus: 1), node("b", memory: 1)])
        var placer = Placer()
        let decision = placer.place(workload("big", cpu: 2, memory: 2), in: cluster)
        #expect(decision == .unschedulable(["insufficient cpu": 1, "insufficient memory": 1]))
    }

    @Test func taintsRepelUnlessTolerated() throws {
        let taint = Taint(key: "dedicated", value: "gpu", effect: .noSchedule)
        var cluster = try ClusterState(nodes: [node("tainted", taints: [taint]), node("plain", cpus: 1)])
        let chosen = try placeAll([workload("a"), workload("b")], on: &cluster)
        #expect(chosen == ["plain", nil])
        var tolerant = workload("c")
        tolerant.tolerations = [Toleration(key: "dedicated", value: "gpu", effect: .noSchedule)]
        #expect(try placeAll([tolerant], on: &cluster) == ["tainted"])
        var everything = workload("d")
        everything.tolerations = [Toleration(key: nil, operator: .exists)]
        #expect(try placeAll([everything], on: &cluster) == ["tainted"])
    }

    @Test func preferNoScheduleIsAvoidedWhenPossible() throws {
        let soft = Taint(key: "spot", effect: .preferNoSchedule)
        var cluster = try ClusterState(nodes: [node("spot", cpus: 8, taints: [soft]), node("steady", cpus: 2)])
        let chosen = try placeAll([workload("a"), workload("b"), workload("c")], on: &cluster)
        #expect(chosen == ["steady", "steady", "spot"])
    }

    @Test func nodeSelectorAndRequiredAffinity() throws {
        var cluster = try ClusterState(nodes: [
            node("a", labels: ["disk": "ssd", "zone": "1"]), node("b", labels: ["disk": "hdd", "zone": "2"]),
            node("c", labels: ["zone": "3"]),
        ])
        var selected = workload("s")
        selected.nodeSelector = ["disk": "hdd"]
        var affine = workload("t")
        affine.affinity.requiredNodeTerms = [
            LabelSelector([LabelRequirement("disk", .doesNotExist)]),
            LabelSelector([LabelRequirement("zone", .greaterThan, ["5"])]),
        ]
        var impossible = workload("u")
        impossible.affinity.requiredNodeTerms = [LabelSelector([LabelRequirement("zone", .in, ["9"])])]
        #expect(try placeAll([selected, affine, impossible], on: &cluster) == ["b", "c", nil])
    }

    @Test func preferredNodeAffinityWins() throws {
        var cluster = try ClusterState(nodes: [node("a", labels: ["tier": "fast"]), node("b"), node("c")])
        var preferring = workload("p")
        preferring.affinity.preferredNodeTerms = [Weighted(weight: 50, LabelSelector(matching: ["tier": "fast"]))]
        #expect(try placeAll([preferring], on: &cluster) == ["a"])
    }

    @Test func antiAffinityKeepsReplicasApartAndAffinityTogether() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 16), node("b"), node("c")])
        let away = WorkloadAffinityTerm(selector: LabelSelector(matching: ["app": "web"]))
        let replicas = (0..<4).map { index in
            var replica = workload("web-\(index)", labels: ["app": "web"])
            replica.affinity.requiredAwayFrom = [away]
            return replica
        }
        let chosen = try placeAll(replicas, on: &cluster)
        #expect(Set(chosen.prefix(3).compactMap { $0 }) == ["a", "b", "c"])
        #expect(chosen[3] == nil)
        // A cache that must sit with web-1's node.
        var cache = workload("cache", labels: ["app": "cache"])
        cache.affinity.requiredWith = [WorkloadAffinityTerm(selector: LabelSelector(matching: ["app": "web"]))]
        #expect(try placeAll([cache], on: &cluster).first! != nil)
        // A workload matching a running replica's anti-affinity is kept away too.
        var intruder = workload("intruder", labels: ["app": "web"])
        intruder.resources = ResourceRequirements()
        #expect(try placeAll([intruder], on: &cluster) == [nil])
    }

    @Test func topologySpreadKeepsZonesWithinSkew() throws {
        var cluster = try ClusterState(nodes: [
            node("a1", cpus: 32, labels: ["zone": "a"]), node("a2", cpus: 32, labels: ["zone": "a"]),
            node("b1", cpus: 1, labels: ["zone": "b"]), node("c1", cpus: 2, labels: ["zone": "c"]),
        ])
        let constraint = TopologySpreadConstraint(maxSkew: 1, topologyKey: "zone", selector: LabelSelector(matching: ["app": "api"]))
        let replicas = (0..<6).map { index in
            var replica = workload("api-\(index)", labels: ["app": "api"])
            replica.topologySpread = [constraint]
            return replica
        }
        let chosen = try placeAll(replicas, on: &cluster)
        var zones: [String: Int] = [:]
        for name in chosen.compactMap({ $0 }) { zones[String(name.prefix(1)), default: 0] += 1 }
        // Zone b holds one core: two in a, one in b, two in c would break the skew, so placement stops.
        #expect(zones == ["a": 2, "b": 1, "c": 2])
        #expect(chosen.filter { $0 == nil }.count == 1)
    }

    @Test func countsKeptAcrossBindsAndReleasesMatchARecount() throws {
        var cluster = try ClusterState(nodes: (0..<6).map { node("n\($0)", cpus: 64, memory: 64, labels: ["zone": "z\($0 % 3)"]) })
        let apps = ["api", "web", "db"]
        let spread = apps.map { TopologySpreadConstraint(maxSkew: 2, topologyKey: "zone", selector: LabelSelector(matching: ["app": $0])) }
        let away = WorkloadAffinityTerm(selector: LabelSelector(matching: ["app": "db"]))
        var placer = Placer()
        var bound: [String] = []
        var random = SplitMix(seed: 7)
        for step in 0..<120 {
            if !bound.isEmpty && random.next() % 3 == 0 {
                let victim = bound.remove(at: Int(random.next() % UInt64(bound.count)))
                #expect(cluster.release(victim) != nil)
            } else {
                let app = step % 3
                var replica = workload("w\(step)", cpu: 0.5, labels: ["app": apps[app]])
                replica.topologySpread = [spread[app]]
                if app == 2 { replica.affinity.requiredAwayFrom = [away] }
                if case .node(let index, let assignment) = placer.place(replica, in: cluster) {
                    try cluster.bind(replica, to: index, assignment: assignment)
                    bound.append(replica.name)
                }
            }
            // What is counted as workloads come and go equals a count from scratch.
            for (selector, counted) in cluster.selectorCounts {
                #expect(counted.perNode == ClusterState.matching(selector, in: cluster.nodes), "step \(step): \(selector)")
            }
            let holders = cluster.nodes.indices.filter { cluster.nodes[$0].workloads.contains { $0.labels["app"] == "db" } }
            #expect(Set(cluster.repellers[away]?.keys.map { $0 } ?? []) == Set(holders))
            #expect(cluster.summaries.map(\.workloads) == cluster.nodes.map(\.workloads.count))
            #expect(cluster.summaries.map(\.free) == cluster.nodes.map(\.free))
        }
        // No more than one db per node, whatever came and went.
        #expect(cluster.nodes.allSatisfy { node in node.workloads.filter { $0.labels["app"] == "db" }.count <= 1 })
        for name in bound { cluster.release(name) }
        #expect(cluster.selectorCounts.isEmpty && cluster.repellers.isEmpty)
    }

    @Test func exclusiveCPUsAndDevicesAreAssigned() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 4, exclusiveCPUs: [2, 3], gpus: 2)])
        var pinned = Workload(name: "pinned", resources: ResourceRequirements(limits: .cpus(2, memory: gib, gpus: 1)),
                              exclusiveCPUs: true)
        var placer = Placer()
        guard case .node(let index, let assignment) = placer.place(pinned, in: cluster) else {
            Issue.record("not placed")
            return
        }
        #expect(assignment.exclusiveCPUs == [2, 3])
        #expect(assignment.gpus == [0])
        #expect(assignment.oomScoreAdjustment == -997)
        try cluster.bind(pinned, to: index, assignment: assignment)
        pinned.name = "again"
        #expect(placer.place(pinned, in: cluster) == .unschedulable(["insufficient exclusive cpus": 1]))
        cluster.release("pinned")
        #expect(cluster.nodes[0].freeExclusiveCPUs == [2, 3])
        // Not guaranteed, or not whole CPUs: no exclusive CPUs.
        #expect(Workload(name: "x", resources: ResourceRequirements(limits: .cpus(1.5, memory: gib)), exclusiveCPUs: true)
            .exclusiveCPUCount == 0)
        #expect(Workload(name: "y", resources: ResourceRequirements(requests: .cpus(1), limits: .cpus(2, memory: gib)),
                         exclusiveCPUs: true).exclusiveCPUCount == 0)
    }

    struct OnlyEven: PlacementFilter {
        var name: String { "OnlyEven" }
        func reject(_ workload: Workload, on node: NodeState, in cluster: ClusterState) -> String? {
            Int(node.info.name.dropFirst())! % 2 == 0 ? nil : "odd node"
        }
    }

    struct PreferHigh: PlacementScorer {
        var name: String { "PreferHigh" }
        var weight: Int { 10 }
        func score(_ workload: Workload, on node: NodeState, in cluster: ClusterState) -> Int {
            Int(node.info.name.dropFirst())! * 10
        }
    }

    @Test func customFiltersAndScorersPlugIn() throws {
        var cluster = try ClusterState(nodes: (0..<6).map { node("n\($0)") })
        let policy = PlacementPolicy(filters: [OnlyEven()], scorers: [PreferHigh()])
        #expect(try placeAll([workload("w")], on: &cluster, policy: policy) == ["n4"])
        var placer = Placer(policy: PlacementPolicy(filters: [OnlyEven()]))
        let odd = try ClusterState(nodes: [node("n1")])
        #expect(placer.place(workload("v"), in: odd) == .unschedulable(["OnlyEven: odd node": 1]))
    }

    @Test func adaptiveSamplingExaminesFewerNodes() throws {
        let cluster = try ClusterState(nodes: (0..<1000).map { node("n\($0)") })
        var placer = Placer(policy: PlacementPolicy(sampling: .adaptive))
        var seen = Set<Int>()
        for index in 0..<10 { seen.insert(placer.place(workload("w\(index)"), in: cluster).nodeIndex!) }
        // Each placement examines 420 of 1000 nodes, starting where the last stopped.
        #expect(seen.count == 10)
    }

    @Test func tiesAreBrokenTheSameWayForTheSameSeed() throws {
        let cluster = try ClusterState(nodes: (0..<20).map { node("n\($0)") })
        var first = Placer(), second = Placer()
        let picks = (0..<5).map { first.place(workload("w\($0)"), in: cluster).nodeIndex }
        #expect(picks == (0..<5).map { second.place(workload("w\($0)"), in: cluster).nodeIndex })
        #expect(Set(picks).count > 1)
    }
}

@Suite struct PreemptionTests {
    @Test func picksTheLeastImportantFewestVictims() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 4), node("b", cpus: 4)])
        // a: two workloads of priority 1 (2 cores each); b: one of priority 5 and one of priority 0.
        try cluster.bind(workload("a-low-1", cpu: 2, priority: 1), to: 0, assignment: Assignment(node: "a"))
        try cluster.bind(workload("a-low-2", cpu: 2, priority: 1), to: 0, assignment: Assignment(node: "a"))
        try cluster.bind(workload("b-mid", cpu: 2, priority: 5), to: 1, assignment: Assignment(node: "b"))
        try cluster.bind(workload("b-lowest", cpu: 2, priority: 0), to: 1, assignment: Assignment(node: "b"))
        let placer = Placer()
        // Two cores: stopping b-lowest (priority 0) beats stopping one of a's (priority 1).
        #expect(placer.preemption(for: workload("urgent", cpu: 2, priority: 10), in: cluster)
            == PreemptionPlan(node: 1, victims: ["b-lowest"]))
        // Four cores: a's two victims (highest priority 1) beat b's (highest priority 5).
        #expect(placer.preemption(for: workload("bigger", cpu: 4, priority: 10), in: cluster)
            == PreemptionPlan(node: 0, victims: ["a-low-1", "a-low-2"]))
        // Nothing on a is below priority 1, and b frees only two cores without its priority-5 workload.
        #expect(placer.preemption(for: workload("modest", cpu: 4, priority: 1), in: cluster) == nil)
        var polite = workload("polite", cpu: 2, priority: 10)
        polite.preemption = .never
        #expect(placer.preemption(for: polite, in: cluster) == nil)
    }

    @Test func reprievesVictimsThatNeedNotGo() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 4)])
        try cluster.bind(workload("small-old", cpu: 1, priority: 2), to: 0, assignment: Assignment(node: "a"))
        try cluster.bind(workload("small-new", cpu: 1, priority: 2), to: 0, assignment: Assignment(node: "a"))
        try cluster.bind(workload("big", cpu: 2, priority: 1), to: 0, assignment: Assignment(node: "a"))
        // One core needed: only the lowest-priority workload goes.
        #expect(Placer().preemption(for: workload("x", cpu: 1, priority: 9), in: cluster)?.victims == ["big"])
        // Three cores: big and one small one; the older small one stays.
        #expect(Placer().preemption(for: workload("y", cpu: 3, priority: 9), in: cluster)?.victims == ["big", "small-new"])
    }

    @Test func taintsAreNotPreemptedAway() throws {
        var cluster = try ClusterState(nodes: [node("a", cpus: 1, taints: [Taint(key: "k", effect: .noSchedule)])])
        var low = workload("low", priority: 0)
        low.tolerations = [Toleration(key: "k", operator: .exists)]
        try cluster.bind(low, to: 0, assignment: Assignment(node: "a"))
        #expect(Placer().preemption(for: workload("high", priority: 5), in: cluster) == nil)
    }
}

@Suite struct AdmissionQueueTests {
    @Test func priorityThenArrival() {
        var queue = AdmissionQueue()
        queue.push(workload("first", priority: 1))
        queue.push(workload("urgent", priority: 9))
        queue.push(workload("second", priority: 1))
        #expect(queue.names == ["urgent", "first", "second"])
        #expect((0..<3).compactMap { _ in queue.pop { _ in 0 }?.name } == ["urgent", "first", "second"])
    }

    @Test func queuesShareFairlyByWeight() {
        var queue = AdmissionQueue(weights: ["batch": 1, "interactive": 3])
        for index in 0..<3 {
            queue.push(workload("b\(index)", queue: "batch"))
            queue.push(workload("i\(index)", queue: "interactive"))
        }
        // Both queues use a tenth of the cluster; interactive's weight makes its share count less.
        let usage = ["batch": 0.1, "interactive": 0.1]
        #expect(queue.pop { usage[$0]! }?.name == "i0")
        // batch idle, interactive busy: batch goes first.
        #expect(queue.pop { $0 == "batch" ? 0 : 0.5 }?.name == "b0")
    }

    @Test func backOffDoublesToTheMaximum() {
        let backoff = AdmissionQueue.Backoff()
        #expect((1...6).map { backoff.delay(after: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10)])
        var queue = AdmissionQueue()
        queue.push(workload("w"))
        _ = queue.pop { _ in 0 }
        queue.backOff("w", now: .seconds(5))
        #expect(queue.retryAt(of: "w") == .seconds(6))
        queue.retry(now: .milliseconds(5500), capacityChanged: false)
        #expect(queue.pop { _ in 0 } == nil)
        queue.retry(now: .seconds(6), capacityChanged: false)
        #expect(queue.pop { _ in 0 }?.name == "w")
        queue.backOff("w", now: .seconds(6))
        #expect(queue.attempts(of: "w") == 2)
        queue.retry(now: .seconds(6), capacityChanged: true)
        #expect(queue.pop { _ in 0 }?.name == "w")
    }
}
