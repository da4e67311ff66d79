import ArgumentParser
import Compose
import Foundation
import Gantry
import Logging
import ServiceLifecycle
import Synchronization

/// `gantry kube …`: Kubernetes manifests in.
struct KubeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kube",
        abstract: "Kubernetes manifests: play Pods, Deployments, Services, Jobs, CronJobs, ConfigMaps, Secrets and PersistentVolumeClaims; generate them from services and jobs.",
        subcommands: [Play.self, Generate.self])

    struct Play: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run manifests as a project until SIGINT or SIGTERM (or in the background with -d); --down takes them down.",
            discussion: "Deployments and Pods become services, Services their load-balanced endpoints (ClusterIP: the virtual address and ports on the project's network; NodePort and LoadBalancer: ports published on the host), ConfigMaps configs and variables, Secrets secrets (their values kept in memory only), PersistentVolumeClaims named volumes; Jobs run to their end and CronJobs start jobs on their schedules while the project is up (gantry job ls lists them; a Job that ended is not run again until --down). Fields Gantry does not honour are warned about one by one.")
        @Argument(help: ArgumentHelp("Manifest files.", valueName: "file")) var files: [String]
        @Option(name: [.customShort("p"), .customLong("project-name")], help: "The project's name (default: the first file's name without its extension).")
        var projectName: String?
        @Flag(name: .long, help: "Take the manifests' project down: its services, replicas, jobs and their records, network and Secrets' values.") var down = false
        @Flag(name: .long, help: "With --down, remove the claims' volumes too.") var volumes = false
        @OptionGroup var flags: RunFlags
        @OptionGroup var global: GlobalOptions

        var project: String {
            get throws {
                if let projectName { return projectName }
                let base = ((files.first ?? "kube") as NSString).lastPathComponent
                let stem = (base as NSString).deletingPathExtension.lowercased()
                let kept = String(stem.filter { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }.drop { !($0.isLetter || $0.isNumber) }.prefix(63))
                return kept.isEmpty ? "kube" : kept
            }
        }

        func run() async throws {
            guard !files.isEmpty else { throw ValidationError("name at least one manifest file") }
            for file in files where !FileManager.default.fileExists(atPath: file) {
                // The project's name comes from the file's when -p does not give it.
                guard down, projectName != nil else { throw ValidationError("\(file): no such file") }
            }
            let name = try project
            let secrets = global.stateRoot.runtime + "/kube/" + name
            if down {
                try await ProjectRunner.takeDown(name, global: global, removingVolumes: volumes)
                // The Jobs' records go too, as a cluster's do with the Jobs.
                if files.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
                    do {
                        let play = try KubeManifests.load(paths: files, project: name, secretsDirectory: secrets)
                        try play.forgetJobs(in: JobStore(root: global.stateRoot))
                    } catch {
                        Terminal.printWarning("the records of the manifests' jobs are kept (gantry job rm forgets them): \(error)")
                    }
                }
                try KubePlay.removeSecrets(in: secrets)
                rmdir(global.stateRoot.runtime + "/kube")
                ContainerRuntime.removeRuntimeIfUnused(global.stateRoot)
                print("project \(name) taken down")
                return
            }
            let play = try KubeManifests.load(paths: files, project: name, secretsDirectory: secrets)
            guard !play.project.services.isEmpty || !play.jobs.isEmpty || !play.cronJobs.isEmpty else {
                for warning in play.project.warnings { Terminal.printWarning(warning) }
                throw ValidationError("the manifests have nothing Gantry plays (Deployments, Pods, Jobs and CronJobs are played)")
            }
            let runner = ProjectRunner(flags: flags, global: global, downHint: "gantry kube play --down \(files.joined(separator: " "))")
            let (quiet, logger, keep) = (flags.quiet, global.logger, flags.leaveRunning)
            try await runner.run(play.project, prepare: { try play.writeSecrets() }) { gantry in
                guard !play.jobs.isEmpty || !play.cronJobs.isEmpty else { return [] }
                for image in try await play.pullJobImages(gantry.images) { say("image \(image) pulled") }
                return [JobsService(play: play, runtime: try gantry.containers, store: try JobStore(root: gantry.root), quiet: quiet, logger: logger,
                                    forgetsJobs: !keep)]
            }
        }
    }

    /// Runs the manifests' Jobs and CronJobs beside the services, until shutdown.
    struct JobsService: Service {
        let play: KubePlay
        let runtime: ContainerRuntime
        let store: JobStore
        let quiet: Bool
        let logger: Logger
        /// Whether the jobs' records go at shutdown, with the project.
        let forgetsJobs: Bool

        func run() async throws {
            var node = try LocalNode(runtime: runtime)
            if !quiet { node.output = printWorkloadOutput }
            let cluster = try Cluster(nodes: [node])
            let (play, store, quiet, logger) = (play, store, quiet, logger)
            let completions = Dictionary(uniqueKeysWithValues: play.jobs.map { ($0.key, $0.value.completions) })
            let last = Mutex([String: String]())
            await cancelWhenGracefulShutdown {
                do {
                    try await play.runJobs(on: cluster, store: store, logger: logger, events: { event in
                        let line: String
                        switch event {
                        case .job(let name, let status):
                            line = "job \(name): " + (status.condition == .running
                                ? JobCommand.describe(status, completions: completions[name] ?? 1)
                                : "\(status.condition.rawValue.lowercased())\(status.reason.map { " (\($0))" } ?? ""), \(status.succeeded) succeeded, \(status.failed) failed")
                            guard last.withLock({ last in defer { last[name] = line }; return last[name] != line }) else { return }
                        case .alreadyEnded(let name, let status):
                            line = "job \(name) ended in an earlier play (\(status.condition.rawValue)\(status.reason.map { ": \($0)" } ?? "")); kube play --down forgets it"
                        case .error(let name, let message): line = "job \(name): error: \(message)"
                        case .cron(let event): line = CronCommand.describe(event)
                        }
                        if !quiet { say("\(formatTime(Date()) ?? "") \(line)") }
                    })
                } catch {
                    if !(error is CancellationError) { say("jobs: error: \(error)") }
                }
            }
            // Until the project's shutdown, with the reconciler; its jobs' records go with it.
            try? await gracefulShutdown()
            if forgetsJobs { _ = try? play.forgetJobs(in: store) }
        }
    }

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print Kubernetes manifests for services, jobs and cron jobs: a Deployment (or Pod), Job or CronJob each, with its Service, ConfigMap and Secret, and claims for named volumes.",
            discussion: "Names are looked up as services of the project, then cron jobs, then jobs of the state root. Without names: every service of the project, and the jobs kube play ran for it. With -f: the services of a compose file. Secrets' and configs' values are read now and written into the Secret and ConfigMap. What has no Kubernetes equivalent is warned about on stderr.")
        @Argument(help: ArgumentHelp("Services, cron jobs or jobs (default: every service and job of the project).", valueName: "name")) var names: [String] = []
        @Option(name: .long, help: "The services' project.") var project = ServiceSpec.defaultProject
        @Option(name: .shortAndLong, help: ArgumentHelp("Generate from this compose file instead of the state root.", valueName: "file")) var file: String?
        @Option(name: .long, help: ArgumentHelp("The storage each claim asks for.", valueName: "quantity")) var claimSize = "1Gi"
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            var specs: [ServiceSpec]
            var jobs: [String: JobTemplate] = [:]
            var cronJobs: [CronJobSpec] = []
            let source = file ?? "project " + project
            if let file {
                let project = try ComposeProject.load(path: file, projectName: nil)
                for warning in project.warnings { Terminal.printWarning(warning) }
                specs = project.services
                for name in names where !specs.contains(where: { $0.name == name }) {
                    throw ValidationError("there is no service \(name) in \(file)")
                }
            } else {
                specs = try ServiceStore(root: global.stateRoot).services(project: project).map(\.spec)
                let store = try JobStore(root: global.stateRoot)
                if names.isEmpty {
                    // The jobs kube play ran for the project.
                    for record in try store.jobs() where record.cronJob == nil {
                        if let template = record.template, template.container.labels[ReplicaLabel.project] == project { jobs[record.name] = template }
                    }
                }
                for name in names where !specs.contains(where: { $0.name == name }) {
                    if let cron = try store.cronJob(name) {
                        cronJobs.append(cron.spec)
                    } else if let record = try store.job(name) {
                        guard let template = record.template else { throw ValidationError("job \(name) was recorded without what its runs are; it cannot be generated") }
                        jobs[name] = template
                    } else {
                        throw ValidationError("there is no service \(name) in \(source), and no cron job or job \(name)")
                    }
                }
            }
            if !names.isEmpty { specs = specs.filter { names.contains($0.name) } }
            guard !specs.isEmpty || !jobs.isEmpty || !cronJobs.isEmpty else { throw ValidationError("there are no services in \(source)") }
            let manifests = try KubeManifests.generate(specs, jobs: jobs, cronJobs: cronJobs, claimSize: claimSize)
            for warning in manifests.warnings { Terminal.printWarning(warning) }
            FileHandle.standardOutput.write(Data(manifests.yaml.utf8))
        }
    }
}
