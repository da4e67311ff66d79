import Foundation
import GantryTestSupport
import OCIImage
import Runtime
import Testing
@testable import Scheduler

/// 2026-01-15 10:00 UTC.
private let origin = Date(timeIntervalSince1970: 1_768_471_200)

private func status(_ condition: JobStatus.Condition, succeeded: Int = 0, failed: Int = 0) -> JobStatus {
    var status = JobStatus()
    status.condition = condition
    status.succeeded = succeeded
    status.failed = failed
    return status
}

private func record(_ name: String, cronJob: String? = nil, _ condition: JobStatus.Condition = .running, createdAt: Date = origin,
                    finishedAt: Date? = nil, ttl: Duration? = nil, owner: Int32 = getpid()) -> JobRecord {
    JobRecord(name: name, cronJob: cronJob, image: "busybox:test", command: ["true"], ttlAfterFinished: ttl, status: status(condition),
              createdAt: createdAt, finishedAt: finishedAt, owner: owner)
}

/// The id of a process that has exited and been waited for.
private func exitedProcessID() throws -> Int32 {
    let process = try ChildProcess("/bin/true", [])
    process.waitUntilExit()
    return process.processIdentifier
}

private func cronJob(_ name: String, suspend: Bool = false) throws -> CronJobSpec {
    CronJobSpec(name: name, schedule: try CronSchedule("*/5 * * * *", timeZoneIdentifier: "UTC"),
                job: JobTemplate(container: ContainerSpec(image: "busybox:test", command: ["date"])), suspend: suspend)
}

