import Runtime
import Synchronization

/// A batch job: workloads run to completion, retried on failure, as
/// Kubernetes Jobs are.
///
/// A job needs ``completions`` successful runs, at most ``parallelism`` at
/// a time. With ``CompletionMode/indexed`` each index from 0 to
/// `completions - 1` must succeed once, and its runs get the index in the
/// `JOB_COMPLETION_INDEX` environment variable (and the
/// `gantry.job.completion-index` label). After each failure the next run
/// waits a back-off (10 s doubling to 6 minutes by default); the job fails
/// once more than ``backoffLimit`` runs have failed, or when it has run
/// longer than ``activeDeadline``. A ``JobStore`` forgets a finished job
/// ``ttlAfterFinished`` after it ended.
public struct JobSpec: Sendable {
    /// How completions are counted.
    public enum CompletionMode: String, Hashable, Sendable, Codable {
        /// Any `completions` successful runs.
        case nonIndexed = "NonIndexed"
        /// One successful run of each index.
        case indexed = "Indexed"
    }

    /// The job's name, the prefix of its workloads' names.
    public var name: String
    /// What each run is: its container, resources, priority and placement.
    /// Its name is replaced by one per run.
    public var template: Workload
    /// Successful runs needed.
    public var completions: Int
    /// Runs at once, at most.
    public var parallelism: Int
    public var completionMode: CompletionMode
    /// Failed runs tolerated; one more fails the job.
    public var backoffLimit: Int
    /// The wait before a run that follows failures: `backoffBase` doubled
    /// for each failure after the first, at most `backoffCap`.
    public var backoffBase: Duration
    public var backoffCap: Duration
    /// The longest the job may run before its runs are stopped and it fails.
    public var activeDeadline: Duration?
    /// How long a ``JobStore`` keeps the job's record once it has ended
    /// (`ttlSecondsAfterFinished`); `nil` keeps it until it is removed.
    public var ttlAfterFinished: Duration?

    /// A job; Kubernetes' defaults for what is not given.
    public init(name: String, template: Workload, completions: Int = 1, parallelism: Int = 1,
                completionMode: CompletionMode = .nonIndexed, backoffLimit: Int = 6,
                backoffBase: Duration = .seconds(10), backoffCap: Duration = .seconds(360), activeDeadline: Duration? = nil,
                ttlAfterFinished: Duration? = nil) {
        self.name = name
        self.template = template
        self.completions = completions
        self.parallelism = parallelism
        self.completionMode = completionMode
        self.backoffLimit = backoffLimit
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.activeDeadline = activeDeadline
        self.ttlAfterFinished = ttlAfterFinished
    }

    /// Checks the specification.
    ///
    /// - Throws: ``SchedulerError`` with code `invalidSpec` naming the field at fault.
    public func validate() throws {
        guard !name.isEmpty else { throw SchedulerError(.invalidSpec, "a job needs a name") }
        try validateFields(as: "job \"\(name)\"")
    }

    /// Checks every field but the name; errors start with `what`.
    func validateFields(as what: String) throws {
        func fail(_ why: String) -> SchedulerError { SchedulerError(.invalidSpec, "\(what): \(why)") }
        guard completions >= 1 else { throw fail("completions is \(completions); it must be at least 1") }
        guard parallelism >= 1 else { throw fail("parallelism is \(parallelism); it must be at least 1") }
        guard backoffLimit >= 0 else { throw fail("backoffLimit is \(backoffLimit); it must not be negative") }
        guard backoffBase >= .zero, backoffCap >= backoffBase else {
            throw fail("the back-off runs from \(backoffBase) to \(backoffCap); the cap must not be below the base")
        }
        if let activeDeadline, activeDeadline <= .zero { throw fail("activeDeadline \(activeDeadline) must be above 0") }
        if let ttlAfterFinished, ttlAfterFinished < .zero { throw fail("ttlAfterFinished \(ttlAfterFinished) must not be negative") }
        try template.resources.validate(what)
    }

    /// The wait before the next run after `failures` failed runs.
    public func backoff(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        var delay = backoffBase
        for _ in 1 ..< min(failures, 64) where delay < backoffCap { delay = delay * 2 }
        return min(delay, backoffCap)
    }
}

/// Where a job stands.
public struct JobStatus: Hashable, Sendable, Codable {
    /// How a job ended, or that it has not.
    public enum Condition: String, Hashable, Sendable, Codable {
        case running = "Running", complete = "Complete", failed = "Failed"
    }

