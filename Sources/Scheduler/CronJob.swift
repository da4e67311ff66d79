import Foundation
public import Runtime

/// What each job of a cron job is: its container, resources, priority and
/// queue, and how the job runs and retries (see ``JobSpec``).
///
/// Decoding gives the fields that are missing, all but `container`, the
/// initializer's defaults.
public struct JobTemplate: Codable, Hashable, Sendable {
    /// What each run of a job runs.
    public var container: ContainerSpec
    /// What each run asks for and may use.
    public var resources: ResourceRequirements
    /// Higher runs first and may preempt lower.
    public var priority: Int
    /// The admission queue runs wait in.
    public var queue: String
    /// Successful runs a job needs.
    public var completions: Int
    /// Runs of a job at once, at most.
    public var parallelism: Int
    /// How completions are counted.
    public var completionMode: JobSpec.CompletionMode
    /// Failed runs a job tolerates; one more fails it.
    public var backoffLimit: Int
    /// The first wait before a run that follows a failure.
    public var backoffBase: Duration
    /// The longest wait before a run that follows failures.
    public var backoffCap: Duration
    /// The longest a job may run before its runs are stopped and it fails.
    public var activeDeadline: Duration?
    /// How long a ``JobStore`` keeps a job's record once it has ended.
    public var ttlAfterFinished: Duration?

    /// A template; Kubernetes' defaults for what is not given.
    public init(container: ContainerSpec, resources: ResourceRequirements = ResourceRequirements(), priority: Int = 0,
                queue: String = "default", completions: Int = 1, parallelism: Int = 1,
                completionMode: JobSpec.CompletionMode = .nonIndexed, backoffLimit: Int = 6,
                backoffBase: Duration = .seconds(10), backoffCap: Duration = .seconds(360),
                activeDeadline: Duration? = nil, ttlAfterFinished: Duration? = nil) {
        self.container = container
        self.resources = resources
        self.priority = priority
        self.queue = queue
        self.completions = completions
        self.parallelism = parallelism
        self.completionMode = completionMode
        self.backoffLimit = backoffLimit
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.activeDeadline = activeDeadline
        self.ttlAfterFinished = ttlAfterFinished
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = JobTemplate(container: try values.decode(ContainerSpec.self, forKey: .container))
        self = defaults
        resources = try values.decodeIfPresent(ResourceRequirements.self, forKey: .resources) ?? defaults.resources
        priority = try values.decodeIfPresent(Int.self, forKey: .priority) ?? defaults.priority
        queue = try values.decodeIfPresent(String.self, forKey: .queue) ?? defaults.queue
        completions = try values.decodeIfPresent(Int.self, forKey: .completions) ?? defaults.completions
        parallelism = try values.decodeIfPresent(Int.self, forKey: .parallelism) ?? defaults.parallelism
        completionMode = try values.decodeIfPresent(JobSpec.CompletionMode.self, forKey: .completionMode) ?? defaults.completionMode
        backoffLimit = try values.decodeIfPresent(Int.self, forKey: .backoffLimit) ?? defaults.backoffLimit
        backoffBase = try values.decodeIfPresent(Duration.self, forKey: .backoffBase) ?? defaults.backoffBase
        backoffCap = try values.decodeIfPresent(Duration.self, forKey: .backoffCap) ?? defaults.backoffCap
        activeDeadline = try values.decodeIfPresent(Duration.self, forKey: .activeDeadline)
        ttlAfterFinished = try values.decodeIfPresent(Duration.self, forKey: .ttlAfterFinished)
    }

    /// The job `name` this template describes; its runs are named after it.
    public func jobSpec(named name: String) -> JobSpec {
        JobSpec(name: name, template: Workload(name: name, container: container, resources: resources, priority: priority, queue: queue),
                completions: completions, parallelism: parallelism, completionMode: completionMode, backoffLimit: backoffLimit,
                backoffBase: backoffBase, backoffCap: backoffCap, activeDeadline: activeDeadline, ttlAfterFinished: ttlAfterFinished)
    }
}

