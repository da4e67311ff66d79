import Foundation
import GantryTestSupport
import OCIImage
import Runtime
import Synchronization
import Testing
@testable import Scheduler

/// 2026-01-15 10:02 UTC, where the manual clocks start.
private let origin = Date(timeIntervalSince1970: 1_768_471_320)

/// The wall-clock time `minute` minutes past 10:00 on the origin's day.
private func at(_ minute: Int) -> Date { Date(timeIntervalSince1970: 1_768_471_200 + Double(minute) * 60) }

/// The manual clock's offset at `minute` minutes past 10:00 (10:02 is zero).
private func offset(_ minute: Int) -> Duration { .seconds((minute - 2) * 60) }

private func cronJob(_ name: String, _ schedule: String = "*/5 * * * *", policy: CronJobSpec.ConcurrencyPolicy = .allow,
                     startingDeadline: Duration? = nil, backoffLimit: Int = 6, suspend: Bool = false) throws -> CronJobSpec {
    CronJobSpec(name: name, schedule: try CronSchedule(schedule, timeZoneIdentifier: "UTC"),
                job: JobTemplate(container: ContainerSpec(image: "busybox:test", command: ["true"]),
                                 resources: ResourceRequirements(requests: .cpus(1)), backoffLimit: backoffLimit),
                concurrencyPolicy: policy, startingDeadline: startingDeadline, suspend: suspend)
}

/// Cron jobs each wrong in one field, and what their error says.
private func invalidSpecs() -> [(CronJobSpec, String)] {
    func changed(_ change: (inout CronJobSpec) -> Void) -> CronJobSpec {
        var spec = try! cronJob("j")
        change(&spec)
        return spec
    }
    return [
        (changed { $0.name = "" }, "\"\" is not a valid cron job name"),
        (changed { $0.name = String(repeating: "a", count: 53) }, "is not a valid cron job name"),
        (changed { $0.name = "-x" }, "\"-x\" is not a valid cron job name"),
        (changed { $0.successfulJobsHistoryLimit = -1 }, "cron job \"j\": successfulJobsHistoryLimit is -1"),
        (changed { $0.failedJobsHistoryLimit = -2 }, "cron job \"j\": failedJobsHistoryLimit is -2"),
        (changed { $0.startingDeadline = .seconds(-1) }, "cron job \"j\": startingDeadline"),
        (changed { $0.job.completions = 0 }, "cron job \"j\": completions is 0"),
        (changed { $0.job.ttlAfterFinished = .seconds(-5) }, "cron job \"j\": ttlAfterFinished"),
        (changed { $0.schedule = try! CronSchedule("0 0 30 2 *") }, "cron job \"j\": the schedule \"0 0 30 2 *\" never fires"),
    ]
}

/// A cron job controller on one simulated node, its wall clock the origin
/// moved by a manual clock, and the events it gives.
private final class Harness: Sendable {
    let clock = ManualClock()
    let cluster: Cluster
    let controller: CronJobController
    let store: JobStore?
    private let seen = Mutex<[CronJobEvent]>([])

    init(store: JobStore? = nil, behaviour: @escaping SimulatedNode.Behaviour) throws {
        let clock = clock
        let node = SimulatedNode(NodeInfo(name: "a", capacity: ResourceVector(milliCPU: 8000, memory: 8 << 30, pids: 1000)),
                                 clock: clock, behaviour: behaviour)
        cluster = try Cluster(nodes: [node], clock: clock)
        self.store = store
        controller = CronJobController(cluster: cluster, store: store, clock: clock,
                                       wallClock: { origin + clock.now.offset.timeInterval }, pollInterval: .milliseconds(20))
    }

    /// Runs the controller until the task is cancelled.
    func start(_ specs: [CronJobSpec]? = nil) -> Task<Void, any Error> {
        Task { try await controller.run(specs) { event in self.seen.withLock { $0.append(event) } } }
    }

    var events: [CronJobEvent] { seen.withLock { $0 } }

    /// The jobs started, with the fire times they were started for.
    var scheduled: [(job: String, at: Date)] {
        events.compactMap { if case .scheduled(_, let job, let time) = $0 { (job, time) } else { nil } }
    }

    /// The jobs that ended, with their statuses.
    var finished: [(job: String, status: JobStatus)] {
        events.compactMap { if case .finished(_, let job, let status) = $0 { (job, status) } else { nil } }
    }

