import ArgumentParser
import Compose
import Foundation
import Gantry
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// Options naming a compose file and its project.
struct ComposeOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: ArgumentHelp("The compose file.", valueName: "file")) var file = "compose.yaml"
    @Option(name: [.customShort("p"), .customLong("project-name")], help: "The project's name (default: the file's name: key, else its directory's name).")
    var projectName: String?
    @Option(name: .customLong("profile"), help: ArgumentHelp("Activate a profile: its services run too (repeatable; * for all; default: COMPOSE_PROFILES).", valueName: "name"))
    var profiles: [String] = []

    func load() throws -> ComposeProject {
        var path = file
        if file == "compose.yaml", !FileManager.default.fileExists(atPath: path) {
            path = ["compose.yml", "docker-compose.yaml", "docker-compose.yml"].first { FileManager.default.fileExists(atPath: $0) } ?? path
        }
        return try ComposeProject.load(path: path, projectName: projectName, profiles: profiles.isEmpty ? nil : profiles)
    }
}

/// `gantry compose …`: the compose commands in one place, as `docker compose` has them.
struct ComposeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compose",
        abstract: "Compose projects: show a file as Gantry reads it, bring it up, take it down.",
        subcommands: [Config.self, Up.self, Down.self])

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the project as Gantry reads it (variables interpolated, extends merged, profiles applied) as JSON; warnings go to stderr.")
        @OptionGroup var compose: ComposeOptions

        func run() async throws {
            let project = try compose.load()
            for warning in project.warnings { Terminal.printWarning(warning) }
            try Terminal.printJSON(project)
        }
    }
}

/// How a project runs: in the foreground or the background, with metrics, events and autoscaling.
struct RunFlags: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Serve Prometheus metrics at /metrics on this port.", valueName: "port")) var metricsPort: Int?
    @Option(name: .long, help: ArgumentHelp("The address the metrics port listens on.", valueName: "ip")) var metricsAddress = "127.0.0.1"
    @Flag(name: .long, help: "Leave the replicas running at exit, for the next up to adopt, instead of taking the project down.")
    var leaveRunning = false
    @Flag(name: .shortAndLong, help: "Print no events.") var quiet = false
    @Flag(name: .shortAndLong, help: "Run in the background: return once the project is applied and its replicas made; down stops it.")
    var detach = false
    @Option(name: .long, help: ArgumentHelp("How often autoscalers read CPU and memory use and decide.", valueName: "duration"))
    var autoscaleInterval = "15s"
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a compose project in the foreground until SIGINT or SIGTERM, then take it down.",
        discussion: "Replicas are kept running, replaced when they end, probed and rolled out as the file says. ps, inspect, logs, events and service commands work from other processes meanwhile.")
    @OptionGroup var compose: ComposeOptions
    @Flag(name: .long, help: "Build the images of services with a build: even when the store has them.") var build = false
    @OptionGroup var flags: RunFlags
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let project = try compose.load()
        try await ProjectRunner(flags: flags, global: global, downHint: "gantry down -f \(compose.file)").run(project, rebuilding: build)
    }
}

/// Runs a project as `up` and `kube play` do.
struct ProjectRunner {
    let flags: RunFlags
    let global: GlobalOptions
    /// The command that takes the project down, for messages.
    let downHint: String

    /// Set in the environment of the background process `--detach` starts.
    static let detachedVariable = "GANTRY_UP_DETACHED"
    /// The line the background process prints once the project is up.
    static let readyLine = "gantry-up-ready"

    /// Where a project's background up writes: in the state root, beside the project's lock.
    static func logPath(project: String, root: StateRoot) -> String {
        root.path + "/reconciler/" + project + ".log"
    }

