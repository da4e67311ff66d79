import ArgumentParser
import Foundation
import OCIImage
import Reconciler
import Runtime

/// Runs a reconciler over the benchmark's runtime while `body` runs.
func withReconciler<T: Sendable>(_ runtime: ContainerRuntime, _ body: @Sendable (Reconciler) async throws -> T) async throws -> T {
    try await Reconciler(runtime: runtime, options: Reconciler.Options(project: "bench", startConcurrency: 4)).withRunning(body)
}

func sleeperService(_ name: String, replicas: Int) -> ServiceSpec {
    var spec = ServiceSpec(name: name, project: "bench", replicas: replicas, template: ContainerSpec(image: "busybox:bench", command: ["sleep", "600"]))
    spec.stopGracePeriod = .milliseconds(100)
    return spec
}

struct Heal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SIGKILL a running replica, time until its replacement runs; p50 and p99 over many kills of different replicas.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Replicas of the service.") var replicas = 10
    @Option(help: "Kills, each of a different replica than the one before.") var kills = 100

    func run() async throws {
        try await options.withRuntime { runtime in
            try await withReconciler(runtime) { reconciler in
                // Each victim has run a while, as a healthy replica has: its
                // end is replaced at once. (With the default ten minutes, the
                // second kill of a replica would measure the crash-loop back-off.)
                var spec = sleeperService("heal", replicas: replicas)
                spec.crashLoop.resetAfter = .milliseconds(1)
                try reconciler.apply(spec)
                try await reconciler.waitForRollout("heal", timeout: .seconds(120))
                let events = reconciler.events()
                var iterator = events.makeAsyncIterator()
                var recorded: [Double] = []
                var observed: [Double] = []
                let clock = ContinuousClock()
                // When each replica was first seen: the victim is always the
                // oldest, so a replacement that started a moment ago (and
                // would count as crash-looping) is not killed again at once.
                var firstSeen: [String: Int] = [:]
                for round in 0 ..< kills {
                    let running = reconciler.replicas(of: "heal").filter { $0.exit == nil && !$0.terminating }
                    for replica in running where firstSeen[replica.name] == nil { firstSeen[replica.name] = round }
                    guard let victim = running.min(by: { (firstSeen[$0.name]!, $0.name) < (firstSeen[$1.name]!, $1.name) }) else {
                        throw ValidationError("no replica of the service is running")
                    }
                    let handle = try runtime.container(victim.id)
                    let killedAt = clock.now
                    try handle.kill(.kill)
                    var replacement: String?
                    while replacement == nil, let event = await iterator.next() {
                        if case .restarted = event.kind { replacement = event.container }
                    }
                    let healed = clock.now - killedAt
                    guard let replacement else { throw ValidationError("the event stream ended before replica \(victim.name) was replaced") }
                    guard let finishedAt = try handle.record.finishedAt else {
                        throw ValidationError("replica \(victim.name) has no finishedAt after it was replaced")
                    }
                    guard let startedAt = try runtime.container(replacement).record.startedAt else {
                        throw ValidationError("the replacement \(replacement) of \(victim.name) has no startedAt")
                    }
                    recorded.append(startedAt.timeIntervalSince(finishedAt) * 1000)
                    observed.append(milliseconds(healed))
                    // Let the reconciler settle (discard the victim) before the next kill.
                    try await reconciler.waitUntil("heal", timeout: .seconds(30)) { record, replicas in
                        replicas.count == replicas.filter { $0.exit == nil && !$0.terminating }.count && replicas.count == record?.spec.replicas
                    }
                }
                recorded.sort()
                observed.sort()
                print(String(format: "replacement startedAt - victim finishedAt: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d kills of %d replicas)",
                             percentile(recorded, 0.5), percentile(recorded, 0.99), recorded.last ?? 0, kills, replicas))
                print(String(format: "kill() to replacement running, as the benchmark saw it: p50 %.2f ms, p99 %.2f ms",
                             percentile(observed, 0.5), percentile(observed, 0.99)))
                print(String(format: "heal_p50_ms: %.2f", percentile(recorded, 0.5)))
                print(String(format: "heal_p99_ms: %.2f", percentile(recorded, 0.99)))
                try reconciler.delete("heal")
                try await reconciler.waitUntil("heal", timeout: .seconds(60)) { record, replicas in record == nil && replicas.isEmpty }
            }
        }
    }
}

struct Converge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply a service of N replicas and time until all run and are available.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Replicas of the service.") var replicas = 100
    @Option(help: "Repetitions (the service is deleted in between).") var runs = 3

    func run() async throws {
        try await options.withRuntime { runtime in
            try await withReconciler(runtime) { reconciler in
                var times: [Double] = []
                for _ in 0 ..< runs {
                    let clock = ContinuousClock()
                    let start = clock.now
                    try reconciler.apply(sleeperService("converge", replicas: replicas))
                    let record = try await reconciler.waitForRollout("converge", timeout: .seconds(600))
                    let elapsed = milliseconds(clock.now - start)
                    guard record.status.availableReplicas == replicas else { throw ValidationError("only \(record.status.availableReplicas) replicas converged") }
                    times.append(elapsed)
                    print(String(format: "%d replicas running in %.1f ms (%.2f ms each)", replicas, elapsed, elapsed / Double(replicas)))
                    try reconciler.delete("converge")
                    try await reconciler.waitUntil("converge", timeout: .seconds(600)) { record, replicas in record == nil && replicas.isEmpty }
                }
                times.sort()
                print(String(format: "converge_%d_ms: %.1f", replicas, percentile(times, 0.5)))
            }
        }
    }
}
