public import Foundation
public import Logging
import Synchronization

/// What a ``CronJobController`` did, or chose not to do.
public enum CronJobEvent: Hashable, Sendable {
    /// A job was started for the fire time `at`.
    case scheduled(cronJob: String, job: String, at: Date)
    /// No job was started for the fire time `at` because jobs of the cron
    /// job run and its policy is `Forbid`.
    case skipped(cronJob: String, at: Date, active: [String])
    /// No job was started for the fire time `at`: its starting deadline passed.
    case missed(cronJob: String, at: Date)
    /// More than 100 fire times passed without a job; one was started for
    /// the latest. `count` is at least 101.
    case tooManyMissed(cronJob: String, count: Int)
    /// Jobs were stopped to start a new one (policy `Replace`).
    case replaced(cronJob: String, jobs: [String])
    /// A job completed or failed.
    case finished(cronJob: String, job: String, status: JobStatus)
    /// The store could not be read or written, or a job could not run.
    case error(cronJob: String?, message: String)

    /// The cron job the event is about, if any.
    public var cronJob: String? {
        switch self {
        case .scheduled(let name, _, _), .skipped(let name, _, _), .missed(let name, _), .tooManyMissed(let name, _),
             .replaced(let name, _), .finished(let name, _, _):
            name
        case .error(let name, _):
            name
        }
    }
}