    public var condition: Condition
    /// Why it failed: `BackoffLimitExceeded` or `DeadlineExceeded`; for a
    /// job recorded in a ``JobStore`` also `Cancelled` (its run was
    /// cancelled), `Error` (its runner threw; ``message`` says what) or
    /// `RunnerExited` (the process running it is gone).
    public var reason: String?
    /// What went wrong, when the reason alone does not say.
    public var message: String?
    /// Runs now running or waiting for room.
    public var active: Int
    public var succeeded: Int
    public var failed: Int
    /// The indexes that succeeded, for an indexed job.
    public var completedIndexes: [Int]

    /// A job that has not started.
    public init() {
        condition = .running
        active = 0
        succeeded = 0
        failed = 0
        completedIndexes = []
    }
}

/// Runs jobs on a ``Cluster``.
public struct JobRunner: Sendable {
    /// The label carrying the name of a run's job.
    public static let jobLabel = "gantry.job.name"
    /// The label carrying a run's completion index, for indexed jobs.
    public static let indexLabel = "gantry.job.completion-index"

    private let cluster: Cluster
    private let clock: ElapsedClock

    /// A runner placing the runs of its jobs on `cluster`, timing back-offs
    /// and deadlines on `clock`.
    public init<C: Clock & Sendable>(cluster: Cluster, clock: C = ContinuousClock())
    where C.Duration == Duration, C.Instant: Sendable {
        self.cluster = cluster
        self.clock = ElapsedClock(clock)
    }

    /// Runs `job` until it completes or fails.
    ///
    /// - Parameters:
    ///   - job: the job.
    ///   - update: called with the job's status after every change.
    /// - Returns: the final status; its condition is `complete` or `failed`.
    /// - Throws: ``SchedulerError`` for an invalid job or one whose runs can
    ///   never be placed; `CancellationError` when cancelled (its runs are stopped).
    public func run(_ job: JobSpec, update: @escaping @Sendable (JobStatus) -> Void = { _ in }) async throws -> JobStatus {
        try job.validate()
        let start = clock.now()
        let status = Mutex(JobStatus())
        func change(_ body: (inout JobStatus) -> Void) {
            let copy = status.withLock { status -> JobStatus in
                body(&status)
                return status
            }
            update(copy)
        }
        enum RunResult: Sendable {
            case exited(index: Int?, WorkloadExit)
            case deadline
        }
        // Indexes still to succeed (indexed) or runs still needed (non-indexed).
        var pending: [Int] = job.completionMode == .indexed ? Array(0 ..< job.completions) : []
        var needed = job.completions
        var active = 0
        var started = 0
        var failures = 0
        var nextStart = start

        return try await withThrowingTaskGroup(of: RunResult.self) { group in
            if let deadline = job.activeDeadline {
                group.addTask { [clock] in
                    try await clock.sleepUntil(start + deadline)
                    return .deadline
                }
            }
            func launch() {
                while active < job.parallelism, job.completionMode == .indexed ? !pending.isEmpty : active < needed {
                    let index: Int? = job.completionMode == .indexed ? pending.removeFirst() : nil
                    var workload = job.template
                    // Each run has a name of its own: the job, the index if any, a run counter.
                    workload.name = index.map { "\(job.name)-\($0)-\(started)" } ?? "\(job.name)-\(started)"
                    workload.labels[Self.jobLabel] = job.name
                    if let index {
                        workload.labels[Self.indexLabel] = String(index)
                        workload.container?.environment.append("JOB_COMPLETION_INDEX=\(index)")
                    }
                    started += 1
                    active += 1
                    let delay = nextStart
                    group.addTask { [cluster, clock, workload] in
                        if delay > clock.now() { try await clock.sleepUntil(delay) }
                        return .exited(index: index, try await cluster.run(workload))
                    }
                }
                change { $0.active = active }
            }
            /// Stops the runs still going and fails the job.
            func fail(_ reason: String) async -> JobStatus {
                group.cancelAll()
                while !group.isEmpty { _ = try? await group.next() }
                change {
                    $0.active = 0
                    $0.condition = .failed
                    $0.reason = reason
                }
                return status.withLock { $0 }
            }
            launch()
            while let result = try await group.next() {
                switch result {
                case .deadline:
                    return await fail("DeadlineExceeded")
                case .exited(let index, let exit):
                    active -= 1
                    if exit.succeeded {
                        needed -= 1
                        change {
                            $0.succeeded += 1
                            if let index { $0.completedIndexes = ($0.completedIndexes + [index]).sorted() }
                        }
                    } else {
                        failures += 1
                        if let index { pending.append(index) }
                        change { $0.failed += 1 }
                        if failures > job.backoffLimit { return await fail("BackoffLimitExceeded") }
                        nextStart = clock.now() + job.backoff(afterFailures: failures)
                    }
                    if needed == 0 {
                        group.cancelAll()
                        change {
                            $0.active = 0
                            $0.condition = .complete
                        }
                        return status.withLock { $0 }
                    }
                    launch()
                }
            }
            return status.withLock { $0 }
        }
    }
}