    /// Runs `project` in the foreground, or in the background with `-d`.
    ///
    /// - Parameters:
    ///   - project: the project.
    ///   - rebuilding: whether services' images are built even when present.
    ///   - prepare: called before anything runs.
    ///   - alongside: what runs beside the reconciler once the project is applied.
    func run(_ project: ComposeProject, rebuilding: Bool = false, prepare: () throws -> Void = {},
             alongside: (Gantry) async throws -> [any Service] = { _ in [] }) async throws {
        if flags.detach { return try await runInBackground(project) }
        if let running = Reconciler.reconcilingProcess(project: project.name, root: global.stateRoot) {
            throw ValidationError("project \(project.name) is already up (pid \(running)); \(downHint) takes it down")
        }
        let detached = ProcessInfo.processInfo.environment[Self.detachedVariable] != nil
        // Out of the terminal's session: its signals and hang-up are not ours.
        if detached {
            setsid()
            signal(SIGPIPE, SIG_IGN)
        }
        let interval = try parseDuration(flags.autoscaleInterval)
        guard interval > .zero else { throw ValidationError("--autoscale-interval \(flags.autoscaleInterval) must be above 0") }
        for warning in project.warnings { Terminal.printWarning(warning) }
        try prepare()
        // Libraries report through swift-metrics; the program chooses where it goes.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let gantry = try await global.openGantry()
        let runtime = try gantry.containers
        let reconciler = try Reconciler(
            runtime: runtime,
            options: Reconciler.Options(project: project.name, onShutdown: flags.leaveRunning ? .leaveRunning : .stopReplicas,
                                        autoscaleInterval: interval, metricSource: CgroupMetricSource(runtime: runtime)),
            logger: global.logger)
        let report = try await reconciler.apply(project, rebuilding: rebuilding)
        for image in report.builtImages { say("image \(image) built") }
        for image in report.pulledImages { say("image \(image) pulled") }
        for network in report.createdNetworks { say("network \(network) created") }
        for volume in report.createdVolumes { say("volume \(volume) created") }
        var services: [any Service] = [reconciler, ContainerMetrics(runtime: runtime, interval: .seconds(2), logger: global.logger)]
        services += try await alongside(gantry)
        if let metricsPort = flags.metricsPort {
            let server = MetricsServer(host: flags.metricsAddress, port: metricsPort, registry: registry, logger: global.logger)
            try await server.bind()
            say("metrics at http://\(flags.metricsAddress):\(server.boundPort)/metrics")
            services.append(server)
        }
        if !flags.quiet { services.append(EventPrinter(reconciler: reconciler)) }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint], logger: global.logger))
        if detached {
            // Tells the command that started it, once every service has its
            // replicas made (or 60 s passed), then writes to its log alone.
            let log = Self.logPath(project: project.name, root: global.stateRoot)
            Task { [reconciler] in
                for service in project.services {
                    _ = try? await reconciler.waitUntil(service.name, timeout: .seconds(60)) { record, replicas in
                        replicas.count >= (record?.spec.replicas ?? 0)
                    }
                }
                say(Self.readyLine)
                let descriptor = open(log, O_WRONLY | O_APPEND | O_CLOEXEC)
                if descriptor >= 0 {
                    dup2(descriptor, 1)
                    close(descriptor)
                }
            }
        }
        try await group.run()
        if !flags.leaveRunning {
            try await Reconciler.tearDown(project: project.name, runtime: runtime, store: reconciler.store)
            say("project \(project.name) taken down")
        }
    }

    /// Starts this command again without `--detach` in a process of its
    /// own, echoes what it prints until the project is up, and returns;
    /// the process runs on until `down` (or SIGTERM) ends it.
    func runInBackground(_ project: ComposeProject) async throws {
        // Here, where the user sees them; the background process logs them too.
        for warning in project.warnings { Terminal.printWarning(warning) }
        let root = global.stateRoot
        if let running = Reconciler.reconcilingProcess(project: project.name, root: root) {
            throw ValidationError("project \(project.name) is already up (pid \(running)); \(downHint) takes it down")
        }
        try FileManager.default.createDirectory(atPath: root.path + "/reconciler", withIntermediateDirectories: true)
        let log = Self.logPath(project: project.name, root: root)
        guard FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600]),
              let logHandle = FileHandle(forWritingAtPath: log) else {
            throw ValidationError("cannot write the background up's log \(log)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        // The same command line without the flag (also where it is among combined short flags).
        process.arguments = CommandLine.arguments.dropFirst().compactMap { argument -> String? in
            if argument == "--detach" || argument == "-d" { return nil }
            if argument.hasPrefix("-"), !argument.hasPrefix("--"), argument.count > 2, argument.dropFirst().allSatisfy(\.isLetter) {
                return argument.replacingOccurrences(of: "d", with: "")
            }
            return argument
        }
        var environment = ProcessInfo.processInfo.environment
        environment[Self.detachedVariable] = "1"
        process.environment = environment
        let output = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = logHandle
        try process.run()
        try? logHandle.close()
        output.fileHandleForWriting.closeFile()
        // Echoes the background process's lines until it is up.
        var pending = Data()
        var ready = false
        reading: while true {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[pending.startIndex ..< newline], as: UTF8.self)
                pending = Data(pending[(newline + 1)...])
                if line == Self.readyLine {
                    ready = true
                    break reading
                }
                say(line)
            }
        }
        guard ready else {
            process.waitUntilExit()
            let tail = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(20).joined(separator: "\n")
            unlink(log)
            FileHandle.standardError.write(Data((tail + "\n").utf8))
            throw ExitCode(process.terminationStatus == 0 ? 1 : process.terminationStatus)
        }
        say("project \(project.name) is up in the background (pid \(process.processIdentifier)); its log: \(log); \(downHint) takes it down")
    }

    /// Takes a project down, as `down` and `kube play --down` do, and ends
    /// the up that runs it (in the foreground or the background).
    static func takeDown(_ project: String, global: GlobalOptions, removingVolumes: Bool) async throws {
        let gantry = try await global.openGantry()
        let runtime = try gantry.containers
        let store = try ServiceStore(root: gantry.root)
        let upProcess = Reconciler.reconcilingProcess(project: project, root: gantry.root)
        try await Reconciler.tearDown(project: project, runtime: runtime, store: store, removingVolumes: removingVolumes)
        if let upProcess {
            kill(upProcess, SIGTERM)
            for _ in 0 ..< 500 where kill(upProcess, 0) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        unlink(logPath(project: project, root: gantry.root))
    }
}

