import ArgumentParser
import Foundation
import Gantry
import Synchronization

/// What each run of a job is and how the job proceeds: the options `job
/// run` and `cron create` share.
struct JobOptions: ParsableArguments {
    @Option(help: "Successful runs needed.") var completions = 1
    @Option(help: "Runs at once, at most.") var parallelism = 1
    @Flag(help: "Run each index from 0 to completions - 1 once, with the index in JOB_COMPLETION_INDEX.") var indexed = false
    @Option(name: .customLong("backoff-limit"), help: "Failed runs tolerated; one more fails the job.") var backoffLimit = 6
    @Option(name: .customLong("backoff-base"), help: ArgumentHelp("The wait after the first failure, doubled after each next one.", valueName: "duration"))
    var backoffBase = "10s"
    @Option(name: .customLong("backoff-cap"), help: ArgumentHelp("The longest wait between runs.", valueName: "duration")) var backoffCap = "6m"
    @Option(help: ArgumentHelp("Stop the runs and fail the job after this long.", valueName: "duration")) var deadline: String?
    @Option(help: ArgumentHelp("Forget the finished job after this long.", valueName: "duration")) var ttl: String?
    @Option(help: "CPUs each run may use, and requests (0.5: half a CPU).") var cpus: Double?
    @Option(help: ArgumentHelp("The memory each run may use, and requests (64m, 1g).", valueName: "size")) var memory: String?
    @Option(help: "The most processes and threads of each run.") var pids: Int64?
    @Option(help: "The runs' priority: higher is admitted first and may preempt lower.") var priority = 0
    @Option(name: .shortAndLong, help: ArgumentHelp("Set an environment variable.", valueName: "KEY=VALUE")) var env: [String] = []
    @Option(name: .shortAndLong, help: "The working directory.") var workdir: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("The user: uid[:gid] or a name from the image.", valueName: "user")) var user: String?

    /// The runs' template for `image` running `command` (the image's when empty).
    func template(image: String, command: [String]) throws -> JobTemplate {
        var container = ContainerSpec(image: image, command: command.isEmpty ? nil : command)
        container.environment = env
        container.workingDirectory = workdir
        container.user = user
        let memory = try self.memory.map(parseSize)
        let limits = ResourceAmounts.cpus(cpus, memory: memory, pids: pids)
        return JobTemplate(
            container: container, resources: ResourceRequirements(limits: limits), priority: priority,
            completions: completions, parallelism: parallelism, completionMode: indexed ? .indexed : .nonIndexed,
            backoffLimit: backoffLimit, backoffBase: try parseDuration(backoffBase), backoffCap: try parseDuration(backoffCap),
            activeDeadline: try deadline.map(parseDuration), ttlAfterFinished: try ttl.map(parseDuration))
    }
}

struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Run batch jobs to completion, retrying failed runs, and list them.",
        subcommands: [Run.self, List.self, Remove.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a job in the foreground until it completes or fails.",
            discussion: "Runs wait for room on this host (CPU, memory and pids requests), higher priorities first. Exits 0 when the job completed, 1 when it failed.")
        @Option(help: "The job's name (default: the image's name and a random suffix).") var name: String?
        @OptionGroup var job: JobOptions
        @Flag(name: .shortAndLong, help: "Print only the runs' output and the final status.") var quiet = false
        @Argument(help: "The image.") var image: String
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (default: the image's).") var command: [String] = []
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let base = image.split(separator: "/").last.map { String($0.split(separator: ":").first ?? $0) } ?? "job"
            let name = self.name ?? base + "-" + String(UUID().uuidString.prefix(5).lowercased())
            let spec = try job.template(image: image, command: command).jobSpec(named: name)
            try spec.validate()
            let gantry = try await global.openGantry()
            let store = try JobStore(root: gantry.root)
            var node = try LocalNode(runtime: try gantry.containers)
            node.output = printWorkloadOutput
            let cluster = try Cluster(nodes: [node])
            let quiet = self.quiet
            let last = Mutex("")
            let status: JobStatus
            do {
                status = try await untilSignalled {
                    try await JobRunner(cluster: cluster).run(spec, recordingIn: store, update: { status in
                        let line = "job \(name): \(JobCommand.describe(status, completions: spec.completions))"
                        if !quiet, last.withLock({ last in defer { last = line }; return last != line }) { say(line) }
                    })
                }
            } catch is CancellationError {
                say("job \(name) stopped: its runs were stopped")
                throw ExitCode(130)
            }
            say("job \(name) \(status.condition == .complete ? "complete" : "failed")\(status.reason.map { ": \($0)" } ?? ""): "
                + "\(status.succeeded) succeeded, \(status.failed) failed")
            if status.condition != .complete { throw ExitCode(1) }
        }
    }

    /// A status in words.
    static func describe(_ status: JobStatus, completions: Int) -> String {
        "\(status.active) active, \(status.succeeded)/\(completions) succeeded, \(status.failed) failed"
    }

    /// What `job ls --format json` prints.
    struct Summary: Encodable {
        var name: String
        var cronJob: String?
        var image: String?
        var condition: String
        var reason: String?
        var completions: Int
        var parallelism: Int
        var active: Int
        var succeeded: Int
        var failed: Int
        var createdAt: String?
        var finishedAt: String?

        init(_ record: JobRecord) {
            name = record.name
            cronJob = record.cronJob
            image = record.image
            condition = record.status.condition.rawValue
            reason = record.status.reason
            completions = record.completions
            parallelism = record.parallelism
            active = record.status.active
            succeeded = record.status.succeeded
            failed = record.status.failed
            createdAt = formatTime(record.createdAt)
            finishedAt = formatTime(record.finishedAt)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List jobs, with their succeeded and failed runs.")
        @Option(name: .long, help: "Only the jobs of this cron job.") var cron: String?
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let records = try JobStore(root: global.stateRoot).jobs(cronJob: cron)
            switch output.format {
            case .json: try Terminal.printJSON(records.map(Summary.init))
            case .table:
                Terminal.printTable(["NAME", "STATUS", "COMPLETIONS", "ACTIVE", "FAILED", "CREATED", "FINISHED"], records.map { record in
                    let status = record.status
                    return [record.name, status.condition.rawValue + (status.reason.map { " (\($0))" } ?? ""),
                            "\(status.succeeded)/\(record.completions)", "\(status.active)", "\(status.failed)",
                            formatTime(record.createdAt) ?? "", formatTime(record.finishedAt) ?? ""]
                })
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Forget finished jobs.")
        @Argument(help: "The jobs.") var names: [String]
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try JobStore(root: global.stateRoot)
            for name in names {
                guard let record = try store.job(name) else { throw ValidationError("no job \(name)") }
                guard record.status.condition != .running else { throw ValidationError("job \(name) is still running; stop its gantry job run first") }
                try store.remove(name)
                print(name)
            }
        }
    }
}

