import Foundation
import GantryTestSupport
import Runtime
import Testing
@testable import Reconciler

/// Runs a reconciler over a simulated runtime, on a manual clock, while
/// `body` runs: no root, no containers, no waiting for real time.
private func withSimulatedReconciler<T: Sendable>(
    _ label: String, _ body: @Sendable (Reconciler, SimulatedRuntime, ManualClock, EventLog) async throws -> T
) async throws -> T {
    try await withTemporaryDirectory(label) { directory in
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        let runtime = SimulatedRuntime(root: directory + "/state")
        let clock = ManualClock()
        // Nothing periodic: every step of these tests is caused by the test.
        let options = Reconciler.Options(resyncPeriod: .seconds(86_400), storePollInterval: .seconds(86_400))
        let reconciler = try Reconciler(runtime: runtime, options: options, clock: clock)
        let events = EventLog(reconciler)
        return try await reconciler.withRunning { try await body($0, runtime, clock, events) }
    }
}

/// A service of `replicas` simulated containers running `command`.
private func service(_ name: String, replicas: Int = 1, command: String = "serve") -> ServiceSpec {
    ServiceSpec(name: name, replicas: replicas, template: ContainerSpec(image: "simulated", command: [command]))
}

/// How long a step may take in real time. The steps take milliseconds;
/// the whole suite running at once on two cores can hold a task up for
/// tens of seconds.
private let patience = Duration.seconds(120)

/// Polls `condition` (real time, up to ``patience``): the reconciler works
/// on tasks of its own, even when the time it reads stands still.
private func eventually(_ what: String, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + patience
    while ContinuousClock.now < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("never happened: \(what)")
    throw ReconcilerError(.invalidState, "never happened: \(what)")
}

/// Waits until the reconciler sleeps until `offset` on the clock.
private func sleeper(at offset: Duration, on clock: ManualClock) async throws {
    try await eventually("a sleeper at \(offset)") { clock.deadlines.contains(ManualClock.Instant(offset: offset)) }
}

/// The reconciler's decisions, tested against a simulated runtime under a
/// manual clock: they run as any user.
@Suite struct ReconcilerDecisionTests {
    struct EndCase: Sendable, CustomTestStringConvertible {
        var policy: RestartPolicy
        var exit: ProcessExit
        var replaced: Bool
        var testDescription: String { "\(policy), \(exit): \(replaced ? "replaced" : "left")" }
    }

    @Test(arguments: [
        EndCase(policy: .always, exit: .exited(0), replaced: true),
        EndCase(policy: .always, exit: .exited(1), replaced: true),
        EndCase(policy: .onFailure, exit: .exited(0), replaced: false),
        EndCase(policy: .onFailure, exit: .exited(2), replaced: true),
        EndCase(policy: .onFailure, exit: .signaled(.kill), replaced: true),
        EndCase(policy: .never, exit: .exited(1), replaced: false),
    ])
    func aReplicaThatEndsIsReplacedAsItsRestartPolicySays(_ test: EndCase) async throws {
        try await withSimulatedReconciler("decide-policy") { reconciler, runtime, _, events in
            var spec = service("web")
            spec.restartPolicy = test.policy
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("web", timeout: patience)
            let victim = try #require(runtime.running("web").first)
            victim.end(test.exit)
            _ = try await events.wait(timeout: patience) { $0.name == "exited" }
            if test.replaced {
                try await eventually("a replacement") { runtime.running("web").count == 1 }
                #expect(runtime.running("web").first?.id != victim.id)
                #expect(runtime.running("web").first?.spec.labels[ReplicaLabel.lineage] == victim.spec.labels[ReplicaLabel.lineage])
                _ = try await events.wait(timeout: patience) { $0.name == "restarted" }
            } else {
                try await Task.sleep(for: .milliseconds(200))
                #expect(runtime.createdCount == 1)
                #expect(runtime.running("web").isEmpty)
            }
        }
    }

    @Test func aCrashLoopBacksOffTwiceAsLongEachTimeUpToItsMaximum() async throws {
        try await withSimulatedReconciler("decide-backoff") { reconciler, runtime, clock, _ in
            var spec = service("loop")
            spec.crashLoop = CrashLoopBackoff(initial: .seconds(10), maximum: .seconds(25), resetAfter: .seconds(600))
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("loop", timeout: patience)
            // The first restart comes at once.
            try #require(runtime.running("loop").first).end(.exited(1))
            try await eventually("the first restart") { runtime.createdCount == 2 && runtime.running("loop").count == 1 }
            // Then 10 s, 20 s, and 25 s (the maximum) after each end.
            var now = Duration.zero
            for (made, delay) in [(3, Duration.seconds(10)), (4, .seconds(20)), (5, .seconds(25))] {
                try #require(runtime.running("loop").first).end(.exited(1))
                try await sleeper(at: now + delay, on: clock)
                clock.advance(by: delay - .seconds(1))
                try await Task.sleep(for: .milliseconds(100))
                #expect(runtime.createdCount == made - 1, "restarted before its back-off of \(delay) ended")
                clock.advance(by: .seconds(1))
                now += delay
                try await eventually("restart \(made - 1) after \(delay)") { runtime.createdCount == made && runtime.running("loop").count == 1 }
            }
        }
    }