    /// The events other than starts and ends.
    var others: [CronJobEvent] {
        events.filter {
            switch $0 {
            case .scheduled, .finished: false
            default: true
            }
        }
    }

    /// Waits until something sleeps until `target`, then moves the clock there.
    func advance(to target: Duration) async throws {
        for _ in 0..<5000 {
            if clock.deadlines.contains(.init(offset: target)) {
                clock.advance(by: target - clock.now.offset)
                return
            }
            try await Task.sleep(for: .milliseconds(1))
        }
        Issue.record("nothing sleeps until \(target), only until \(clock.deadlines.map(\.offset)); events: \(events)")
        throw CancellationError()
    }

    /// Waits until a run has been launched that ends at `end`: a job's
    /// start is reported before its runs are placed and launched.
    func launched(endingAt end: Duration) async throws {
        try await eventually("a run sleeps until \(end)") { clock.deadlines.contains(.init(offset: end)) }
    }

    /// Stops the controller and checks it stopped every job it started.
    func stop(_ task: Task<Void, any Error>) async throws {
        task.cancel()
        try await task.value
        #expect(await cluster.snapshot.boundCount == 0)
    }
}

@Suite(.timeLimit(.minutes(5))) struct CronJobTests {
    @Test func aCronJobFiresAtItsScheduleAndNamesJobsByTheMinute() async throws {
        let harness = try Harness { _ in (.seconds(60), 0) }
        let task = harness.start([try cronJob("backup")])
        for minute in [5, 10, 15] {
            try await harness.advance(to: offset(minute))
            try await eventually("the job for 10:\(minute) starts") { harness.scheduled.count == minute / 5 }
            try await harness.advance(to: offset(minute) + .seconds(60))
            try await eventually("it ends") { harness.finished.count == minute / 5 }
        }
        #expect(harness.scheduled.map(\.at) == [at(5), at(10), at(15)])
        #expect(harness.scheduled.map(\.job) == ["backup-29474525", "backup-29474530", "backup-29474535"])
        #expect(harness.finished.allSatisfy { $0.status.condition == .complete })
        #expect(harness.others.isEmpty)
        let status = try #require(await harness.controller.status("backup"))
        #expect(status.lastScheduleTime == at(15) && status.lastSuccessfulTime == at(16) && status.active.isEmpty)
        // The next wait is for 10:20.
        try await eventually("it waits for 10:20") { harness.clock.deadlines == [.init(offset: offset(20))] }
        try await harness.stop(task)
    }

    @Test func forbidSkipsWhileTheLastJobRunsAndStartsTheSkippedRunOnceItEnds() async throws {
        // Each job runs 7 minutes: the 10:05 job still runs at 10:10.
        let harness = try Harness { _ in (.seconds(420), 0) }
        let task = harness.start([try cronJob("report", policy: .forbid)])
        try await harness.advance(to: offset(5))
        try await eventually("the first job starts") { harness.scheduled.count == 1 }
        try await harness.launched(endingAt: offset(12))
        try await harness.advance(to: offset(10))
        try await eventually("10:10 is skipped") { !harness.others.isEmpty }
        #expect(harness.others == [.skipped(cronJob: "report", at: at(10), active: ["report-29474525"])])
        #expect(harness.scheduled.count == 1)
        #expect(await harness.cluster.snapshot.boundCount == 1)
        // As in Kubernetes, 10:10 stays due and starts when the first job ends at 10:12.
        try await harness.advance(to: offset(12))
        try await eventually("the skipped run starts") { harness.scheduled.count == 2 }
        #expect(harness.finished.map(\.job) == ["report-29474525"])
        #expect(harness.scheduled.last?.at == at(10) && harness.scheduled.last?.job == "report-29474530")
        try await eventually("it runs") { await harness.cluster.snapshot.boundCount == 1 }
        try await harness.stop(task)
    }

    @Test func forbidWithAShortStartingDeadlineDropsTheSkippedRun() async throws {
        let harness = try Harness { _ in (.seconds(420), 0) }
        let task = harness.start([try cronJob("report", policy: .forbid, startingDeadline: .seconds(60))])
        try await harness.advance(to: offset(5))
        try await eventually("the first job starts") { harness.scheduled.count == 1 }
        try await harness.launched(endingAt: offset(12))
        try await harness.advance(to: offset(10))
        try await eventually("10:10 is skipped") { harness.others.count == 1 }
        try await harness.advance(to: offset(12))
        try await eventually("10:10, now two minutes late, is missed") { harness.others.count == 2 }
        #expect(harness.others.last == .missed(cronJob: "report", at: at(10)))
        #expect(harness.scheduled.count == 1 && harness.finished.count == 1)
        try await harness.advance(to: offset(15))
        try await eventually("10:15 starts") { harness.scheduled.count == 2 }
        #expect(harness.scheduled.last?.at == at(15))
        try await harness.stop(task)
    }

    @Test func replaceStopsTheRunningJobAndStartsTheNewOne() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            // Jobs run until they are stopped.
            let harness = try Harness(store: store) { _ in (nil, 0) }
            let task = harness.start([try cronJob("sync", policy: .replace)])
            try await harness.advance(to: offset(5))
            try await eventually("the first job runs") { await harness.cluster.snapshot.boundCount == 1 }
            try await harness.advance(to: offset(10))
            try await eventually("the second job starts") { harness.scheduled.count == 2 }
            #expect(harness.others == [.replaced(cronJob: "sync", jobs: ["sync-29474525"])])
            let stopped = try #require(harness.finished.first)
            #expect(stopped.job == "sync-29474525" && stopped.status.condition == .failed && stopped.status.reason == "Cancelled")
            try await eventually("only the new job runs") { await harness.cluster.snapshot.boundCount == 1 }
            #expect(await harness.cluster.snapshot.nodes[0].workloads.map(\.name).allSatisfy { $0.hasPrefix("sync-29474530") })
            #expect(try store.job("sync-29474525")?.status.reason == "Cancelled")
            #expect(try store.job("sync-29474530")?.status.condition == .running)
            #expect(await harness.controller.status("sync")?.active == ["sync-29474530"])
            try await harness.stop(task)
            #expect(try store.job("sync-29474530")?.status.reason == "Cancelled")
        }
    }

    @Test func allowLetsJobsOverlap() async throws {
        let harness = try Harness { _ in (.seconds(420), 0) }
        let task = harness.start([try cronJob("report")])
        try await harness.advance(to: offset(5))
        try await eventually("the first job starts") { harness.scheduled.count == 1 }
        try await harness.launched(endingAt: offset(12))
        try await harness.advance(to: offset(10))
        try await eventually("the second starts beside it") { harness.scheduled.count == 2 }
        try await eventually("both run") { await harness.cluster.snapshot.boundCount == 2 }
        #expect(await harness.controller.status("report")?.active == ["report-29474525", "report-29474530"])
        try await harness.advance(to: offset(12))
        try await eventually("the first ends") { harness.finished.count == 1 }
        #expect(await harness.controller.status("report")?.active == ["report-29474530"])
        #expect(harness.others.isEmpty)
        try await harness.stop(task)
    }

    @Test func afterAGapOnlyTheLatestMissedRunStarts() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            // Saved two hours before the controller runs: 24 fire times passed.
            try store.saveCronJob(try cronJob("backup"), now: origin - 7200)
            let harness = try Harness(store: store) { _ in (.seconds(30), 0) }
            let task = harness.start()
            try await eventually("the 10:00 run starts") { harness.scheduled.count == 1 }
            #expect(harness.scheduled.first?.at == at(0) && harness.scheduled.first?.job == "backup-29474520")
            #expect(harness.others.isEmpty)
            try await eventually("the store has its status") { (try? store.cronJob("backup"))?.status.active == ["backup-29474520"] }
            #expect(try store.cronJob("backup")?.status.lastScheduleTime == at(0))
            try await harness.advance(to: .seconds(30))
            try await eventually("it ends") { harness.finished.count == 1 }
            let status = try #require(try store.cronJob("backup")?.status)
            #expect(status.active.isEmpty && status.lastSuccessfulTime == origin + 30)
            #expect(try store.job("backup-29474520")?.status.condition == .complete)
            try await harness.advance(to: offset(5))
            try await eventually("10:05 starts on time") { harness.scheduled.count == 2 }
            #expect(harness.scheduled.last?.at == at(5))
            try await harness.stop(task)
        }
    }

    @Test func moreThanAHundredMissedRunsAreReported() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            // Saved two days before: 576 fire times passed.
            try store.saveCronJob(try cronJob("backup"), now: origin - 2 * 86_400)
            let harness = try Harness(store: store) { _ in (.seconds(30), 0) }
            let task = harness.start()
            try await eventually("the 10:00 run starts") { harness.scheduled.count == 1 }
            #expect(harness.others == [.tooManyMissed(cronJob: "backup", count: 101)])
            #expect(harness.scheduled.map(\.at) == [at(0)])
            try await harness.stop(task)
        }
    }

    @Test(arguments: [(Duration.seconds(60), false), (Duration.seconds(300), true)])
    func aStartingDeadlineBoundsHowLateAMissedRunStarts(deadline: Duration, starts: Bool) async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            // Saved at 9:50; 10:00 is two minutes past when the controller starts.
            try store.saveCronJob(try cronJob("backup", startingDeadline: deadline), now: origin - 720)
            let harness = try Harness(store: store) { _ in (.seconds(30), 0) }
            let task = harness.start()
            if starts {
                try await eventually("the 10:00 run starts") { harness.scheduled.count == 1 }
                #expect(harness.scheduled.first?.at == at(0) && harness.others.isEmpty)
                try await harness.advance(to: .seconds(30))
                try await eventually("it ends") { harness.finished.count == 1 }
            } else {
                try await eventually("10:00 is missed") { !harness.others.isEmpty }
                #expect(harness.others == [.missed(cronJob: "backup", at: at(0))])
                #expect(harness.scheduled.isEmpty)
                #expect(try store.cronJob("backup")?.status.lastScheduleTime == nil)
            }
            try await harness.advance(to: offset(5))
            try await eventually("10:05 starts") { harness.scheduled.last?.at == at(5) }
            #expect(harness.scheduled.count == (starts ? 2 : 1))
            try await harness.stop(task)
        }
    }

    @Test func historyLimitsKeepTheNewestThreeCompletedAndOneFailedJob() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            // The first five jobs succeed, the next three fail.
            let runs = Mutex(0)
            let harness = try Harness(store: store) { _ in
                (.seconds(10), runs.withLock { $0 += 1; return $0 } <= 5 ? 0 : 1)
            }
            let task = harness.start([try cronJob("tick", "* * * * *", backoffLimit: 0)])
            for run in 1...8 {
                try await harness.advance(to: .seconds(60 * run))
                try await eventually("job \(run) starts") { harness.scheduled.count == run }
                try await harness.advance(to: .seconds(60 * run + 10))
                try await eventually("job \(run) ends") { harness.finished.count == run }
            }
            #expect(harness.finished.map(\.status.condition) == [.complete, .complete, .complete, .complete, .complete, .failed, .failed, .failed])
            let jobs = harness.scheduled.map(\.job)
            let kept = try store.jobs(cronJob: "tick")
            #expect(kept.map(\.name) == [jobs[7], jobs[4], jobs[3], jobs[2]])
            #expect(kept.map(\.status.condition) == [.failed, .complete, .complete, .complete])
            #expect(kept.first?.status.reason == "BackoffLimitExceeded")
            try await harness.stop(task)
        }
    }

    @Test func aSuspendedCronJobStartsNothingUntilResumed() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            try store.saveCronJob(try cronJob("held", suspend: true), now: origin)
            // Another cron job shows how far the controller got.
            try store.saveCronJob(try cronJob("witness"), now: origin)
            let harness = try Harness(store: store) { _ in (.seconds(30), 0) }
            let task = harness.start()
            for (index, minute) in [5, 10].enumerated() {
                try await harness.advance(to: offset(minute))
                try await eventually("the witness starts at 10:\(minute)") { harness.scheduled.count == index + 1 }
                try await harness.advance(to: offset(minute) + .seconds(30))
                try await eventually("its job ends") { harness.finished.count == index + 1 }
            }
            #expect(harness.events.allSatisfy { $0.cronJob == "witness" })

            // Resumed from another process: as in Kubernetes the latest
            // fire time missed (10:10) starts at once.
            try JobStore(root: StateRoot(path)).saveCronJob(try cronJob("held"))
            try await eventually("the held cron job starts") { harness.events.contains { $0.cronJob == "held" } }
            #expect(harness.events.filter { $0.cronJob == "held" } == [.scheduled(cronJob: "held", job: "held-29474530", at: at(10))])
            try await harness.stop(task)
        }
    }

    @Test func removingACronJobFromTheStoreStopsItsRuns() async throws {
        try await withTemporaryDirectory("cronjob") { path in
            let store = try JobStore(root: StateRoot(path))
            try store.saveCronJob(try cronJob("gone"), now: origin)
            let harness = try Harness(store: store) { _ in (.seconds(30), 0) }
            let task = harness.start()
            try await eventually("it waits for 10:05") { harness.clock.deadlines == [.init(offset: offset(5))] }
            try store.removeCronJob("gone")
            try await eventually("it waits no more") { harness.clock.deadlines.isEmpty }
            // Nothing starts at 10:05 or 10:10.
            harness.clock.advance(by: offset(10))
            try store.saveCronJob(try cronJob("new"), now: at(10))
            try await harness.advance(to: offset(15))
            try await eventually("the new cron job starts") { harness.scheduled.count == 1 }
            #expect(harness.scheduled.map(\.job) == ["new-29474535"])
            try await harness.stop(task)
        }
    }

    @Test func theLatestFireTimeIsFoundWithoutWalkingTheGap() throws {
        let schedule = try CronSchedule("*/5 * * * *", timeZoneIdentifier: "UTC")
        #expect(CronJobController.latest(schedule, after: at(0) - 86_400 * 30, through: at(4)) == at(0))
        #expect(CronJobController.latest(schedule, after: at(0) - 86_400 * 30, through: at(5)) == at(5))
        #expect(CronJobController.latest(schedule, after: at(0), through: at(4)) == nil)
        let yearly = try CronSchedule("0 0 1 1 *", timeZoneIdentifier: "UTC")
        #expect(CronJobController.latest(yearly, after: .distantPast, through: at(0))
            == Date(timeIntervalSince1970: 1_767_225_600))
        let spec = try cronJob("x", startingDeadline: .seconds(30))
        let due = CronJobController.due(spec, after: at(-10), through: at(2))
        #expect(due.latest == at(0) && due.tooLate && due.count == 0)
    }

    @Test func specsRoundTripAndDecodeWithDefaults() throws {
        var spec = try cronJob("nightly", "CRON_TZ=Europe/Berlin 30 2 * * *", policy: .replace, startingDeadline: .seconds(120))
        spec.job.resources = ResourceRequirements(requests: .cpus(0.5, memory: 64 << 20), limits: .cpus(1, memory: 128 << 20, pids: 64))
        spec.job.ttlAfterFinished = .seconds(3600)
        let data = try JSONEncoder().encode(spec)
        #expect(try JSONDecoder().decode(CronJobSpec.self, from: data) == spec)

        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ["concurrencyPolicy", "startingDeadline", "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "suspend"] {
            object[key] = nil
        }
        var job = try #require(object["job"] as? [String: Any])
        for key in ["resources", "priority", "queue", "completions", "backoffLimit", "ttlAfterFinished"] { job[key] = nil }
        object["job"] = job
        let decoded = try JSONDecoder().decode(CronJobSpec.self, from: try JSONSerialization.data(withJSONObject: object))
        #expect(decoded.concurrencyPolicy == .allow && decoded.startingDeadline == nil && !decoded.suspend)
        #expect(decoded.successfulJobsHistoryLimit == 3 && decoded.failedJobsHistoryLimit == 1)
        #expect(decoded.job.resources == ResourceRequirements() && decoded.job.queue == "default" && decoded.job.backoffLimit == 6)
        #expect(decoded.job.ttlAfterFinished == nil && decoded.job.container == spec.job.container)
        #expect(decoded.schedule == spec.schedule)

        let job2 = spec.job.jobSpec(named: "nightly-1")
        #expect(job2.name == "nightly-1" && job2.template.container == spec.job.container && job2.ttlAfterFinished == .seconds(3600))
        #expect(job2.template.resources == spec.job.resources)
    }

    @Test(arguments: invalidSpecs())
    func invalidCronJobsNameTheField(spec: CronJobSpec, message: String) {
        #expect { try spec.validate() } throws: { error in
            (error as? SchedulerError)?.code == .invalidSpec && "\(error)".contains(message)
        }
    }

    @Test func aValidCronJobPasses() throws {
        try cronJob("j").validate()
        try cronJob(String(repeating: "a", count: 52)).validate()
    }

    @Test func aNegativeTTLIsRefusedForAJob() {
        let job = JobSpec(name: "j", template: Workload(name: "t"), ttlAfterFinished: .seconds(-1))
        #expect { try job.validate() } throws: { "\($0)".contains("job \"j\": ttlAfterFinished") }
    }
}
