import Foundation
import GantryTestSupport
import InMemoryTracing
import MetricsTestKit
@testable import Runtime
import Scheduler
import Synchronization
import Testing
@testable import Reconciler

@Suite(.requiresRoot, .serialized) struct ServiceTests {
    @Test func replicasConvergeScaleAndGo() async throws {
        try await withReconciler("converge") { reconciler, runtime in
            let events = EventLog(reconciler)
            try reconciler.apply(shellService("web", replicas: 3, "exec sleep 600"))
            let record = try await reconciler.waitForRollout("web")
            #expect(record.status.availableReplicas == 3)
            #expect(record.status.rollout == .complete)
            let running = try runningReplicas(runtime, service: "web")
            #expect(running.count == 3)
            #expect(Set(running.map { $0.spec.labels[ReplicaLabel.lineage] }).count == 3)
            #expect(running.allSatisfy { $0.name.hasPrefix("web-") && $0.spec.labels[ReplicaLabel.revision] == "1" })

            try reconciler.scale("web", replicas: 1)
            try await reconciler.waitUntil("web") { _, replicas in replicas.count == 1 }
            #expect(try runningReplicas(runtime, service: "web").count == 1)
            // Events reach the log through a stream: the scale's may come a moment after the replicas go.
            let scaled = try await events.wait { $0.service == "web" && $0.name == "scaled" }
            #expect(scaled.count == 1)

            try reconciler.delete("web")
            try await reconciler.waitUntil("web") { record, replicas in record == nil && replicas.isEmpty }
            #expect(try runtime.list().isEmpty)
            #expect(throws: ReconcilerError.self) { try reconciler.store.service("web") }
        }
    }

