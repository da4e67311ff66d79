import ArgumentParser
import Compose
import Foundation
import Gantry

/// `gantry kube …`: Kubernetes manifests in.
struct KubeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kube",
        abstract: "Kubernetes manifests: play Pods, Deployments, Services, ConfigMaps, Secrets and PersistentVolumeClaims as services; generate them from services.",
        subcommands: [Play.self, Generate.self])

    struct Play: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run manifests as a project until SIGINT or SIGTERM (or in the background with -d); --down takes them down.",
            discussion: "Deployments and Pods become services, Services their load-balanced endpoints (ClusterIP: the virtual address and ports on the project's network; NodePort and LoadBalancer: ports published on the host), ConfigMaps configs and variables, Secrets secrets (their values kept in memory only), PersistentVolumeClaims named volumes. Fields Gantry does not honour are warned about one by one.")
        @Argument(help: ArgumentHelp("Manifest files.", valueName: "file")) var files: [String]
        @Option(name: [.customShort("p"), .customLong("project-name")], help: "The project's name (default: the first file's name without its extension).")
        var projectName: String?
        @Flag(name: .long, help: "Take the manifests' project down: its services, replicas, network and Secrets' values.") var down = false
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
            let name = try project
            let secrets = global.stateRoot.runtime + "/kube/" + name
            if down {
                try await ProjectRunner.takeDown(name, global: global, removingVolumes: volumes)
                try KubePlay.removeSecrets(in: secrets)
                rmdir(global.stateRoot.runtime + "/kube")
                ContainerRuntime.removeRuntimeIfUnused(global.stateRoot)
                print("project \(name) taken down")
                return
            }
            let play = try KubeManifests.load(paths: files, project: name, secretsDirectory: secrets)
            let runner = ProjectRunner(flags: flags, global: global, downHint: "gantry kube play --down \(files.joined(separator: " "))")
            try await runner.run(play.project) { try play.writeSecrets() }
        }
    }

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print Kubernetes manifests for services: a Deployment (or Pod), Service, ConfigMap and Secret each, and claims for named volumes.",
            discussion: "The services are those of the state root (all of a project, or those named), or those of a compose file (-f). Secrets' and configs' values are read now and written into the Secret and ConfigMap. What has no Kubernetes equivalent is warned about on stderr.")
        @Argument(help: ArgumentHelp("Services (default: every service of the project).", valueName: "service")) var services: [String] = []
        @Option(name: .long, help: "The services' project.") var project = ServiceSpec.defaultProject
        @Option(name: .shortAndLong, help: ArgumentHelp("Generate from this compose file instead of the state root.", valueName: "file")) var file: String?
        @Option(name: .long, help: ArgumentHelp("The storage each claim asks for.", valueName: "quantity")) var claimSize = "1Gi"
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            var specs: [ServiceSpec]
            if let file {
                let project = try ComposeProject.load(path: file, projectName: nil)
                for warning in project.warnings { Terminal.printWarning(warning) }
                specs = project.services
            } else {
                specs = try ServiceStore(root: global.stateRoot).services(project: project).map(\.spec)
            }
            if !services.isEmpty {
                for name in services where !specs.contains(where: { $0.name == name }) {
                    throw ValidationError("there is no service \(name) in \(file ?? "project " + project)")
                }
                specs = specs.filter { services.contains($0.name) }
            }
            guard !specs.isEmpty else { throw ValidationError("there are no services in \(file ?? "project " + project)") }
            let manifests = try KubeManifests.generate(specs, claimSize: claimSize)
            for warning in manifests.warnings { Terminal.printWarning(warning) }
            FileHandle.standardOutput.write(Data(manifests.yaml.utf8))
        }
    }
}
