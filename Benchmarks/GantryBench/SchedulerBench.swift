import ArgumentParser
import Foundation
import Scheduler
import Synchronization

/// Placement throughput on simulated nodes: workloads of mixed sizes, some
/// with node selectors, tolerations and spread constraints, admitted
/// through a `Cluster` (queue, placement, binding) one after another and
/// kept bound, so that each placement sees the cluster filling up.
struct SchedulerBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Placements per second on simulated nodes, through the cluster's admission path.")

    @Option(help: "Simulated nodes.") var nodes = 1000
    @Option(help: "Workloads to place.") var workloads = 10000
    @Option(help: "LeastAllocated, MostAllocated or Spread.") var strategy = "LeastAllocated"
    @Option(help: ArgumentHelp("Nodes examined per workload: all, adaptive (as Kubernetes) or a percentage.", valueName: "sampling"))
    var sampling = "all"
    @Option(help: "Concurrent callers of admit.") var callers = 64

    func run() async throws {
        guard nodes > 0, workloads > 0, callers > 0 else { throw ValidationError("--nodes, --workloads and --callers must be above 0") }
        guard let strategy = ScoringStrategy(rawValue: strategy) else {
            throw ValidationError("--strategy \(self.strategy) is not one of \(ScoringStrategy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let sampling: NodeSampling = switch self.sampling {
        case "all": .all
        case "adaptive": .adaptive
        default:
            try Int(self.sampling).map { .percentage($0) } ?? { throw ValidationError("--sampling \(self.sampling) is not all, adaptive or a percentage") }()
        }
        let cluster = try Cluster(nodes: (0 ..< nodes).map { SimulatedNode(Self.node($0)) },
                                  options: Cluster.Options(placement: PlacementPolicy(strategy: strategy, sampling: sampling)))
        let specs = (0 ..< workloads).map(Self.workload)
        print("nodes: \(nodes), workloads: \(workloads), strategy: \(strategy.rawValue), sampling: \(self.sampling)")

        let clock = ContinuousClock()
        let next = Counter()
        let started = clock.now
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0 ..< min(callers, workloads) {
                group.addTask {
                    var failures = 0
                    while let index = next.take(below: specs.count) {
                        do { _ = try await cluster.admit(specs[index]) } catch { failures += 1 }
                    }
                    return failures
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let bound = await cluster.snapshot.boundCount
        let busiest = await cluster.snapshot.nodes.map(\.workloads.count).max() ?? 0
        print("placed: \(bound), not placed: \(failures), most on one node: \(busiest), time: \(String(format: "%.3f", seconds)) s")
        guard bound == workloads else { throw ValidationError("only \(bound) of \(workloads) workloads were placed") }
        print("placements_per_second: \(Int((Double(bound) / seconds).rounded())) placements/s")
    }

    /// Node `index`: 16 or 32 CPUs, 64 or 128 GiB, in one of 10 zones; one
    /// in ten carries a taint, one in four an SSD label.
    static func node(_ index: Int) -> NodeInfo {
        let large = index % 2 == 0
        var labels = [NodeInfo.hostnameLabel: "node-\(index)", "topology.kubernetes.io/zone": "zone-\(index % 10)"]
        if index % 4 == 0 { labels["disk"] = "ssd" }
        return NodeInfo(name: "node-\(index)", labels: labels,
                        taints: index % 10 == 0 ? [Taint(key: "dedicated", value: "batch", effect: .noSchedule)] : [],
                        capacity: ResourceVector(milliCPU: large ? 32000 : 16000, memory: (large ? 128 : 64) << 30, pids: 1 << 20),
                        reserved: ResourceVector(milliCPU: 500, memory: 1 << 30))
    }

    /// Workload `index`: 100 m to 2 CPUs and 128 MiB to 4 GiB; one in five
    /// wants an SSD node, one in ten tolerates the batch taint, one in ten
    /// spreads its app over the zones.
    static func workload(_ index: Int) -> Workload {
        let app = "app-\(index % 100)"
        var workload = Workload(
            name: "w-\(index)",
            resources: ResourceRequirements(
                requests: ResourceAmounts(milliCPU: Int64(100 * (1 + index % 20)), memory: Int64(128 << 20) * Int64(1 + index % 32))),
            labels: ["app": app], priority: index % 3)
        if index % 5 == 0 { workload.nodeSelector = ["disk": "ssd"] }
        if index % 10 == 3 { workload.tolerations = [Toleration(key: "dedicated", operator: .equal, value: "batch", effect: .noSchedule)] }
        if index % 10 == 7 {
            workload.topologySpread = [TopologySpreadConstraint(maxSkew: 5, topologyKey: "topology.kubernetes.io/zone",
                                                                whenUnsatisfiable: .scheduleAnyway, selector: LabelSelector(matching: ["app": app]))]
        }
        return workload
    }
}

/// Hands out indexes 0, 1, 2, … to concurrent callers.
final class Counter: Sendable {
    private let value = Mutex(0)

    func take(below limit: Int) -> Int? {
        value.withLock { value in
            guard value < limit else { return nil }
            defer { value += 1 }
            return value
        }
    }
}
