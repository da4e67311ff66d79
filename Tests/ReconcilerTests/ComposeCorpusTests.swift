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
                // The store's record follows the reconciler's a moment later.
                var record = try reconciler.store.service("check", project: project.name)
                for _ in 0 ..< 100 where record.status.succeeded + record.status.failed == 0 {
                    try await Task.sleep(for: .milliseconds(20))
                    record = try reconciler.store.service("check", project: project.name)
                }
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

    static let applets = reconcilerApplets + ["httpd", "wget", "md5sum", "cut", "cat", "wc", "grep", "ip", "sleep", "df", "tail", "tr"]

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

extension ComposeCorpusTests {
    @Test func aServiceInAnothersNetworkFollowsItsReplacement() async throws {
        try await withBusyboxRuntime("compose-shared-network", applets: Self.applets) { runtime, dir in
            let project = try ComposeProject.parse("""
                name: shared
                services:
                  vpn:
                    image: busybox:test
                    command: ["sh", "-c", "mkdir -p /www && echo tunnel > /www/index.html && exec httpd -f -p 8080 -h /www"]
                    stop_grace_period: 1s
                  client:
                    image: busybox:test
                    network_mode: service:vpn
                    stop_grace_period: 1s
                    command: ["sh", "-c", "for i in $$(seq 50); do wget -q -O - http://127.0.0.1:8080/ && break; sleep 0.1; done; exec sleep 600"]
                """, directory: dir)
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "shared"))
            try await reconciler.withRunning { reconciler in
                try await reconciler.apply(project)
                func client() async throws -> (record: ContainerRecord, logs: String)? {
                    guard let record = try runningReplicas(runtime, service: "client").first else { return nil }
                    return (record, try await runtime.container(record.id).logs.text())
                }
                var first: (record: ContainerRecord, logs: String)?
                for _ in 0 ..< 300 where first?.logs.isEmpty != false {
                    first = try await client()
                    try await Task.sleep(for: .milliseconds(20))
                }
                let vpn = try #require(try runningReplicas(runtime, service: "vpn").first)
                #expect(first?.logs == "tunnel\n", "the client reaches the vpn's loopback")
                #expect(first?.record.spec.network == .container(vpn.id))
                // The vpn's replica ends: the client is replaced in its successor's network.
                _ = try await runtime.container(vpn.id).stop()
                var second: (record: ContainerRecord, logs: String)?
                for _ in 0 ..< 500 where second == nil || second?.record.id == first?.record.id || second?.logs.isEmpty != false {
                    second = try await client()
                    try await Task.sleep(for: .milliseconds(20))
                }
                let successor = try #require(try runningReplicas(runtime, service: "vpn").first)
                #expect(successor.id != vpn.id && second?.record.spec.network == .container(successor.id))
                #expect(second?.logs == "tunnel\n")
                try await Reconciler.tearDown(project: "shared", runtime: runtime, store: reconciler.store, timeout: .seconds(20))
            }
        }
    }
}