/// Prints a line at once, unbuffered, also into a pipe or a file.
func say(_ line: String) {
    // write(2) itself: a reader that went away is no reason to crash.
    let bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if written < 0, errno == EINTR { continue }
        guard written > 0 else { return }
        offset += written
    }
}

/// Prints the reconciler's events as they happen, until shutdown.
struct EventPrinter: Service {
    let reconciler: Reconciler

    func run() async throws {
        let events = reconciler.events()
        await cancelWhenGracefulShutdown {
            for await event in events {
                say("\(formatTime(event.time) ?? "") \(event.description)")
            }
        }
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Take a compose project down: its services, replicas and the networks it made.",
                                                    discussion: "With -p the project is taken down by its name, without reading the compose file.")
    @OptionGroup var compose: ComposeOptions
    @Flag(name: .shortAndLong, help: "Remove the project's volumes too.") var volumes = false
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        // Named with -p, the project goes down without its file, which may be gone or broken.
        let name = try compose.projectName ?? compose.load().name
        try await ProjectRunner.takeDown(name, global: global, removingVolumes: volumes)
        print("project \(name) taken down")
    }
}

/// An event as `events --format json` prints it.
struct EventLine: Encodable {
    var sequence: Int64
    var time: String
    var project: String
    var service: String
    var container: String?
    var event: String
    var message: String