    @Test func aKilledReplicaIsReplacedAtOnce() async throws {
        try await withReconciler("heal") { reconciler, runtime in
            let events = EventLog(reconciler)
            try reconciler.apply(shellService("worker", replicas: 2, "exec sleep 600"))
            try await reconciler.waitForRollout("worker")
            let victim = try runningReplicas(runtime, service: "worker")[0]
            // The reconciler's own handle, which keeps the record after removal.
            let handle = try runtime.container(victim.id)
            try handle.kill(.kill)
            let restarted = try await events.wait { $0.name == "restarted" }
            let replacement = try runtime.container(try #require(restarted.first?.container)).record
            let finishedAt = try #require(try handle.record.finishedAt)
            let startedAt = try #require(replacement.startedAt)
            // Healing is measured by the heal benchmark; here it must merely
            // come before the first crash-loop back-off (10 s) would have ended,
            // with room for a loaded machine.
            #expect(startedAt.timeIntervalSince(finishedAt) < 5, "replaced after \(startedAt.timeIntervalSince(finishedAt)) s")
            #expect(replacement.spec.labels[ReplicaLabel.lineage] == victim.spec.labels[ReplicaLabel.lineage])
            try await reconciler.waitUntil("worker") { record, replicas in
                record?.status.restarts == 1 && record?.status.availableReplicas == 2 && replicas.count == 2
                    && !replicas.contains { $0.id == victim.id }
            }
            #expect(try runningReplicas(runtime, service: "worker").count == 2)
            // The victim's container is gone once replaced.
            try await reconciler.waitUntil("worker") { _, _ in (try? runtime.container(victim.id)) == nil }
        }
    }

    @Test func crashLoopBackOffFollowsTheClock() async throws {
        let clock = ManualClock()
        try await withReconciler("crashloop", clock: clock) { reconciler, runtime in
            let events = EventLog(reconciler)
            var spec = shellService("crasher", "exit 3")
            spec.crashLoop = CrashLoopBackoff(initial: .seconds(10), maximum: .seconds(30), resetAfter: .seconds(600))
            try reconciler.apply(spec)
            // The first end is followed by a restart at once, the second by 10 s of back-off.
            try await events.wait { $0.name == "restarted" }
            let first = try await events.wait { $0.name == "backingOff" }
            #expect(first.first?.kind == .backingOff(delay: .seconds(10)))
            let startsBefore = events.names(of: "crasher").filter { $0 == "started" }.count
            #expect(startsBefore == 2)
            clock.advance(by: .seconds(9))
            try await Task.sleep(for: .milliseconds(300))
            #expect(events.names(of: "crasher").filter { $0 == "started" }.count == 2, "restarted before its back-off ended")
            clock.advance(by: .seconds(1))
            try await events.wait(count: 3) { $0.name == "started" }
            // Then 20 s, then the 30 s cap.
            let second = try await events.wait(count: 2) { $0.name == "backingOff" }
            #expect(second.last?.kind == .backingOff(delay: .seconds(20)))
            clock.advance(by: .seconds(20))
            let third = try await events.wait(count: 3) { $0.name == "backingOff" }
            #expect(third.last?.kind == .backingOff(delay: .seconds(30)))
            clock.advance(by: .seconds(30))
            let fourth = try await events.wait(count: 4) { $0.name == "backingOff" }
            #expect(fourth.last?.kind == .backingOff(delay: .seconds(30)))
            #expect(try reconciler.service("crasher").status.restarts == 4)
            // Only the last ended container is kept, for its logs.
            #expect(try runtime.list().filter { $0.spec.labels[ReplicaLabel.service] == "crasher" }.count == 1)
        }
    }

    @Test func aLongRunResetsTheBackOff() async throws {
        let clock = ManualClock()
        try await withReconciler("crashreset", clock: clock) { reconciler, runtime in
            let events = EventLog(reconciler)
            try reconciler.apply(shellService("steady", "exec sleep 600"))
            try await reconciler.waitForRollout("steady")
            for round in 1 ... 2 {
                // Each end after 10 minutes of running is restarted at once.
                clock.advance(by: .seconds(600))
                let victim = try runningReplicas(runtime, service: "steady")[0]
                try runtime.container(victim.id).kill(.kill)
                try await events.wait(count: round) { $0.name == "restarted" }
            }
            #expect(!events.names(of: "steady").contains("backingOff"))
        }
    }

    @Test func aFailingLivenessProbeRestarts() async throws {
        try await withReconciler("liveness") { reconciler, runtime in
            let events = EventLog(reconciler)
            var spec = shellService("flaky", "touch /tmp/alive; sleep 1; rm /tmp/alive; exec sleep 600")
            spec.probes.liveness = Probe(.exec(["test", "-f", "/tmp/alive"]), period: .milliseconds(100), failureThreshold: 2)
            try reconciler.apply(spec)
            let unhealthy = try await events.wait { $0.name == "unhealthy" }
            #expect(unhealthy.first?.kind == .unhealthy(.liveness))
            let failures = events.all.filter { $0.name == "probeFailed" && $0.container == unhealthy.first?.container }
            #expect(failures.count >= 2)
            try await events.wait { $0.name == "restarted" }
            try await reconciler.waitUntil("flaky") { _, replicas in
                replicas.count == 1 && replicas[0].name != unhealthy.first?.container
            }
        }
    }

    @Test func httpAndTCPProbes() async throws {
        try await withReconciler("httpprobe") { reconciler, runtime in
            var spec = shellService("site", "mkdir -p /www && echo ok > /www/ok && exec httpd -f -p 8080 -h /www")
            spec.probes.readiness = Probe(.httpGet(path: "/ok", port: 8080, host: nil), period: .milliseconds(100))
            spec.probes.liveness = Probe(.tcpSocket(port: 8080, host: nil), period: .milliseconds(100))
            try reconciler.apply(spec)
            let record = try await reconciler.waitForRollout("site", timeout: .seconds(30))
            #expect(record.status.readyReplicas == 1)
            // A path that is missing fails readiness.
            let container = try runtime.container(try runningReplicas(runtime, service: "site")[0].id)
            let missing = await Prober.check(Probe(.httpGet(path: "/missing", port: 8080, host: nil)), container: container)
            #expect(!missing.passed && missing.message.contains("404"))
            let closed = await Prober.check(Probe(.tcpSocket(port: 9, host: nil)), container: container)
            #expect(!closed.passed && closed.message.contains("refused"), "\(closed.message)")
        }
    }

    @Test func aFailingRevisionStallsAndRollsBack() async throws {
        try await withReconciler("rollback") { reconciler, runtime in
            let events = EventLog(reconciler)
            var spec = shellService("api", replicas: 2, "exec sleep 600")
            spec.probes.readiness = Probe(.exec(["true"]), period: .milliseconds(100))
            spec.update.progressDeadline = .seconds(3)
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("api")
            let original = Set(try runningReplicas(runtime, service: "api").map(\.id))

            spec.template.command = ["sh", "-c", "exit 1"]
            try reconciler.apply(spec)
            try await events.wait { $0.name == "rolloutStarted" && $0.kind == .rolloutStarted(revision: 2) }
            // While it stalls, the old replicas keep serving (25 % of 2 may be unavailable: none).
            try await Task.sleep(for: .seconds(1))
            #expect(Set(try runningReplicas(runtime, service: "api").filter { $0.spec.labels[ReplicaLabel.revision] == "1" }.map(\.id)) == original)
            let failed = try await events.wait { $0.name == "rolloutFailed" }
            #expect(failed.first?.kind == .rolloutFailed(revision: 2))
            let rolledBack = try await events.wait { $0.name == "rolledBack" }
            #expect(rolledBack.first?.kind == .rolledBack(from: 2, to: 3))
            let record = try await reconciler.waitForRollout("api")
            #expect(record.revision == 3)
            #expect(record.spec.template.command == ["sh", "-c", "exec sleep 600"])
            #expect(record.status.message?.contains("rolled back") == true)
            // The revisions: 2 failed, 3 is 1's template again (1 was renumbered).
            let revisions = try reconciler.store.revisions("api")
            #expect(revisions.map(\.number) == [2, 3])
            try await reconciler.waitUntil("api") { _, replicas in
                replicas.count == 2 && replicas.allSatisfy { $0.current && $0.ready }
            }
            // The replicas of the restored template kept running throughout.
            #expect(Set(try runningReplicas(runtime, service: "api").map(\.id)) == original)
        }
    }

    @Test func readinessGatesARollingUpdate() async throws {
        try await withReconciler("gate") { reconciler, runtime in
            var spec = shellService("svc", replicas: 2, "exec sleep 600")
            spec.probes.readiness = Probe(.exec(["test", "-f", "/tmp/ready"]), period: .milliseconds(100))
            spec.template.command = ["sh", "-c", "touch /tmp/ready; exec sleep 600"]
            spec.update = UpdateStrategy(maxSurge: .count(1), maxUnavailable: .count(0))
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("svc")
            spec.template.command = ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 600"]
            try reconciler.apply(spec)
            // Sample while it rolls: never fewer than two ready replicas, never more than three.
            var samples = 0
            while true {
                let replicas = reconciler.replicas(of: "svc").filter { $0.exit == nil }
                let ready = replicas.filter { $0.ready && !$0.terminating }
                #expect(ready.count >= 2, "only \(ready.count) ready during the rollout")
                #expect(replicas.filter { !$0.terminating }.count <= 3)
                samples += 1
                let record = try reconciler.service("svc")
                if record.status.observedGeneration == record.generation, record.status.rollout == .complete, replicas.allSatisfy({ $0.revision == 2 }) { break }
                try await Task.sleep(for: .milliseconds(10))
                if samples > 3000 { Issue.record("the rollout did not finish"); break }
            }
            #expect(try runningReplicas(runtime, service: "svc").allSatisfy { $0.spec.labels[ReplicaLabel.revision] == "2" })
        }
    }

    @Test func dependsOnWaitsUntilHealthy() async throws {
        try await withReconciler("depends") { reconciler, runtime in
            let events = EventLog(reconciler)
            var db = shellService("db", "sleep 1; touch /tmp/up; exec sleep 600")
            db.probes.readiness = Probe(.exec(["test", "-f", "/tmp/up"]), period: .milliseconds(100))
            var web = shellService("web", "exec sleep 600")
            web.dependsOn = [ServiceDependency("db", condition: .healthy)]
            try reconciler.apply(web)
            try reconciler.apply(db)
            try await events.wait { $0.service == "web" && $0.name == "waiting" }
            let started = try await events.wait { $0.service == "web" && $0.name == "started" }
            let ready = try #require(events.all.first { $0.service == "db" && $0.name == "ready" })
            #expect(started[0].time >= ready.time)
            try await reconciler.waitForRollout("web")
        }
    }

    @Test func onFailureAndNeverPolicies() async throws {
        try await withReconciler("policies") { reconciler, runtime in
            var once = shellService("once", replicas: 2, "exit 0")
            once.restartPolicy = .onFailure
            var never = shellService("never", "exit 4")
            never.restartPolicy = .never
            try reconciler.apply(once)
            try reconciler.apply(never)
            try await reconciler.waitUntil("once") { record, _ in record?.status.succeeded == 2 }
            try await reconciler.waitUntil("never") { record, _ in record?.status.failed == 1 }
            #expect(try reconciler.service("once").status.restarts == 0)
            #expect(try reconciler.service("never").status.restarts == 0)
            // The ended containers stay, for their logs and exit codes.
            let ended = try runtime.list().filter { $0.spec.labels[ReplicaLabel.service] == "never" }
            #expect(ended.map { $0.exit?.code } == [4])
        }
    }

    @Test func metricsSpansAndTheJournal() async throws {
        let metrics = TestMetrics()
        let tracer = InMemoryTracer()
        try await withReconciler("telemetry", metrics: metrics, tracer: tracer) { reconciler, runtime in
            var spec = shellService("obs", "exec sleep 600")
            spec.probes.readiness = Probe(.exec(["true"]), period: .milliseconds(100))
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("obs")
            let victim = try runningReplicas(runtime, service: "obs")[0]
            try runtime.container(victim.id).kill(.kill)
            try await reconciler.waitUntil("obs") { record, _ in record?.status.restarts == 1 && record?.status.readyReplicas == 1 }
            let restarts = try metrics.expectCounter("gantry_service_restarts_total", [("service", "obs")])
            #expect(restarts.totalValue == 1)
            let probeTimer = try metrics.expectTimer("gantry_probe_duration_seconds", [("service", "obs"), ("probe", "readiness")])
            #expect(!probeTimer.values.isEmpty)
            let reconcileTimer = try metrics.expectTimer("gantry_reconcile_duration_seconds", [("service", "obs")])
            #expect(!reconcileTimer.values.isEmpty)
            let spans = tracer.finishedSpans.map(\.operationName)
            #expect(spans.contains("reconcile") && spans.contains("probe"))
            // The journal has the events, by object, for other processes too.
            try await reconciler.waitUntil("obs") { _, _ in
                ((try? reconciler.store.events(object: "container/\(victim.name)")) ?? []).contains { $0.event.name == "exited" }
            }
            let other = try ServiceStore(root: runtime.images.root)
            let journal = try other.events(object: "obs")
            #expect(journal.map(\.event.name).contains("restarted"))
            #expect(journal.map(\.sequence) == journal.map(\.sequence).sorted())
            var followed: [String] = []
            for try await entry in other.follow(object: "service/obs") {
                followed.append(entry.event.name)
                if entry.event.name == "rolloutCompleted" { break }
            }
            #expect(followed.first == "applied")
        }
    }

    @Test func aCustomMetricDrivesTheAutoscaler() async throws {
        let source = QueueLengthSource()
        let options = Reconciler.Options(autoscaleInterval: .milliseconds(100), metricSource: source)
        try await withReconciler("autoscale", options: options) { reconciler, runtime in
            let events = EventLog(reconciler)
            try reconciler.apply(shellService("queue", replicas: 2, "exec sleep 600"))
            try await reconciler.waitForRollout("queue")
            #expect(throws: ReconcilerError.self) { try reconciler.setAutoscaler(AutoscalerSpec(maxReplicas: 4, metrics: []), service: "queue") }
            #expect(throws: ReconcilerError.self) {
                try reconciler.setAutoscaler(AutoscalerSpec(maxReplicas: 4, metrics: [.custom("jobs", averageValue: 10)]), service: "nothing")
            }
            var behavior = ScalingBehavior.kubernetesDefault
            behavior.scaleDown.stabilizationWindow = .zero
            try reconciler.setAutoscaler(AutoscalerSpec(minReplicas: 1, maxReplicas: 4, metrics: [.custom("jobs", averageValue: 10)], behavior: behavior),
                                         service: "queue")
            // 30 waiting jobs per replica against a target of 10: 2 × 3 = 6, held at the maximum of 4.
            source.perReplica.withLock { $0 = 30 }
            try await reconciler.waitUntil("queue") { record, replicas in record?.spec.replicas == 4 && replicas.count == 4 }
            let record = try #require(try reconciler.store.autoscaler("queue"))
            #expect(record.status.desiredReplicas == 4 && record.status.message?.contains("maxReplicas") == true, "\(record.status)")
            // Within the tolerance nothing changes; far below, it scales down to the minimum.
            source.perReplica.withLock { $0 = 10.5 }
            try await Task.sleep(for: .milliseconds(400))
            #expect(try reconciler.service("queue").spec.replicas == 4)
            source.perReplica.withLock { $0 = 1 }
            try await reconciler.waitUntil("queue") { record, replicas in record?.spec.replicas == 1 && replicas.count == 1 }
            #expect(events.names(of: "queue").filter { $0 == "autoscaled" }.count >= 2)
            // Removed, it leaves the count alone.
            try reconciler.setAutoscaler(nil, service: "queue")
            source.perReplica.withLock { $0 = 100 }
            try await Task.sleep(for: .milliseconds(400))
            #expect(try reconciler.service("queue").spec.replicas == 1)
            #expect(try reconciler.store.autoscaler("queue") == nil)
            try reconciler.delete("queue")
            try await reconciler.waitUntil("queue") { record, replicas in record == nil && replicas.isEmpty }
            #expect(try runtime.list().isEmpty)
        }
    }

