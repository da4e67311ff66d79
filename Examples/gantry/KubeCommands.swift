import ArgumentParser
import Compose
import Foundation
import Gantry

/// `gantry kube …`: Kubernetes manifests in.
struct KubeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kube",
        abstract: "Kubernetes manifests: play Pods, Deployments, Services, ConfigMaps, Secrets and PersistentVolumeClaims as services.",
        subcommands: [Play.self])

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
                print("project \(name) taken down")
                return
            }
            let play = try KubeManifests.load(paths: files, project: name, secretsDirectory: secrets)
            let runner = ProjectRunner(flags: flags, global: global, downHint: "gantry kube play --down \(files.joined(separator: " "))")
            try await runner.run(play.project) { try play.writeSecrets() }
        }
    }
}