/// Runs cron jobs on a ``Cluster``, as Kubernetes' CronJob controller does.
///
/// For each cron job the controller waits until the first fire time after
/// its last scheduled run (or after its creation), then starts a job for
/// it through a ``JobRunner``. When several fire times passed while it
/// could not start jobs (it was not running, or the cron job was
/// suspended), it starts one job, for the latest; more than 100 of them
/// are reported as ``CronJobEvent/tooManyMissed(cronJob:count:)``. A fire
/// time older than the cron job's starting deadline is skipped and
/// reported as missed.
///
/// With a store the controller records every job it starts and, after
/// each ends, removes the records of the cron job's jobs beyond its history
/// limits. Given no cron jobs it runs those of the store, their status
/// kept there, and picks up changes other processes make to them.
///
/// Times are read from a wall clock (cron schedules fire at dates) and
/// waited for on a clock, so a `ManualClock` with a wall clock derived
/// from it makes the controller testable.
public actor CronJobController {
    /// The label carrying the name of a run's cron job.
    public static let cronJobLabel = "gantry.cronjob.name"
    /// More missed fire times than this are too many (Kubernetes' limit).
    static let missedLimit = 100
    /// Fire times this close ahead count as due: converting between the
    /// clock and dates can make a wake-up land a hair early.
    private static let tolerance: TimeInterval = 0.001

    private struct Entry {
        var spec: CronJobSpec
        var status: CronJobStatus
        var createdAt: Date
        /// Whether the status is kept in the store.
        var stored: Bool
        /// Fire times up to this one are dealt with: started or missed.
        var handled: Date?
        /// The latest fire time whose warnings (skipped, too many missed) were given.
        var noticed: Date?
    }

    private struct RunningJob {
        var cronJob: String
        var task: Task<Void, Never>
    }

    private let store: JobStore?
    private let runner: JobRunner
    private let clock: ElapsedClock
    private let wallClock: @Sendable () -> Date
    private let pollInterval: Duration
    private let logger: Logger
    private let wake = WakeSignal()
    private var entries: [String: Entry] = [:]
    private var running: [String: RunningJob] = [:]
    private var emit: @Sendable (CronJobEvent) -> Void = { _ in }
    private var isRunning = false

    /// A controller starting the jobs of its cron jobs on `cluster`.
    ///
    /// - Parameters:
    ///   - cluster: where jobs run.
    ///   - store: where jobs (and, when ``run(_:events:)`` is given no cron
    ///     jobs, the cron jobs) are recorded; `nil` keeps nothing.
    ///   - clock: the clock waits, back-offs and deadlines are timed on.
    ///   - wallClock: the time it is, which cron schedules are matched against.
    ///   - pollInterval: how often the store is checked for changes to its
    ///     cron jobs, in real time.
    ///   - logger: where what the controller does is logged.
    public init<C: Clock & Sendable>(cluster: Cluster, store: JobStore?, clock: C = ContinuousClock(),
                                     wallClock: @escaping @Sendable () -> Date = Date.init, pollInterval: Duration = .seconds(1),
                                     logger: Logger = Logger(label: "gantry.scheduler"))
    where C.Duration == Duration, C.Instant: Sendable {
        self.store = store
        runner = JobRunner(cluster: cluster, clock: clock)
        self.clock = ElapsedClock(clock)
        self.wallClock = wallClock
        self.pollInterval = pollInterval
        self.logger = logger
    }

    /// What the controller last did for the cron job `name`, while it runs it.
    public func status(_ name: String) -> CronJobStatus? { entries[name]?.status }

    /// Runs cron jobs until cancelled, then stops the jobs it started.
    ///
    /// - Parameters:
    ///   - specs: the cron jobs; `nil` runs the store's, following their changes.
    ///   - events: called with what the controller does.
    /// - Throws: ``SchedulerError`` for an invalid cron job, two of the same
    ///   name, no cron jobs and no store, a store that cannot be read at
    ///   first, or a controller running already.
    public func run(_ specs: [CronJobSpec]? = nil, events: @escaping @Sendable (CronJobEvent) -> Void = { _ in }) async throws {
        guard !isRunning else { throw SchedulerError(.exists, "the cron job controller runs already") }
        var version: Int?
        entries = [:]
        if let specs {
            let now = wallClock()
            for spec in specs {
                try spec.validate()
                guard entries[spec.name] == nil else { throw SchedulerError(.invalidSpec, "two cron jobs are named \"\(spec.name)\"") }
                entries[spec.name] = Entry(spec: spec, status: CronJobStatus(), createdAt: now, stored: false)
            }
        } else if let store {
            let counter = try store.changeCounter()
            try reload(store)
            version = counter
        } else {
            throw SchedulerError(.invalidSpec, "a cron job controller without a store must be given its cron jobs")
        }
        isRunning = true
        emit = events
        while !Task.isCancelled {
            if specs == nil, let store {
                do {
                    let counter = try store.changeCounter()
                    if counter != version {
                        try reload(store)
                        version = counter
                    }
                } catch {
                    report(.error(cronJob: nil, message: "\(error)"))
                }
            }
            let now = wallClock().addingTimeInterval(Self.tolerance)
            var wake: Date?
            for name in entries.keys.sorted() {
                guard let next = await evaluate(name, now: now) else { continue }
                wake = min(wake ?? next, next)
            }
            await sleep(until: wake, polling: specs == nil ? store : nil, since: version)
        }
        await stop(Array(running.keys))
        emit = { _ in }
        isRunning = false
    }

    /// Reads the store's cron jobs: new ones are added with their stored
    /// status, changed specs taken over, removed ones dropped (their jobs go on).
    private func reload(_ store: JobStore) throws {
        let records = try store.cronJobs()
        let names = Set(records.map(\.spec.name))
        for name in entries.keys where !names.contains(name) {
            entries[name] = nil
            logger.info("cron job removed", metadata: ["cronjob": "\(name)"])
        }
        for record in records {
            let name = record.spec.name
            if entries[name] != nil {
                entries[name]?.spec = record.spec
                entries[name]?.createdAt = record.createdAt
            } else {
                entries[name] = Entry(spec: record.spec, status: record.status, createdAt: record.createdAt, stored: true)
            }
        }
    }

    /// Starts, skips or reports what is due of the cron job `name`.
    ///
    /// - Returns: the next fire time to wake for, if any.
    private func evaluate(_ name: String, now: Date) async -> Date? {
        refreshActive(name, now: now)
        guard let entry = entries[name], !entry.spec.suspend else { return nil }
        let spec = entry.spec
        let earliest = max(entry.status.lastScheduleTime ?? entry.createdAt, entry.handled ?? .distantPast)
        let next = spec.schedule.next(after: max(now, earliest))
        let due = Self.due(spec, after: earliest, through: now)
        guard let latest = due.latest else { return next }
        let fresh = entry.noticed != latest
        entries[name]?.noticed = latest
        if due.tooLate {
            entries[name]?.handled = latest
            report(.missed(cronJob: name, at: latest))
            return next
        }
        if due.count > Self.missedLimit, fresh { report(.tooManyMissed(cronJob: name, count: due.count)) }
        let active = entry.status.active
        if !active.isEmpty {
            switch spec.concurrencyPolicy {
            case .allow:
                break
            case .forbid:
                // As Kubernetes does, the fire time stays due: its job starts
                // once the active ones end, unless the deadline passed by then.
                if fresh { report(.skipped(cronJob: name, at: latest, active: active)) }
                return next
            case .replace:
                report(.replaced(cronJob: name, jobs: active))
                await stop(active)
            }
        }
        start(name, at: latest)
        return next
    }

    /// The latest fire time of `spec` after `earliest` and no later than
    /// `now`; how many fire times there are from the starting deadline (or
    /// `earliest`) to `now`, counted up to one more than ``missedLimit``;
    /// and whether the latest is past its starting deadline.
    static func due(_ spec: CronJobSpec, after earliest: Date, through now: Date) -> (latest: Date?, count: Int, tooLate: Bool) {
        let schedule = spec.schedule
        var start = earliest
        if let deadline = spec.startingDeadline { start = max(earliest, now.addingTimeInterval(-deadline.timeInterval)) }
        var count = 0
        var latest: Date?
        var cursor = start
        while count <= missedLimit, let fire = schedule.next(after: cursor), fire <= now {
            count += 1
            latest = fire
            cursor = fire
        }
        if count > missedLimit, let last = Self.latest(schedule, after: cursor, through: now) { latest = last }
        if let latest { return (latest, count, false) }
        if start > earliest, let missed = Self.latest(schedule, after: earliest, through: start) { return (missed, 0, true) }
        return (nil, 0, false)
    }

    /// The latest fire time after `start` and no later than `end`, found
    /// from windows before `end` that double until one holds a fire time,
    /// so that a long gap is not walked fire time by fire time.
    static func latest(_ schedule: CronSchedule, after start: Date, through end: Date) -> Date? {
        var window: TimeInterval = 60
        while true {
            let from = max(start, end.addingTimeInterval(-window))
            if let first = schedule.next(after: from), first <= end {
                var latest = first
                while let fire = schedule.next(after: latest), fire <= end { latest = fire }
                return latest
            }
            if from == start { return nil }
            window *= 2
        }
    }

    /// Drops from the cron job's active jobs those that no longer run:
    /// none of this controller's, and not recorded as running by another process.
    private func refreshActive(_ name: String, now: Date) {
        guard let active = entries[name]?.status.active, !active.isEmpty else { return }
        let still = active.filter { job in
            if running[job] != nil { return true }
            guard let store else { return false }
            do {
                return try store.job(job, now: now)?.status.condition == .running
            } catch {
                report(.error(cronJob: name, message: "\(error)"))
                return true
            }
        }
        guard still != active else { return }
        entries[name]?.status.active = still
        saveStatus(name)
    }

    /// Starts the job of the cron job `cronJob` for the fire time `time`.
    private func start(_ cronJob: String, at time: Date) {
        guard var entry = entries[cronJob] else { return }
        let jobName = "\(cronJob)-\(Int64((time.timeIntervalSince1970 / 60).rounded(.down)))"
        var job = entry.spec.job.jobSpec(named: jobName)
        job.template.labels[Self.cronJobLabel] = cronJob
        entry.status.lastScheduleTime = time
        entry.status.active.append(jobName)
        entry.handled = time
        entries[cronJob] = entry
        saveStatus(cronJob)
        report(.scheduled(cronJob: cronJob, job: jobName, at: time))
        let (runner, store, wallClock) = (runner, store, wallClock)
        let task = Task.detached {
            let latest = Mutex(JobStatus())
            let status: JobStatus
            do {
                let update: @Sendable (JobStatus) -> Void = { status in latest.withLock { $0 = status } }
                status = if let store {
                    try await runner.run(job, recordingIn: store, cronJob: cronJob, wallClock: wallClock, update: update)
                } else {
                    try await runner.run(job, update: update)
                }
            } catch {
                status = JobStatus(endedBy: error, after: latest.withLock { $0 })
                if !(error is CancellationError) { await self.report(.error(cronJob: cronJob, message: "job \(jobName): \(error)")) }
            }
            await self.finished(cronJob, jobName, status)
        }
        running[jobName] = RunningJob(cronJob: cronJob, task: task)
    }

    /// Notes the end of a job: the cron job's status, its history, a wake-up.
    private func finished(_ cronJob: String, _ job: String, _ status: JobStatus) {
        running[job] = nil
        if entries[cronJob] != nil {
            entries[cronJob]?.status.active.removeAll { $0 == job }
            if status.condition == .complete { entries[cronJob]?.status.lastSuccessfulTime = wallClock() }
            saveStatus(cronJob)
            if let spec = entries[cronJob]?.spec { pruneHistory(spec) }
        }
        report(.finished(cronJob: cronJob, job: job, status: status))
        wake.signal()
    }

    /// Removes the records of the cron job's ended jobs beyond its history limits, oldest first.
    private func pruneHistory(_ spec: CronJobSpec) {
        guard let store else { return }
        do {
            let records = try store.jobs(cronJob: spec.name, now: wallClock())
            let complete = records.filter { $0.status.condition == .complete }.dropFirst(spec.successfulJobsHistoryLimit)
            let failed = records.filter { $0.status.condition == .failed }.dropFirst(spec.failedJobsHistoryLimit)
            for record in complete + failed { try store.remove(record.name) }
        } catch {
            report(.error(cronJob: spec.name, message: "\(error)"))
        }
    }

    /// Cancels the jobs `names` and waits until they have ended.
    private func stop(_ names: [String]) async {
        let tasks = names.compactMap { running[$0]?.task }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// Writes the cron job's status to the store, when it is kept there.
    private func saveStatus(_ name: String) {
        guard let store, let entry = entries[name], entry.stored else { return }
        do {
            try store.setCronStatus(name, entry.status)
        } catch let error as SchedulerError where error.code == .notFound {
            // Removed from the store meanwhile; the next reload drops it.
        } catch {
            report(.error(cronJob: name, message: "\(error)"))
        }
    }

    /// Sleeps until `date`, a job ends, the store changes or the task is cancelled.
    private func sleep(until date: Date?, polling store: JobStore?, since version: Int?) async {
        let (clock, wake, pollInterval) = (clock, wake, pollInterval)
        let wait = date.map { max(0, $0.timeIntervalSince(wallClock())) }
        await withTaskGroup(of: Void.self) { group in
            if let wait { group.addTask { try? await clock.sleep(.seconds(wait)) } }
            group.addTask { await wake.wait() }
            if let store {
                group.addTask {
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: pollInterval) } catch { return }
                        if (try? store.changeCounter()) != version { return }
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    private func report(_ event: CronJobEvent) {
        switch event {
        case .scheduled(let cronJob, let job, let time):
            logger.info("job started", metadata: ["cronjob": "\(cronJob)", "job": "\(job)", "scheduled": "\(time)"])
        case .skipped(let cronJob, let time, let active):
            logger.info("job not started: jobs of the cron job run and its policy is Forbid",
                        metadata: ["cronjob": "\(cronJob)", "scheduled": "\(time)", "active": "\(active)"])
        case .missed(let cronJob, let time):
            logger.warning("job not started: its starting deadline passed", metadata: ["cronjob": "\(cronJob)", "scheduled": "\(time)"])
        case .tooManyMissed(let cronJob, let count):
            logger.warning("too many missed start times; starting the latest only", metadata: ["cronjob": "\(cronJob)", "missed": "\(count)"])
        case .replaced(let cronJob, let jobs):
            logger.info("stopping jobs to start a new one (policy Replace)", metadata: ["cronjob": "\(cronJob)", "jobs": "\(jobs)"])
        case .finished(let cronJob, let job, let status):
            logger.info("job ended", metadata: [
                "cronjob": "\(cronJob)", "job": "\(job)", "condition": "\(status.condition.rawValue)", "reason": "\(status.reason ?? "")",
            ])
        case .error(let cronJob, let message):
            logger.error("\(message)", metadata: ["cronjob": "\(cronJob ?? "")"])
        }
        emit(event)
    }
}

/// A wake-up call that waits to be taken when nobody is waiting for it.
final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// Wakes the waiter, or the next one.
    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns once signalled (at once when a signal is pending) or cancelled.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resume = state.withLock { state -> Bool in
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    if Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if resume { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