    @Test func anotherProcessCanScaleThroughTheStore() async throws {
        try await withReconciler("crossprocess") { reconciler, runtime in
            try reconciler.apply(shellService("far", "exec sleep 600"))
            try await reconciler.waitForRollout("far")
            // Another store object is another connection, as another process has.
            let other = try ServiceStore(root: runtime.images.root)
            try other.scale("far", replicas: 2)
            try await reconciler.waitUntil("far") { record, replicas in record?.spec.replicas == 2 && replicas.count == 2 }
            #expect(try await reconciler.waitForRollout("far").status.availableReplicas == 2)
            // A second reconciler of the same project is refused.
            let second = try Reconciler(runtime: runtime)
            await #expect(throws: ReconcilerError.self) { try await second.run() }
        }
    }
}

/// A custom metric: the same number of waiting jobs for every replica.
private final class QueueLengthSource: ReplicaMetricSource {
    let perReplica = Mutex<Double?>(nil)

    func sample(_ metric: AutoscalerMetric.Kind, of service: ServiceSpec, replicas: [Reconciler.ReplicaInfo]) async throws -> MetricSample {
        let value = perReplica.withLock { $0 }
        return MetricSample(metric, values: replicas.map { _ in value })
    }
}

extension ServiceTests {
    @Test(.requiresRoot) func aKilledReplicaThatPublishesAPortIsReplacedOnTheSamePort() async throws {
        try await withReconciler("heal-port") { reconciler, runtime in
            let port = try #require(Networks.freeHostPort(.tcp))
            var spec = shellService("web", "exec sleep 600")
            spec.template = spec.template.network(.bridge(Networks.defaultName)).publishing(PublishedPort(hostPort: port, containerPort: 80))
            // Each replica publishing the port itself, without an endpoint.
            spec.endpointMode = .dnsRoundRobin
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("web")
            let victim = try #require(try runningReplicas(runtime, service: "web").first)
            try runtime.container(victim.id).kill(.kill)
            // Replaced, on the same port, however the pool is loaded.
            try await reconciler.waitUntil("web") { record, replicas in
                replicas.contains { $0.id != victim.id && $0.exit == nil && $0.ready } && record?.status.availableReplicas == 1
            }
            let replacement = try #require(try runningReplicas(runtime, service: "web").first)
            #expect(replacement.id != victim.id)
            #expect(replacement.network?.ports.first?.hostPort == port)
            try reconciler.delete("web")
            try await reconciler.waitUntil("web") { record, replicas in record == nil && replicas.isEmpty }
        }
    }
}


