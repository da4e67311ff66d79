@testable import Compose
import Foundation
import GantryTestSupport
import Runtime
import Testing
@testable import Reconciler

/// Applying a compose project pulls the images its services lack, as
/// `docker compose up` does, from a registry on loopback.
@Suite(.requiresRoot) struct ComposePullTests {
    @Test func applyingPullsWhatTheStoreLacksAndHonoursThePolicy() async throws {
        try await withBusyboxRuntime("compose-pull", applets: reconcilerApplets) { runtime, dir in
            try await withLocalRegistry(dir) { registry in
                let reference = "\(registry.host)/shop/bb:1"
                _ = try await runtime.images.push("busybox:test", to: reference)
                let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "pulled"))
                func project(_ services: String) throws -> ComposeProject {
                    try ComposeProject.parse("name: pulled\nservices:\n" + services, directory: dir)
                }
                // Never: an image the store lacks is an error naming the service, before anything is made.
                let pinned = try project("  pinned:\n    image: \(reference)\n    pull_policy: never\n")
                await #expect { try await reconciler.apply(pinned) } throws: { error in
                    let message = (error as? ReconcilerError)?.message ?? ""
                    return message.contains("service pinned") && message.contains("pull_policy is never")
                }
                #expect(try runtime.networks.list().isEmpty)
                // Missing from the registry: an error naming the service and the image.
                let absent = try project("  ghost:\n    image: \(registry.host)/shop/ghost:1\n")
                await #expect { try await reconciler.apply(absent) } throws: { error in
                    let message = (error as? ReconcilerError)?.message ?? ""
                    return message.contains("service ghost: cannot pull image \(registry.host)/shop/ghost:1")
                }
                // By default, pulled once when missing, and the service runs.
                let app = try project("  app:\n    image: \(reference)\n    command: [\"sleep\", \"600\"]\n    stop_grace_period: 1s\n")
                try await reconciler.withRunning { reconciler in
                    #expect(try await reconciler.apply(app).pulledImages == [reference])
                    try await reconciler.waitForRollout("app")
                    #expect(try await reconciler.apply(app).pulledImages.isEmpty, "an image the store has is not pulled again")
                    var always = app
                    always.pullPolicies["app"] = .always
                    #expect(try await reconciler.apply(always).pulledImages == [reference])
                    // Taken down through the running reconciler's own store: it sees the change at once.
                    let began = ContinuousClock.now
                    try await Reconciler.tearDown(project: "pulled", runtime: runtime, store: reconciler.store, timeout: .seconds(20))
                    #expect(ContinuousClock.now - began < .seconds(20), "the reconciler did not see the services go")
                    #expect(try runtime.list().isEmpty && runtime.networks.list().isEmpty)
                }
            }
        }
    }
}

/// Applying a compose project builds the images of services with a
/// `build:` that the store lacks, as `docker compose up` does.
@Suite(.requiresRoot) struct ComposeBuildTests {
    @Test func applyingBuildsWhatTheStoreLacksWithTheImageBuilder() async throws {
        try await withBusyboxRuntime("compose-build", applets: reconcilerApplets) { runtime, dir in
            try FileManager.default.createDirectory(atPath: dir + "/app/docker", withIntermediateDirectories: true)
            try write("FROM busybox:test\nARG GREETING=none\nRUN echo \"$GREETING\" > /greeting\nCMD [\"sleep\", \"600\"]\n", to: dir + "/app/docker/Web.dockerfile")
            let project = try ComposeProject.parse("""
                name: built
                services:
                  web:
                    build:
                      context: ./app
                      dockerfile: docker/Web.dockerfile
                      args: {GREETING: hello}
                    command: ["sh", "-c", "cat /greeting; exec sleep 600"]
                    stop_grace_period: 1s
                    network_mode: none
                """, directory: dir)
            #expect(project.builds["web"] == ComposeBuild(context: dir + "/app", dockerfile: dir + "/app/docker/Web.dockerfile", arguments: ["GREETING": "hello"]))
            #expect(project.services.first?.template.root == .image("built-web"))
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "built"))
            try await reconciler.withRunning { reconciler in
                #expect(try await reconciler.apply(project).builtImages == ["built-web"])
                try await reconciler.waitForRollout("web")
                let replica = try #require(try runtime.list().first { $0.spec.labels[ReplicaLabel.service] == "web" })
                let container = try runtime.container(replica.id)
                for _ in 0 ..< 500 where try await container.logs.text().isEmpty { try await Task.sleep(for: .milliseconds(10)) }
                #expect(try await container.logs.text() == "hello\n")
                // Built once: the store has it now, unless a rebuild is asked for.
                #expect(try await reconciler.apply(project).builtImages.isEmpty)
                #expect(try await reconciler.apply(project, rebuilding: true).builtImages == ["built-web"])
                // A Dockerfile that fails names the service.
                try write("FROM busybox:test\nRUN exit 3\n", to: dir + "/app/docker/Web.dockerfile")
                await #expect { try await reconciler.apply(project, rebuilding: true) } throws: { error in
                    (error as? ReconcilerError)?.message.contains("service web: cannot build image built-web from \(dir)/app") == true
                }
                try await Reconciler.tearDown(project: "built", runtime: runtime, store: reconciler.store, timeout: .seconds(20))
            }
            _ = try await runtime.images.remove("built-web")
        }
    }
}