    @Test func aRollingUpdateKeepsWithinItsSurgeAndAvailability() async throws {
        try await withSimulatedReconciler("decide-rollout") { reconciler, runtime, _, _ in
            var spec = service("api", replicas: 4)
            spec.update = UpdateStrategy(maxSurge: .count(1), maxUnavailable: .count(0))
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("api", timeout: patience)
            #expect(runtime.peakRunning == 4)
            spec.template.command = ["serve-v2"]
            try reconciler.apply(spec)
            let record = try await reconciler.waitForRollout("api", timeout: patience)
            #expect(record.revision == 2)
            #expect(record.status.rollout == .complete)
            try await eventually("four replicas of revision 2") {
                let running = runtime.running("api")
                return running.count == 4 && running.allSatisfy { $0.spec.command == ["serve-v2"] }
            }
            // One more than asked for at most, never fewer (no unavailability allowed).
            #expect(runtime.peakRunning == 5)
            #expect(runtime.createdCount == 8)
        }
    }

    @Test func aRevisionThatCannotStartStallsThenRollsBackAtItsDeadline() async throws {
        try await withSimulatedReconciler("decide-rollback") { reconciler, runtime, clock, events in
            runtime.behave("broken", .exits(.exited(1)))
            var spec = service("api", replicas: 2)
            spec.update.progressDeadline = .seconds(60)
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("api", timeout: patience)
            let original = Set(runtime.running("api").map(\.id))
            spec.template.command = ["broken"]
            try reconciler.apply(spec)
            _ = try await events.wait(timeout: patience) { $0.kind == .rolloutStarted(revision: 2) }
            _ = try await events.wait(timeout: patience) { $0.name == "exited" }
            // The deadline has not passed: the old replicas serve on.
            #expect(Set(runtime.running("api").map(\.id)) == original)
            #expect(!events.all.contains { $0.name == "rolloutFailed" })
            try await sleeper(at: .seconds(60), on: clock)
            clock.advance(by: .seconds(61))
            let rolledBack = try await events.wait(timeout: patience) { $0.name == "rolledBack" }
            #expect(rolledBack.first?.kind == .rolledBack(from: 2, to: 3))
            let record = try await reconciler.waitForRollout("api", timeout: patience)
            #expect(record.spec.template.command == ["serve"])
            #expect(Set(runtime.running("api").map(\.id)) == original, "the replicas of the restored template kept running")
        }
    }

    @Test func aReplicaFailingItsLivenessProbeIsStoppedAndReplaced() async throws {
        try await withSimulatedReconciler("decide-liveness") { reconciler, runtime, clock, events in
            runtime.probe("alive", passes: false)
            var spec = service("db")
            spec.probes.liveness = Probe(.exec(["alive"]), period: .seconds(10), failureThreshold: 3)
            try reconciler.apply(spec)
            try await reconciler.waitForRollout("db", timeout: patience)
            let first = try #require(runtime.running("db").first)
            // Checks at 0 s, 10 s and 20 s fail; the third stops it.
            _ = try await events.wait(timeout: patience) { $0.kind == .probeFailed(.liveness) }
            for round in 1 ... 2 {
                try await sleeper(at: .seconds(10) * round, on: clock)
                clock.advance(by: .seconds(10))
                _ = try await events.wait(count: round + 1, timeout: patience) { $0.kind == .probeFailed(.liveness) }
            }
            _ = try await events.wait(timeout: patience) { $0.kind == .unhealthy(.liveness) }
            runtime.probe("alive", passes: true)
            try await eventually("the unhealthy replica replaced") {
                runtime.running("db").count == 1 && runtime.running("db").first?.id != first.id
            }
            #expect(first.currentStatus != .running)
        }
    }

    @Test func readinessDecidesWhichReplicasCountAsAvailable() async throws {
        try await withSimulatedReconciler("decide-readiness") { reconciler, runtime, clock, _ in
            runtime.probe("ready", passes: false)
            var spec = service("web", replicas: 2)
            spec.probes.readiness = Probe(.exec(["ready"]), period: .seconds(5), failureThreshold: 1)
            try reconciler.apply(spec)
            try await eventually("two replicas running") { runtime.running("web").count == 2 }
            try await Task.sleep(for: .milliseconds(100))
            #expect(reconciler.replicas(of: "web").allSatisfy { !$0.ready })
            #expect(try reconciler.service("web").status.availableReplicas == 0)
            runtime.probe("ready", passes: true)
            try await sleeper(at: .seconds(5), on: clock)
            clock.advance(by: .seconds(5))
            try await reconciler.waitUntil("web", timeout: patience) { record, replicas in
                replicas.count == 2 && replicas.allSatisfy(\.ready) && record?.status.availableReplicas == 2
            }
        }
    }
}