extension ServiceTests {
    @Test(.requiresRoot) func aNamedReplicaKeepsItsNameThroughAKillAndARollout() async throws {
        try await withReconciler("named") { reconciler, runtime in
            let events = EventLog(reconciler)
            let name = "named-\(UUID().uuidString.prefix(6).lowercased())"
            var spec = shellService("db", "exec sleep 600")
            spec.template.name = name
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("db")
            let first = try runtime.container(name)
            // Killed: replaced under the same name, once the ended one is gone.
            try first.kill(.kill)
            try await events.wait { $0.name == "restarted" }
            try await reconciler.waitUntil("db") { _, replicas in replicas.contains { $0.id != first.id && $0.exit == nil && $0.ready } }
            let second = try runtime.container(name)
            #expect(second.id != first.id)
            // A new revision replaces it in place, under the name again.
            spec.template.environment = ["REVISION=2"]
            try reconciler.apply(spec)
            try await reconciler.waitUntil("db") { record, replicas in
                record?.revision == 2 && replicas.count == 1 && replicas.allSatisfy { $0.current && $0.ready && $0.exit == nil }
            }
            let third = try runtime.container(name)
            #expect(third.id != second.id)
            #expect(try third.record.spec.labels[ReplicaLabel.revision] == "2")
            // One container has one name: no second replica.
            #expect(throws: ReconcilerError.self) { try reconciler.scale("db", replicas: 2) }
            try reconciler.delete("db")
            try await reconciler.waitUntil("db") { record, replicas in record == nil && replicas.isEmpty }
        }
    }
}