/// A job started on a cron schedule, as Kubernetes CronJobs are; a
/// ``CronJobController`` runs it.
///
/// At each time its ``schedule`` fires the controller starts a job from
/// ``job``, named `<name>-<the fire time in minutes since 1970>`. When it
/// was not running at fire times, it starts one job for the latest of them;
/// ``startingDeadline`` bounds how late that may be. ``concurrencyPolicy``
/// says what happens when a job of the cron job still runs at a fire time.
/// The store keeps the newest ``successfulJobsHistoryLimit`` completed and
/// ``failedJobsHistoryLimit`` failed jobs of the cron job.
///
/// Decoding gives the fields that are missing, all but `name`, `schedule`
/// and `job`, the initializer's defaults.
public struct CronJobSpec: Codable, Hashable, Sendable {
    /// What to do at a fire time when a job of the cron job still runs.
    public enum ConcurrencyPolicy: String, Codable, Hashable, Sendable, CaseIterable {
        /// Start the new job besides it.
        case allow = "Allow"
        /// Start none while it runs; the latest fire time missed so is
        /// started once it ends, unless that is past the starting deadline.
        case forbid = "Forbid"
        /// Stop it and start the new job.
        case replace = "Replace"
    }

    /// The longest a cron job's name may be, so that its jobs' names stay
    /// within 63 characters.
    public static let maxNameLength = 52

    /// The cron job's name, the prefix of its jobs' names.
    public var name: String
    /// When jobs start.
    public var schedule: CronSchedule
    /// What each job is.
    public var job: JobTemplate
    /// What to do at a fire time when a job of the cron job still runs.
    public var concurrencyPolicy: ConcurrencyPolicy
    /// How late after its fire time a job may still start; `nil`: any time.
    public var startingDeadline: Duration?
    /// The completed jobs whose records are kept, newest first.
    public var successfulJobsHistoryLimit: Int
    /// The failed jobs whose records are kept, newest first.
    public var failedJobsHistoryLimit: Int
    /// Whether new jobs are held back; running ones go on.
    public var suspend: Bool

    /// A cron job; Kubernetes' defaults for what is not given.
    public init(name: String, schedule: CronSchedule, job: JobTemplate, concurrencyPolicy: ConcurrencyPolicy = .allow,
                startingDeadline: Duration? = nil, successfulJobsHistoryLimit: Int = 3, failedJobsHistoryLimit: Int = 1,
                suspend: Bool = false) {
        self.name = name
        self.schedule = schedule
        self.job = job
        self.concurrencyPolicy = concurrencyPolicy
        self.startingDeadline = startingDeadline
        self.successfulJobsHistoryLimit = successfulJobsHistoryLimit
        self.failedJobsHistoryLimit = failedJobsHistoryLimit
        self.suspend = suspend
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try values.decode(String.self, forKey: .name), schedule: try values.decode(CronSchedule.self, forKey: .schedule),
                  job: try values.decode(JobTemplate.self, forKey: .job))
        concurrencyPolicy = try values.decodeIfPresent(ConcurrencyPolicy.self, forKey: .concurrencyPolicy) ?? concurrencyPolicy
        startingDeadline = try values.decodeIfPresent(Duration.self, forKey: .startingDeadline)
        successfulJobsHistoryLimit = try values.decodeIfPresent(Int.self, forKey: .successfulJobsHistoryLimit) ?? successfulJobsHistoryLimit
        failedJobsHistoryLimit = try values.decodeIfPresent(Int.self, forKey: .failedJobsHistoryLimit) ?? failedJobsHistoryLimit
        suspend = try values.decodeIfPresent(Bool.self, forKey: .suspend) ?? suspend
    }

    /// Checks the specification.
    ///
    /// - Throws: ``SchedulerError`` with code `invalidSpec` naming the field at fault.
    public func validate() throws {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") }
        guard !name.isEmpty, name.count <= Self.maxNameLength, allowed, name.first?.isLetter == true || name.first?.isNumber == true else {
            throw SchedulerError(.invalidSpec, """
                "\(name)" is not a valid cron job name: use up to \(Self.maxNameLength) letters, digits, _ . -, \
                starting with a letter or digit
                """)
        }
        func fail(_ why: String) -> SchedulerError { SchedulerError(.invalidSpec, "cron job \"\(name)\": \(why)") }
        guard schedule.next(after: Date()) != nil else { throw fail("the schedule \"\(schedule)\" never fires") }
        if let startingDeadline, startingDeadline < .zero { throw fail("startingDeadline \(startingDeadline) must not be negative") }
        guard successfulJobsHistoryLimit >= 0 else {
            throw fail("successfulJobsHistoryLimit is \(successfulJobsHistoryLimit); it must not be negative")
        }
        guard failedJobsHistoryLimit >= 0 else { throw fail("failedJobsHistoryLimit is \(failedJobsHistoryLimit); it must not be negative") }
        try job.jobSpec(named: name).validateFields(as: "cron job \"\(name)\"")
    }
}
