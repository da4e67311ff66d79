import Foundation
import GantryTestSupport
import Runtime
import Synchronization
import Testing
@testable import Scheduler

/// A busybox workload running `script`, with `out` of the test bound at `/out`.
private func workload(_ name: String, _ script: String, out: String, resources: ResourceRequirements = ResourceRequirements(),
                      exclusiveCPUs: Bool = false) -> Workload {
    var spec = ContainerSpec(image: "busybox:test", command: ["sh", "-c", script])
    spec.mounts = [.bind(source: out, target: "/out")]
    spec.stopGracePeriod = .milliseconds(200)
    return Workload(name: name, container: spec, resources: resources, exclusiveCPUs: exclusiveCPUs, stopGrace: .milliseconds(200))
}

/// Workloads, jobs and quality-of-service classes on this host, in real containers.
@Suite(.requiresRoot, .serialized, .timeLimit(.minutes(5))) struct LocalNodeTests {
    @Test func qualityOfServiceSetsTheOOMScoreAndExclusiveCPUsTheCpuset() async throws {
        try await withBusyboxRuntime("sched-qos") { runtime, dir in
            let out = dir + "/out"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let probe = try LocalNode(runtime: runtime)
            // One CPU set aside when there are two or more; otherwise only the OOM scores are checked.
            let exclusive = probe.onlineCPUs.count > 1 ? [probe.onlineCPUs.last!] : []
            let node = try LocalNode(runtime: runtime, exclusiveCPUs: exclusive)
            let cluster = try Cluster(nodes: [node])
            let script = "cat /proc/self/oom_score_adj > /out/$0.oom; cat /proc/self/status > /out/$0.status"
            func run(_ name: String, _ resources: ResourceRequirements, exclusiveCPUs: Bool = false) async throws {
                var spec = workload(name, script, out: out, resources: resources, exclusiveCPUs: exclusiveCPUs)
                spec.container?.command = ["sh", "-c", script, name]
                let exit = try await cluster.run(spec)
                #expect(exit.succeeded, "\(name): \(exit)")
            }
            func oomScore(_ name: String) throws -> Int? { Int(try readText(out + "/\(name).oom").trimmingCharacters(in: .whitespacesAndNewlines)) }
            func allowedCPUs(_ name: String) throws -> [Int] {
                let line = try readText(out + "/\(name).status").split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") } ?? ""
                return try LocalNode.parseCPUList(line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces))
            }

            let inherited = ownScore()
            try await run("guaranteed", ResourceRequirements(limits: .cpus(1, memory: 64 << 20)), exclusiveCPUs: !exclusive.isEmpty)
            try await run("burstable", ResourceRequirements(requests: .cpus(0.1, memory: 512 << 20), limits: .cpus(memory: 1 << 30)))
            try await run("besteffort", ResourceRequirements())
            // Lowering a score takes CAP_SYS_RESOURCE; without it the write is refused and the inherited score stays.
            // This process's own score is left alone.
            #expect(ownScore() == inherited)
            let guaranteed = try oomScore("guaranteed")
            #expect(guaranteed == (hostMayLowerOOMScores() ? -997 : inherited), "guaranteed: \(String(describing: guaranteed)), inherited: \(String(describing: inherited))")
            let planned = try node.containerSpec(for: Workload(name: "g", container: ContainerSpec(image: "busybox:test"),
                                                               resources: ResourceRequirements(limits: .cpus(1, memory: 64 << 20))),
                                                 assignment: Assignment(node: node.info.name, oomScoreAdjustment: -997))
            #expect(planned.oomScoreAdjustment == -997)
            #expect(try oomScore("besteffort") == 1000)
            let burstable = QoSClass.burstable.oomScoreAdjustment(memoryRequest: 512 << 20, memoryCapacity: node.info.capacity.memory)
            #expect(try oomScore("burstable") == burstable && (3 ... 999).contains(burstable))
            if !exclusive.isEmpty {
                // The exclusive CPU runs the guaranteed workload alone; the others never run there.
                #expect(try allowedCPUs("guaranteed") == exclusive)
                #expect(try allowedCPUs("besteffort") == node.onlineCPUs.filter { !exclusive.contains($0) })
                #expect(try allowedCPUs("burstable") == node.onlineCPUs.filter { !exclusive.contains($0) })
            }
        }
    }

    @Test func anIndexedJobOfSixCompletionsRunsTwoAtATime() async throws {
        try await withBusyboxRuntime("sched-job", applets: ["ls", "wc", "mkdir", "rmdir"]) { runtime, dir in
            let out = dir + "/out"
            try FileManager.default.createDirectory(atPath: out + "/running", withIntermediateDirectories: true)
            // Each run marks itself running, records how many runs it sees running, and leaves its index.
            let script = """
                mkdir /out/running/$JOB_COMPLETION_INDEX; sleep 0.3; ls /out/running | wc -l > /out/seen-$JOB_COMPLETION_INDEX
                rmdir /out/running/$JOB_COMPLETION_INDEX; echo done > /out/index-$JOB_COMPLETION_INDEX
                """
            let cluster = try Cluster(nodes: [try LocalNode(runtime: runtime)])
            let statuses = Mutex<[JobStatus]>([])
            let status = try await JobRunner(cluster: cluster).run(
                JobSpec(name: "batch", template: workload("batch", script, out: out), completions: 6, parallelism: 2, completionMode: .indexed)
            ) { status in statuses.withLock { $0.append(status) } }
            #expect(status.condition == .complete && status.succeeded == 6 && status.failed == 0)
            #expect(status.completedIndexes == Array(0 ..< 6))
            #expect(statuses.withLock { $0.map(\.active).max() } == 2)
            for index in 0 ..< 6 {
                #expect(FileManager.default.fileExists(atPath: out + "/index-\(index)"))
                let seen = Int(try readText(out + "/seen-\(index)").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                #expect((1 ... 2).contains(seen), "run \(index) saw \(seen) runs at once")
            }
        }
    }

    @Test func aFailingJobFailsAfterItsBackoffLimit() async throws {
        try await withBusyboxRuntime("sched-job-fail") { runtime, dir in
            let out = dir + "/out"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let cluster = try Cluster(nodes: [try LocalNode(runtime: runtime)])
            let clock = ContinuousClock()
            let start = clock.now
            let status = try await JobRunner(cluster: cluster, clock: clock).run(
                JobSpec(name: "flaky", template: workload("flaky", "echo x >> /out/attempts; exit 3", out: out), backoffLimit: 2,
                        backoffBase: .milliseconds(100), backoffCap: .seconds(1)))
            #expect(status.condition == .failed && status.reason == "BackoffLimitExceeded")
            #expect(status.failed == 3 && status.succeeded == 0 && status.active == 0)
            #expect(try readText(out + "/attempts").split(separator: "\n").count == 3)
            // Two back-offs passed: 100 ms, then 200 ms.
            #expect(clock.now - start >= .milliseconds(300))
        }
    }
}

/// Whether this process holds CAP_SYS_RESOURCE, which lowering an OOM score takes.
private func hostMayLowerOOMScores() -> Bool {
    let status = (try? readText("/proc/self/status")) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") } ?? ""
    let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
    return mask & (1 << 24) != 0
}

/// This process's OOM score adjustment.
private func ownScore() -> Int? {
    (try? readText("/proc/self/oom_score_adj")).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}