struct CronCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cron", abstract: "Run jobs on a schedule: create, list and remove cron jobs, and serve them.",
        discussion: "Cron jobs are kept in the state root; gantry cron serve runs them, in the foreground, until SIGINT or SIGTERM.",
        subcommands: [Create.self, List.self, Remove.self, Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the stored cron jobs in the foreground until SIGINT or SIGTERM, following changes to them.",
            discussion: "Their jobs run on this host, admitted by their requests. At exit, jobs still running are stopped.")
        @Flag(name: .shortAndLong, help: "Print no events and no output of the jobs' runs.") var quiet = false
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let gantry = try await global.openGantry()
            let store = try JobStore(root: gantry.root)
            var node = try LocalNode(runtime: try gantry.containers)
            if !quiet { node.output = printWorkloadOutput }
            let cluster = try Cluster(nodes: [node])
            let controller = CronJobController(cluster: cluster, store: store, logger: global.logger)
            let quiet = self.quiet
            say("serving \(try store.cronJobs().count) cron jobs; Ctrl-C stops")
            do {
                try await untilSignalled {
                    try await controller.run { event in
                        if !quiet { say("\(formatTime(Date()) ?? "") \(CronCommand.describe(event))") }
                    }
                }
            } catch is CancellationError {}
        }
    }

    /// An event in words.
    static func describe(_ event: CronJobEvent) -> String {
        switch event {
        case .scheduled(let cron, let job, let at): "\(cron): job \(job) started for \(formatTime(at) ?? "")"
        case .skipped(let cron, let at, let active): "\(cron): run of \(formatTime(at) ?? "") waits: \(active.joined(separator: ", ")) still running (Forbid)"
        case .missed(let cron, let at): "\(cron): run of \(formatTime(at) ?? "") missed its starting deadline"
        case .tooManyMissed(let cron, let count): "\(cron): warning: \(count) or more start times missed; started the latest"
        case .replaced(let cron, let jobs): "\(cron): stopped \(jobs.joined(separator: ", ")) to start a new run (Replace)"
        case .finished(let cron, let job, let status):
            "\(cron): job \(job) \(status.condition.rawValue.lowercased())\(status.reason.map { " (\($0))" } ?? ""), \(status.succeeded) succeeded, \(status.failed) failed"
        case .error(let cron, let message): "\(cron ?? "cron"): error: \(message)"
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (or replace) a cron job.")
        @Argument(help: "The cron job's name.") var name: String
        @Option(help: ArgumentHelp("Five fields (minute hour day-of-month month day-of-week) or @daily and its family; CRON_TZ=Zone first for a time zone.", valueName: "schedule"))
        var schedule: String
        @Option(name: .customLong("concurrency-policy"), help: "Allow, Forbid (skip a run while the last one runs) or Replace (stop it).")
        var concurrencyPolicy = "Allow"
        @Option(name: .customLong("starting-deadline"), help: ArgumentHelp("Skip a run that could not start within this long of its time.", valueName: "duration"))
        var startingDeadline: String?
        @Option(name: .customLong("successful-history"), help: "Completed jobs kept.") var successfulHistory = 3
        @Option(name: .customLong("failed-history"), help: "Failed jobs kept.") var failedHistory = 1
        @Flag(help: "Create it suspended: no runs until created again without --suspend.") var suspend = false
        @OptionGroup var job: JobOptions
        @Argument(help: "The image.") var image: String
        @Argument(parsing: .allUnrecognized, help: "The command and its arguments (default: the image's; put -- before it when its options are also this command's).") var command: [String] = []
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            guard let policy = CronJobSpec.ConcurrencyPolicy(rawValue: concurrencyPolicy) else {
                throw ValidationError("--concurrency-policy \(concurrencyPolicy) is not Allow, Forbid or Replace")
            }
            // The -- that sets the command apart is not part of it.
            let command = command.first == "--" ? Array(command.dropFirst()) : command
            var spec = CronJobSpec(name: name, schedule: try CronSchedule(schedule), job: try job.template(image: image, command: command))
            spec.concurrencyPolicy = policy
            spec.startingDeadline = try startingDeadline.map(parseDuration)
            spec.successfulJobsHistoryLimit = successfulHistory
            spec.failedJobsHistoryLimit = failedHistory
            spec.suspend = suspend
            try spec.validate()
            try JobStore(root: global.stateRoot).saveCronJob(spec)
            let next = spec.schedule.next(after: Date()).flatMap(formatTime) ?? "never"
            print("cron job \(name) created; next run \(next) (while gantry cron serve runs)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List cron jobs.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        struct Summary: Encodable {
            var name: String
            var schedule: String
            var suspend: Bool
            var concurrencyPolicy: String
            var active: [String]
            var lastScheduleTime: String?
            var lastSuccessfulTime: String?
            var nextScheduleTime: String?
        }

        func run() async throws {
            let summaries = try JobStore(root: global.stateRoot).cronJobs().map { record in
                Summary(name: record.spec.name, schedule: record.spec.schedule.text, suspend: record.spec.suspend,
                        concurrencyPolicy: record.spec.concurrencyPolicy.rawValue, active: record.status.active,
                        lastScheduleTime: formatTime(record.status.lastScheduleTime), lastSuccessfulTime: formatTime(record.status.lastSuccessfulTime),
                        nextScheduleTime: record.spec.suspend ? nil : record.spec.schedule.next(after: Date()).flatMap(formatTime))
            }
            switch output.format {
            case .json: try Terminal.printJSON(summaries)
            case .table:
                Terminal.printTable(["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "NEXT"], summaries.map {
                    [$0.name, $0.schedule, $0.suspend ? "yes" : "no", "\($0.active.count)", $0.lastScheduleTime ?? "", $0.nextScheduleTime ?? ""]
                })
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove cron jobs; their finished jobs stay listed until removed.")
        @Argument(help: "The cron jobs.") var names: [String]
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try JobStore(root: global.stateRoot)
            for name in names {
                guard try store.removeCronJob(name) else { throw ValidationError("no cron job \(name)") }
                print(name)
            }
        }
    }
}

/// Runs `body` until it returns, or until SIGINT or SIGTERM cancel it
/// (then it throws `CancellationError` once it has cleaned up).
func untilSignalled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let task = Task { try await body() }
    let sources = [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler { task.cancel() }
        source.resume()
        return source
    }
    defer { sources.forEach { $0.cancel() } }
    return try await withTaskCancellationHandler {
        try await task.value
    } onCancel: {
        task.cancel()
    }
}

/// Prints a run's output as `run | text`, standard error to standard error.
@Sendable func printWorkloadOutput(_ workload: String, _ chunk: OutputChunk) {
    let handle = chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
    var text = chunk.text
    if !text.hasSuffix("\n") { text += "\n" }
    handle.write(Data((workload + " | " + text).utf8))
}
