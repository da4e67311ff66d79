import Foundation
import GantryTestSupport
@testable import Runtime
import Testing
@testable import Reconciler

@Suite(.requiresRoot) struct SecretServiceTests {
    @Test func aChangedSecretOrConfigRollsTheServiceOutAndNoValueIsWritten() async throws {
        try await withTemporaryDirectory("secret-service") { dir in
            try await withReconciler("secret-service") { reconciler, runtime in
                let first = "token-one-\(UUID().uuidString)"
                let second = "token-two-\(UUID().uuidString)"
                let variableValue = "from-env-\(UUID().uuidString)"
                try first.write(toFile: dir + "/token", atomically: true, encoding: .utf8)
                let variable = "GANTRY_TEST_SERVICE_SECRET_\(UUID().uuidString.prefix(8))"
                setenv(variable, variableValue, 1)
                defer { unsetenv(variable) }
                // Each replica prints checksums, never values, so that its log may be searched.
                var spec = shellService("app", replicas: 2, """
                    md5sum /run/secrets/token | cut -c1-32; echo -n "$API_KEY" | md5sum | cut -c1-32; cat /etc/app.conf; echo; exec sleep 600
                    """)
                spec.template = spec.template
                    .secret(.init(name: "token", source: .file(path: dir + "/token")))
                    .secret(.init(name: "api", source: .environment(variable: variable), environmentVariable: "API_KEY", mounted: false))
                    .config(.init(name: "app", source: .content("level=1"), target: "/etc/app.conf"))
                try reconciler.apply(spec)
                #expect(try await reconciler.waitForRollout("app").revision == 1)
                func outputs(revision: Int) async throws -> [String] {
                    var texts: [String] = []
                    for record in try runningReplicas(runtime, service: "app") where record.spec.labels[ReplicaLabel.revision] == "\(revision)" {
                        let container = try runtime.container(record.id)
                        for _ in 0 ..< 500 where !(try await container.logs.text()).hasSuffix("\n") { try await Task.sleep(for: .milliseconds(10)) }
                        texts.append(try await container.logs.text())
                    }
                    return texts
                }
                let expectedFirst = try await md5Hex(first) + "\n" + md5Hex(variableValue) + "\nlevel=1\n"
                #expect(try await outputs(revision: 1) == [expectedFirst, expectedFirst])

                // Applied again unchanged: nothing happens.
                #expect(try reconciler.store.apply(spec).changed == false)
                // The file changes: applying the same spec rolls out a new revision.
                try second.write(toFile: dir + "/token", atomically: true, encoding: .utf8)
                try reconciler.apply(spec)
                #expect(try await reconciler.waitForRollout("app").revision == 2)
                let expectedSecond = try await md5Hex(second) + "\n" + md5Hex(variableValue) + "\nlevel=1\n"
                let seen = try await outputs(revision: 2)
                let listed = try runtime.list().map { "\($0.name) \($0.status) \($0.spec.labels[ReplicaLabel.revision] ?? "")" }
                #expect(seen == [expectedSecond, expectedSecond], "\(seen) \(listed)")
                // So does a changed config.
                spec.template.configs[0].source = .content("level=2")
                try reconciler.apply(spec)
                #expect(try await reconciler.waitForRollout("app").revision == 3)

                // No value anywhere in the state root: not in the service
                // store (nor its journal), not in the containers' records or logs.
                for value in [first, second, variableValue] {
                    #expect(filesHolding(value, under: runtime.images.root.path).isEmpty, "a secret's value is in the state root")
                    let events = try reconciler.store.events(object: "app")
                    #expect(!events.contains { "\($0)".contains(value) })
                }
                let stored = try reconciler.store.service("app")
                #expect(stored.spec.template.secrets.allSatisfy { $0.digest?.hasPrefix("hmac-sha256:") == true })

                // A value given inline cannot be kept by a service.
                var inline = shellService("inline", "true")
                inline.template = inline.template.secret(.init(name: "x", source: .value(Array("v".utf8))))
                #expect { try reconciler.apply(inline) } throws: {
                    ($0 as? ReconcilerError)?.message.contains("secret x is given as a value, which a service cannot keep") == true
                }
                // A secret whose file cannot be read is refused when applied.
                var missing = shellService("missing", "true")
                missing.template = missing.template.secret(.init(name: "gone", source: .file(path: dir + "/nothing")))
                #expect { try reconciler.apply(missing) } throws: {
                    ($0 as? ReconcilerError)?.message.contains("secret gone of service missing is read from \(dir)/nothing") == true
                }
                try reconciler.delete("app")
                try await reconciler.waitUntil("app") { record, replicas in record == nil && replicas.isEmpty }
            }
        }
    }
}