@Suite(.timeLimit(.minutes(5))) struct JobStoreTests {
    @Test func aJobRecordRoundTripsAndGetsItsEndTimeOnce() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            #expect(FileManager.default.fileExists(atPath: path + "/scheduler.sqlite"))
            let spec = JobSpec(name: "report", template: Workload(name: "t", container: ContainerSpec(image: "busybox:test", command: ["sh", "-c", "echo hi"])),
                               completions: 3, parallelism: 2, completionMode: .indexed, backoffLimit: 4, ttlAfterFinished: .seconds(90))
            let begun = JobRecord(spec, cronJob: "nightly", createdAt: origin)
            #expect(begun.image == "busybox:test" && begun.command == ["sh", "-c", "echo hi"] && begun.owner == getpid())
            #expect(begun.completions == 3 && begun.parallelism == 2 && begun.completionMode == .indexed && begun.backoffLimit == 4)
            try store.begin(begun)
            #expect(try store.job("report") == begun)

            var running = status(.running)
            running.active = 2
            #expect(try store.update("report", status: running, now: origin + 10).finishedAt == nil)
            let complete = status(.complete, succeeded: 3)
            let finished = try store.update("report", status: complete, now: origin + 60)
            #expect(finished.finishedAt == origin + 60 && finished.status == complete)
            // A later write of the final status keeps the first end time.
            #expect(try store.update("report", status: complete, now: origin + 70).finishedAt == origin + 60)

            let reopened = try JobStore(root: StateRoot(path))
            #expect(try reopened.job("report") == finished)
            #expect(try reopened.jobs(now: origin + 61).map(\.name) == ["report"])
            #expect(try store.remove("report"))
            #expect(try !store.remove("report"))
            #expect(try store.job("report") == nil)
            #expect { try store.update("report", status: complete) } throws: { error in
                (error as? SchedulerError)?.code == .notFound && "\(error)".contains("report")
            }
        }
    }

    @Test func jobsAreListedNewestFirstAndByCronJob() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            try store.begin(record("b-1", cronJob: "b", createdAt: origin))
            try store.begin(record("a-2", cronJob: "a", createdAt: origin + 120))
            try store.begin(record("manual", createdAt: origin + 60))
            try store.begin(record("a-1", cronJob: "a", createdAt: origin))
            #expect(try store.jobs().map(\.name) == ["a-2", "manual", "b-1", "a-1"])
            #expect(try store.jobs(cronJob: "a").map(\.name) == ["a-2", "a-1"])
            #expect(try store.jobs(cronJob: "none").isEmpty)
        }
    }

    @Test func finishedJobsAreForgottenOnceTheirTTLHasPassed() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            try store.begin(record("short", .complete, finishedAt: origin, ttl: .seconds(60)))
            try store.begin(record("failed", .failed, finishedAt: origin, ttl: .seconds(600)))
            try store.begin(record("kept", .complete, finishedAt: origin))
            try store.begin(record("running", ttl: .zero))
            #expect(try store.pruneExpired(now: origin + 59).isEmpty)
            #expect(try store.pruneExpired(now: origin + 60) == ["short"])
            #expect(try store.jobs(now: origin + 600).map(\.name).sorted() == ["kept", "running"])

            // A job that ends gets its expiry from its end time.
            try store.update("running", status: status(.complete), now: origin + 1000)
            #expect(try store.jobs(now: origin + 999.5).map(\.name).sorted() == ["kept", "running"])
            #expect(try store.jobs(now: origin + 1000).map(\.name) == ["kept"])
        }
    }

    @Test func aJobWhoseProcessIsGoneIsReportedFailedAndRecordedSo() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            let gone = try exitedProcessID()
            try store.begin(record("orphan", owner: gone))
            try store.begin(record("ours"))
            // Process 1 always exists, though it may not be ours to signal.
            try store.begin(record("init's", owner: 1))

            let reaped = try #require(try store.job("orphan", now: origin + 5))
            #expect(reaped.status.condition == .failed && reaped.status.reason == "RunnerExited" && reaped.status.active == 0)
            #expect(reaped.finishedAt == origin + 5)
            // Recorded so: read again later it keeps its first end time.
            #expect(try store.job("orphan", now: origin + 50)?.finishedAt == origin + 5)
            let listed = try store.jobs(now: origin + 100)
            #expect(listed.first { $0.name == "orphan" }?.finishedAt == origin + 5)
            #expect(listed.first { $0.name == "ours" }?.status.condition == .running)
            #expect(listed.first { $0.name == "init's" }?.status.condition == .running)

            try store.begin(record("listed", owner: gone))
            #expect(try store.jobs(now: origin + 200).first { $0.name == "listed" }?.status.reason == "RunnerExited")
        }
    }

    @Test func beginRefusesAJobThatRunsAndReplacesOneThatEnded() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            try store.begin(record("nightly"))
            #expect { try store.begin(record("nightly", createdAt: origin + 1)) } throws: { error in
                (error as? SchedulerError)?.code == .exists && "\(error)".contains("job \"nightly\" is running already")
            }
            #expect(try store.job("nightly")?.createdAt == origin)

            try store.update("nightly", status: status(.failed), now: origin + 10)
            try store.begin(record("nightly", createdAt: origin + 20))
            #expect(try store.job("nightly")?.createdAt == origin + 20)
            #expect(try store.job("nightly")?.status.condition == .running)

            // One recorded as running by a process that is gone is replaced.
            try store.begin(record("orphan", owner: try exitedProcessID()))
            try store.begin(record("orphan", createdAt: origin + 30))
            #expect(try store.job("orphan")?.owner == getpid())
        }
    }

    @Test func cronJobsRoundTripAndKeepTheirStatusWhenSaved() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            let created = try store.saveCronJob(try cronJob("backup"), now: origin)
            #expect(created.createdAt == origin && created.status == CronJobStatus())
            try store.saveCronJob(try cronJob("alpha"), now: origin + 5)
            let status = CronJobStatus(lastScheduleTime: origin + 300, lastSuccessfulTime: origin + 330, active: ["backup-1"])
            try store.setCronStatus("backup", status)

            let changed = try cronJob("backup", suspend: true)
            let saved = try store.saveCronJob(changed, now: origin + 900)
            #expect(saved.spec == changed && saved.status == status && saved.createdAt == origin)
            #expect(try JobStore(root: StateRoot(path)).cronJob("backup") == saved)
            #expect(try store.cronJobs().map(\.spec.name) == ["alpha", "backup"])

            #expect { try store.setCronStatus("missing", status) } throws: { ($0 as? SchedulerError)?.code == .notFound }
            var invalid = try cronJob("bad")
            invalid.failedJobsHistoryLimit = -1
            #expect { try store.saveCronJob(invalid) } throws: { ($0 as? SchedulerError)?.code == .invalidSpec }
            #expect(try store.removeCronJob("backup"))
            #expect(try !store.removeCronJob("backup"))
            #expect(try store.cronJob("backup") == nil)
            #expect(try store.cronJobs().map(\.spec.name) == ["alpha"])
        }
    }

    @Test func theChangeCounterMovesWithWritesFromThisAndOtherConnections() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            let other = try JobStore(root: StateRoot(path))
            let first = try store.changeCounter()
            #expect(try store.changeCounter() == first)
            try other.saveCronJob(try cronJob("backup"))
            let second = try store.changeCounter()
            #expect(second != first)
            try store.begin(record("job"))
            #expect(try store.changeCounter() != second)
        }
    }

    @Test func aRunRecordingInAStoreRecordsItsJobFromBeginToEnd() async throws {
        try await withTemporaryDirectory("jobstore") { path in
            let store = try JobStore(root: StateRoot(path))
            let clock = ManualClock()
            let node = SimulatedNode(NodeInfo(name: "a", capacity: ResourceVector(milliCPU: 4000, memory: 1 << 30, pids: 100)),
                                     clock: clock) { workload in
                (workload.labels[JobRunner.jobLabel] == "forever" ? nil : .seconds(5), 0)
            }
            let cluster = try Cluster(nodes: [node], clock: clock)
            let runner = JobRunner(cluster: cluster, clock: clock)
            let wallClock: @Sendable () -> Date = { origin + clock.now.offset.timeInterval }
            let template = Workload(name: "t", container: ContainerSpec(image: "busybox:test", command: ["true"]))

            let task = Task { try await runner.run(JobSpec(name: "quick", template: template, completions: 2), recordingIn: store, wallClock: wallClock) }
            try await eventually("the job is recorded") { (try? store.job("quick"))?.status.active == 1 }
            #expect(try store.job("quick")?.createdAt == origin)
            try await eventually("the first run sleeps") { clock.deadlines.contains(.init(offset: .seconds(5))) }
            clock.advance(by: .seconds(5))
            try await eventually("the second run sleeps") { clock.deadlines.contains(.init(offset: .seconds(10))) }
            clock.advance(by: .seconds(5))
            let final = try await task.value
            let recorded = try #require(try store.job("quick"))
            #expect(final.condition == .complete && recorded.status == final && recorded.status.succeeded == 2)
            #expect(recorded.finishedAt == origin + 10)

            // A second run of a job of that name waits for none: the first has ended.
            let forever = Task { try await runner.run(JobSpec(name: "forever", template: template), recordingIn: store, wallClock: wallClock) }
            try await eventually("it runs") { await cluster.snapshot.boundCount == 1 }
            let duplicate = await #expect(throws: SchedulerError.self) {
                try await runner.run(JobSpec(name: "forever", template: template), recordingIn: store)
            }
            #expect(duplicate?.code == .exists)
            forever.cancel()
            await #expect(throws: CancellationError.self) { try await forever.value }
            let cancelled = try #require(try store.job("forever"))
            #expect(cancelled.status.condition == .failed && cancelled.status.reason == "Cancelled" && cancelled.finishedAt == origin + 10)
            #expect(await cluster.snapshot.boundCount == 0)
        }
    }
}
