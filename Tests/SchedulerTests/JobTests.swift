import Runtime
import Synchronization
import Testing
@testable import Scheduler

private func node(_ clock: ManualClock, cpus: Int64 = 8, behaviour: @escaping SimulatedNode.Behaviour) -> SimulatedNode {
    SimulatedNode(NodeInfo(name: "a", capacity: ResourceVector(milliCPU: cpus * 1000, memory: 8 << 30, pids: 1000)),
                  clock: clock, behaviour: behaviour)
}

private func template() -> Workload {
    Workload(name: "t", container: ContainerSpec(image: "busybox:test", command: ["true"]),
             resources: ResourceRequirements(requests: .cpus(1)))
}

/// Statuses seen, in order.
private final class Updates: Sendable {
    let list = Mutex<[JobStatus]>([])
    func add(_ status: JobStatus) { list.withLock { $0.append(status) } }
    var all: [JobStatus] { list.withLock { $0 } }
}

@Suite(.timeLimit(.minutes(5))) struct JobTests {
    @Test func completionsRunAtMostParallelismAtOnce() async throws {
        let clock = ManualClock()
        let running = Mutex((now: 0, most: 0))
        let cluster = try Cluster(nodes: [node(clock) { _ in
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            return (.zero, 0)
        }], clock: clock)
        let updates = Updates()
        let status = try await JobRunner(cluster: cluster, clock: clock)
            .run(JobSpec(name: "batch", template: template(), completions: 6, parallelism: 2), update: updates.add)
        #expect(status.condition == .complete && status.succeeded == 6 && status.failed == 0 && status.active == 0)
        #expect(updates.all.allSatisfy { $0.active <= 2 })
        #expect(updates.all.contains { $0.active == 2 })
        #expect(await cluster.snapshot.boundCount == 0)
    }

    @Test func indexedRunsGetTheirIndexAndAFailedIndexIsRetried() async throws {
        let clock = ManualClock()
        let seen = Mutex<[String]>([])
        let cluster = try Cluster(nodes: [node(clock) { workload in
            let index = workload.labels[JobRunner.indexLabel] ?? "?"
            let environment = workload.container?.environment ?? []
            let first = seen.withLock { seen in
                defer { seen.append(index) }
                return !seen.contains(index)
            }
            precondition(environment.contains("JOB_COMPLETION_INDEX=\(index)"))
            return (.zero, index == "2" && first ? 1 : 0)
        }], clock: clock)
        let job = JobSpec(name: "shards", template: template(), completions: 4, parallelism: 4, completionMode: .indexed,
                          backoffBase: .zero)
        let status = try await JobRunner(cluster: cluster, clock: clock).run(job)
        #expect(status.condition == .complete)
        #expect(status.completedIndexes == [0, 1, 2, 3])
        #expect(status.succeeded == 4 && status.failed == 1)
        #expect(seen.withLock { $0 }.sorted() == ["0", "1", "2", "2", "3"])
    }

    @Test func aJobFailsOnceItsFailuresPassTheBackoffLimit() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [node(clock) { _ in (.zero, 3) }], clock: clock)
        let job = JobSpec(name: "broken", template: template(), completions: 2, backoffLimit: 2, backoffBase: .zero)
        let status = try await JobRunner(cluster: cluster, clock: clock).run(job)
        #expect(status.condition == .failed && status.reason == "BackoffLimitExceeded")
        #expect(status.failed == 3 && status.succeeded == 0)
    }

    @Test func theBackoffDoublesUpToItsCapAndDelaysTheNextRun() async throws {
        let job = JobSpec(name: "j", template: template())
        #expect((0 ... 8).map { job.backoff(afterFailures: $0) } == [
            .zero, .seconds(10), .seconds(20), .seconds(40), .seconds(80), .seconds(160), .seconds(320), .seconds(360), .seconds(360)])
        let clock = ManualClock()
        let runs = Mutex(0)
        let cluster = try Cluster(nodes: [node(clock) { _ in
            (.zero, runs.withLock { $0 += 1; return $0 } == 1 ? 1 : 0)
        }], clock: clock)
        let task = Task { try await JobRunner(cluster: cluster, clock: clock).run(job) }
        try await eventually("the retry waits ten seconds") { clock.deadlines.contains(.init(offset: .seconds(10))) }
        #expect(runs.withLock { $0 } == 1)
        clock.advance(by: .seconds(9))
        #expect(runs.withLock { $0 } == 1)
        clock.advance(by: .seconds(1))
        let status = try await task.value
        #expect(status.condition == .complete && status.failed == 1 && status.succeeded == 1)
    }

    @Test func theDeadlineStopsTheRunsAndFailsTheJob() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [node(clock) { _ in (nil, 0) }], clock: clock)
        let job = JobSpec(name: "slow", template: template(), completions: 3, parallelism: 3, activeDeadline: .seconds(30))
        let task = Task { try await JobRunner(cluster: cluster, clock: clock).run(job) }
        try await eventually("three run") { await cluster.snapshot.boundCount == 3 }
        clock.advance(by: .seconds(30))
        let status = try await task.value
        #expect(status.condition == .failed && status.reason == "DeadlineExceeded" && status.active == 0)
        #expect(await cluster.snapshot.boundCount == 0)
    }

    @Test(arguments: [
        (JobSpec(name: "j", template: template(), completions: 0), "completions is 0"),
        (JobSpec(name: "j", template: template(), parallelism: 0), "parallelism is 0"),
        (JobSpec(name: "j", template: template(), backoffLimit: -1), "backoffLimit is -1"),
        (JobSpec(name: "j", template: template(), backoffBase: .seconds(10), backoffCap: .seconds(1)), "the back-off runs from 10.0 seconds to 1.0 seconds"),
        (JobSpec(name: "j", template: template(), activeDeadline: .zero), "activeDeadline"),
    ])
    func invalidJobsNameTheField(job: JobSpec, message: String) {
        #expect { try job.validate() } throws: { error in
            (error as? SchedulerError)?.code == .invalidSpec && "\(error)".contains("job \"j\": \(message)")
        }
    }
}
