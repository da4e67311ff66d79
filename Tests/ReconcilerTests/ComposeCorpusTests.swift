@testable import Compose
import Foundation
import GantryTestSupport
import Reconciler
import Runtime
import Testing

/// The compose corpus (`Fixtures/compose`): projects written as people
/// write them, each brought up on the real runtime until its `check`
/// service, which runs last, has verified what the project promises.
@Suite(.requiresRoot, .serialized) struct ComposeCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Fixtures/compose"

    /// Copies the project `name` of the corpus into `dir`, brings it up,
    /// waits for its check, and takes it down.
    func bringUp(_ name: String, runtime: ContainerRuntime, dir: String, environment: [String: String] = [:]) async throws -> ComposeProject {
        let copy = dir + "/" + name
        try FileManager.default.copyItem(atPath: Self.corpus + "/" + name, toPath: copy)
        let project = try ComposeProject.load(path: copy + "/compose.yaml", environment: environment)
        let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: project.name))
        try await reconciler.withRunning { reconciler in
            do {
                try await reconciler.apply(project)
                try await reconciler.waitUntil("check", timeout: .seconds(90)) { record, _ in
                    (record?.status.succeeded ?? 0) + (record?.status.failed ?? 0) > 0
                }
                let record = try reconciler.store.service("check", project: project.name)
                var logs = ""
                for replica in try runtime.list() where replica.spec.labels[ReplicaLabel.project] == project.name
                    && replica.spec.labels[ReplicaLabel.service] == "check" {
                    logs += try await runtime.container(replica.id).logs.text()
                }
                #expect(record.status.succeeded == 1 && logs.hasSuffix("checked\n"), "project \(project.name): the check failed: \(logs)")
            } catch {
                // What each service and replica came to, for the failure's message.
                var states: [String] = []
                for record in (try? reconciler.store.services(project: project.name)) ?? [] {
                    states.append("\(record.spec.name): \(record.status.message ?? "") ready \(record.status.readyReplicas)/\(record.status.replicas)")
                }
                for replica in (try? runtime.list()) ?? [] where replica.spec.labels[ReplicaLabel.project] == project.name {
                    let logs = (try? await runtime.container(replica.id).logs.text()) ?? ""
                    states.append("\(replica.name) \(replica.status) \(replica.exit.map { "\($0.status)" } ?? ""): \(logs.suffix(300))")
                }
                Issue.record("project \(project.name): \(states.joined(separator: "\n"))")
                try? await Reconciler.tearDown(project: project.name, runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20))
                throw error
            }
            try await Reconciler.tearDown(project: project.name, runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20))
        }
        return project
    }

    static let applets = reconcilerApplets + ["httpd", "wget", "md5sum", "cut", "cat", "wc", "grep", "ip", "sleep"]

    @Test func aShopOnTwoNetworksWithSecretsConfigsHealthAndAPrivilegedExporter() async throws {
        try await withBusyboxRuntime("corpus-shop", applets: Self.applets) { runtime, dir in
            let project = try await bringUp("shop", runtime: runtime, dir: dir, environment: [:])
            #expect(project.services.map(\.name) == ["api", "check", "db", "edge", "exporter", "migrate"], "the debug profile is off")
            let warnings = project.warnings.map { $0.replacingOccurrences(of: dir + "/", with: "") }
            // Each key that changes nothing here is named, per service.
            let expected = ["platform \"linux/amd64\": ignored", "security_opt[1] \"label=disable\": ignored"]
            for service in ["api", "db", "edge", "exporter", "migrate"] {
                for key in expected {
                    #expect(warnings.contains("shop/compose.yaml: service \(service): " + key + (key.hasPrefix("platform") ? "; the image is run as the image store has it" : ": Gantry's containers get no SELinux label on this host")))
                }
            }
            #expect(warnings.count == 11 && warnings.last?.hasPrefix("shop/compose.yaml: service debug: profiles: the service is left out") == true, "\(warnings)")
            #expect(try runtime.list().isEmpty && runtime.networks.list().isEmpty && runtime.volumes.list().isEmpty)
        }
    }

    @Test func aPipelineWithABuiltImageAnExternalNetworkAndASandboxedStep() async throws {
        try await withBusyboxRuntime("corpus-pipeline", applets: Self.applets) { runtime, dir in
            let suffix = UUID().uuidString.prefix(8)
            setenv("PIPELINE_API_KEY", "key-\(suffix)", 1)
            setenv("PIPELINE_CONFIG", "owner=alice", 1)
            defer {
                unsetenv("PIPELINE_API_KEY")
                unsetenv("PIPELINE_CONFIG")
            }
            try await runtime.networks.create("corpus-shared")
            do {
                let project = try await bringUp("pipeline", runtime: runtime, dir: dir, environment: ["PIPELINE_OWNER": "alice"])
                #expect(project.services.first { $0.name == "worker" }?.replicas == 2)
                #expect(project.warnings.count == 1 && project.warnings.first?.contains("service queue: runtime \"runc\": ignored") == true, "\(project.warnings)")
                #expect(filesHolding("key-\(suffix)", under: runtime.images.root.path).isEmpty, "the secret is nowhere in the state root")
            } catch {
                try? await runtime.networks.remove("corpus-shared")
                throw error
            }
            try await runtime.networks.remove("corpus-shared")
            _ = try? await runtime.images.remove("pipeline/worker:dev")
            #expect(try runtime.list().isEmpty && runtime.networks.list().isEmpty)
        }
    }
}