    init(_ entry: JournalEntry) {
        sequence = entry.sequence
        time = formatTime(entry.event.time) ?? ""
        project = entry.event.project
        service = entry.event.service
        container = entry.event.container
        event = entry.event.name
        message = entry.event.message
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the event journal of services and their replicas.")
    @Flag(name: .shortAndLong, help: "Follow new events, from any process, until interrupted.") var follow = false
    @Option(name: .long, help: "Only this project's events.") var project: String?
    @Option(name: .long, help: ArgumentHelp("Only events of this service, or of service/NAME or container/NAME.", valueName: "object")) var object: String?
    @Option(name: .long, help: "At most this many past events.") var tail = 1000
    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: FormatOption

    func run() async throws {
        let store = try ServiceStore(root: global.stateRoot)
        func show(_ entry: JournalEntry) throws {
            switch output.format {
            case .json:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                say(String(decoding: try encoder.encode(EventLine(entry)), as: UTF8.self))
            case .table:
                say("\(formatTime(entry.event.time) ?? "") \(entry.event.project)/\(entry.event.description)")
            }
        }
        let past = try store.events(project: project, object: object, limit: tail)
        for entry in past { try show(entry) }
        guard follow else { return }
        for try await entry in store.follow(project: project, object: object, after: past.last?.sequence ?? 0) {
            try show(entry)
        }
    }
}

struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "List, inspect, scale, autoscale and roll back services.",
        subcommands: [List.self, Inspect.self, Scale.self, Autoscale.self, Rollout.self, Logs.self])

    /// Finds a service by name, in the given project or the only one that has it.
    static func find(_ name: String, project: String?, store: ServiceStore) throws -> ServiceRecord {
        if let project { return try store.service(name, project: project) }
        let matches = try store.services().filter { $0.spec.name == name }
        guard let match = matches.first else { throw ValidationError("no service \(name)") }
        guard matches.count == 1 else {
            throw ValidationError("services named \(name) are in projects \(matches.map(\.spec.project).joined(separator: ", ")): choose one with --project")
        }
        return match
    }

    struct ProjectOption: ParsableArguments {
        @Option(name: .long, help: "The service's project (needed when several have the name).") var project: String?
    }

    /// What `service ls --format json` prints.
    struct Summary: Encodable {
        var project: String
        var name: String
        var image: String
        var replicas: Int
        var ready: Int
        var available: Int
        var updated: Int
        var restarts: Int
        var generation: Int
        var observedGeneration: Int
        var revision: Int
        var rollout: String
        var message: String?
        /// The load-balanced endpoint's virtual address and host ports.
        var virtualAddress: String?
        var ports: [String]
        /// Whether a reconciler (an up or kube play) runs the service's
        /// project now: without one the status is what it last recorded.
        var reconciled: Bool?

        init(_ record: ServiceRecord, reconciled: Bool? = nil) {
            self.reconciled = reconciled
            project = record.spec.project
            name = record.spec.name
            if case .image(let image) = record.spec.template.root { self.image = image } else { image = "" }
            replicas = record.spec.replicas
            ready = record.status.readyReplicas
            available = record.status.availableReplicas
            updated = record.status.updatedReplicas
            restarts = record.status.restarts
            generation = record.generation
            observedGeneration = record.status.observedGeneration
            revision = record.revision
            rollout = record.status.rollout.rawValue
            message = record.status.message
            virtualAddress = record.status.virtualAddress?.description
            ports = (record.status.publishedPorts ?? []).map(\.description)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List services.")
        @Option(name: .long, help: "Only this project's services.") var project: String?
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let records = try ServiceStore(root: global.stateRoot).services(project: project)
            var running: [String: Bool] = [:]
            for name in Set(records.map(\.spec.project)) { running[name] = Reconciler.isRunning(project: name, root: global.stateRoot) }
            let summaries = records.map { Summary($0, reconciled: running[$0.spec.project]) }
            switch output.format {
            case .json: try Terminal.printJSON(summaries)
            case .table:
                Terminal.printTable(["PROJECT", "NAME", "IMAGE", "READY", "AVAILABLE", "RESTARTS", "REVISION", "ROLLOUT", "ADDRESS", "PORTS"], summaries.map { summary in
                    // Without a reconciler the status is the last one recorded.
                    [summary.project, summary.name, summary.image, "\(summary.ready)/\(summary.replicas)", "\(summary.available)",
                     "\(summary.restarts)", "\(summary.revision)", summary.rollout + (summary.reconciled == false ? " (not running)" : ""),
                     summary.virtualAddress ?? "", summary.ports.joined(separator: ", ")]
                })
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a service's spec, status and revisions as JSON.")
        @Argument(help: "The service.") var name: String
        @OptionGroup var project: ProjectOption
        @OptionGroup var global: GlobalOptions

        struct Details: Encodable {
            var record: ServiceRecord
            var revisions: [Int]
            var autoscaler: AutoscalerRecord?
        }

        func run() async throws {
            let store = try ServiceStore(root: global.stateRoot)
            let record = try ServiceCommand.find(name, project: project.project, store: store)
            try Terminal.printJSON(Details(record: record, revisions: try store.revisions(name, project: record.spec.project).map(\.number),
                                           autoscaler: try store.autoscaler(name, project: record.spec.project)))
        }
    }

    struct Scale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a service's number of replicas.")
        @Argument(help: "The service.") var name: String
        @Argument(help: "The number of replicas.") var replicas: Int
        @OptionGroup var project: ProjectOption
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try ServiceStore(root: global.stateRoot)
            let record = try ServiceCommand.find(name, project: project.project, store: store)
            let scaled = try store.scale(name, project: record.spec.project, replicas: replicas)
            print("service \(name) scaled to \(scaled.spec.replicas) (generation \(scaled.generation))")
            if !Reconciler.isRunning(project: record.spec.project, root: global.stateRoot) {
                Terminal.printWarning("no reconciler runs project \(record.spec.project); the change applies when one does")
            }
        }
    }

    struct Autoscale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Scale a service between --min and --max replicas to hold its CPU (or memory) use at a target.",
            discussion: """
                Utilisation is measured against each replica's request: its CPU or memory reservation \
                (deploy.resources.reservations), else its limit. The reconciler of the project (gantry up) \
                decides with Kubernetes' horizontal pod autoscaler algorithm: a tolerance of 10 %, scale-down \
                stabilised over 5 minutes (--scale-down-window), scaling up by at most 4 replicas or 100 % per 15 s.
                """)
        @Argument(help: "The service.") var name: String
        @Option(name: .long, help: "The fewest replicas.") var min = 1
        @Option(name: .long, help: "The most replicas.") var max: Int?
        @Option(name: .long, help: ArgumentHelp("The average CPU use to hold, in percent of the CPU request.", valueName: "percent"))
        var cpuPercent: Double?
        @Option(name: .long, help: ArgumentHelp("The average memory use to hold, in percent of the memory request.", valueName: "percent"))
        var memoryPercent: Double?
        @Option(name: .long, help: ArgumentHelp("How long scaling down waits for lower recommendations to hold.", valueName: "duration"))
        var scaleDownWindow = "5m"
        @Flag(name: .long, help: "Remove the service's autoscaler; its replica count stays as it is.") var off = false
        @OptionGroup var project: ProjectOption
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try ServiceStore(root: global.stateRoot)
            let record = try ServiceCommand.find(name, project: project.project, store: store)
            if off {
                try store.setAutoscaler(nil, service: name, project: record.spec.project)
                print("service \(name) is no longer autoscaled")
                return
            }
            guard let max else { throw ValidationError("give --max, the most replicas to run (or --off)") }
            let metrics = [cpuPercent.map(AutoscalerMetric.cpu(percent:)), memoryPercent.map(AutoscalerMetric.memory(percent:))].compactMap { $0 }
            guard !metrics.isEmpty else { throw ValidationError("give --cpu-percent or --memory-percent, the use to hold") }
            var behavior = ScalingBehavior.kubernetesDefault
            behavior.scaleDown.stabilizationWindow = try parseDuration(scaleDownWindow)
            let spec = AutoscalerSpec(minReplicas: min, maxReplicas: max, metrics: metrics, behavior: behavior)
            try store.setAutoscaler(spec, service: name, project: record.spec.project)
            print("service \(name) autoscaled between \(min) and \(max) replicas, holding \(metrics.map(\.description).joined(separator: " and "))")
            if !Reconciler.isRunning(project: record.spec.project, root: global.stateRoot) {
                Terminal.printWarning("no reconciler runs project \(record.spec.project); the autoscaler acts when one does")
            }
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Follow or undo a service's rollout.", subcommands: [Status.self, Undo.self, History.self])

        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Wait until the service's rollout completes or fails; exit 1 when it failed.")
            @Argument(help: "The service.") var name: String
            @Option(name: .long, help: "How long to wait.") var timeout = "5m"
            @Flag(name: .long, help: "Print the status once instead of waiting.") var noWait = false
            @OptionGroup var project: ProjectOption
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let store = try ServiceStore(root: global.stateRoot)
                let deadline = ContinuousClock.now + (try parseDuration(timeout))
                var last = ""
                while true {
                    let record = try ServiceCommand.find(name, project: project.project, store: store)
                    let status = record.status
                    let line = "service \(name) revision \(record.revision): \(status.rollout.rawValue), \(status.updatedReplicas) updated, \(status.availableReplicas) of \(record.spec.replicas) available"
                        + (status.message.map { " (\($0))" } ?? "")
                    if line != last { say(line) }
                    last = line
                    let current = status.observedGeneration == record.generation
                    if current && status.rollout == .complete { return }
                    if current && status.rollout == .failed { throw ExitCode(1) }
                    if noWait { return }
                    guard ContinuousClock.now < deadline else { throw ValidationError("the rollout of \(name) did not finish within \(timeout)") }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }

        struct Undo: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Go back to the previous revision (or --to-revision N).")
            @Argument(help: "The service.") var name: String
            @Option(name: .long, help: "The revision to go back to.") var toRevision: Int?
            @OptionGroup var project: ProjectOption
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let store = try ServiceStore(root: global.stateRoot)
                let record = try ServiceCommand.find(name, project: project.project, store: store)
                let (_, from, to) = try store.rollBack(name, project: record.spec.project, to: toRevision)
                print("service \(name) rolled back from revision \(from); now revision \(to)")
            }
        }

        struct History: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List a service's revisions.")
            @Argument(help: "The service.") var name: String
            @OptionGroup var project: ProjectOption
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let store = try ServiceStore(root: global.stateRoot)
                let record = try ServiceCommand.find(name, project: project.project, store: store)
                Terminal.printTable(["REVISION", "CREATED", "HASH", "COMMAND"], try store.revisions(name, project: record.spec.project).map { revision in
                    let command = (revision.template.container.entrypoint ?? []) + (revision.template.container.command ?? [])
                    return ["\(revision.number)\(revision.number == record.revision ? " (current)" : "")", formatTime(revision.createdAt) ?? "",
                            revision.hash, command.joined(separator: " ")]
                })
            }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the output of all of a service's replicas, interleaved.")
        @Argument(help: "The service.") var name: String
        @Flag(name: .shortAndLong, help: "Follow new output, from new replicas too, until interrupted.") var follow = false
        @Flag(name: .shortAndLong, help: "Prefix each line with its time.") var timestamps = false
        @OptionGroup var project: ProjectOption
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let store = try ServiceStore(root: global.stateRoot)
            let record = try ServiceCommand.find(name, project: project.project, store: store)
            try await printServiceLogs(ServiceLogs(runtime: try await global.openGantry().containers, service: name, project: record.spec.project),
                                       follow: follow, timestamps: timestamps)
        }
    }
}

/// Prints a service's lines as `container | text`.
func printServiceLogs(_ logs: ServiceLogs, follow: Bool, timestamps: Bool) async throws {
    func show(_ line: ServiceLogLine) {
        let prefix = (timestamps ? (formatTime(line.time) ?? "") + " " : "") + line.container + " | "
        let handle = line.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
        handle.write(Data((prefix + line.text + "\n").utf8))
    }
    if follow {
        for try await line in logs.follow() { show(line) }
    } else {
        for line in try await logs.lines() { show(line) }
    }
}
