import Foundation
import GantryCore
import GantryTestSupport
@testable import Runtime
import Synchronization
import Testing
@testable import Reconciler

/// Tasks that keep every thread of Swift's cooperative pool (one per core)
/// in blocking calls, as an embedder's careless code would.
private final class PoolHogs: Sendable {
    private let running = Atomic<Bool>(true)
    private let started = Atomic<Int>(0)

    /// Blocks every cooperative thread for `duration` at once, without a
    /// single suspension point, and returns when all have let go.
    static func blockEveryThread(for duration: Duration) async {
        let width = ProcessInfo.processInfo.activeProcessorCount
        let microseconds = useconds_t(duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0 ..< width {
                group.addTask { usleep(microseconds) }
            }
        }
    }

    /// Starts tasks that block every cooperative thread in turns of
    /// `slice`, yielding between turns, until ``stop()``.
    init(slice: Duration) {
        let microseconds = useconds_t(slice.components.attoseconds / 1_000_000_000_000)
        for _ in 0 ..< ProcessInfo.processInfo.activeProcessorCount {
            Task.detached { [self] in
                started.add(1, ordering: .relaxed)
                while running.load(ordering: .relaxed) {
                    usleep(microseconds)
                    await Task.yield()
                }
                started.subtract(1, ordering: .relaxed)
            }
        }
    }

    func stop() async {
        running.store(false, ordering: .relaxed)
        while started.load(ordering: .relaxed) > 0 { try? await Task.sleep(for: .milliseconds(10)) }
    }
}

/// What must keep time however busy the embedder keeps Swift's cooperative
/// pool: exits, time limits and the network's names are handled on
/// Gantry's own threads, and healing needs the pool only for moments.
@Suite(.requiresRoot, .serialized) struct PoolStarvationTests {
    @Test func exitsTimeoutsAndNamesKeepTimeWhileEveryCooperativeThreadIsBlocked() async throws {
        try await withBusyboxRuntime("starve", applets: ["nslookup"]) { runtime, _ in
            try await runtime.networks.create("starve")
            let db = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "600"]).named("db")
                .network(.bridge("starve")))
            try await db.start()
            // Asks for the member's name five times a second, one line per answer.
            let client = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sh", "-c", """
                while :; do if nslookup db >/dev/null 2>&1; then echo ok; else echo failed; fi; sleep 0.2; done
                """]).network(.bridge("starve")))
            try await client.start()
            let short = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "0.2"]))
            let limited = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "600"]).timeout(.milliseconds(300)))
            // The client has answered once, so the network is up.
            for _ in 0 ..< 200 where try await client.logs.text(maximumBytes: 1 << 16).isEmpty {
                try await Task.sleep(for: .milliseconds(20))
            }
            let answersBefore = try await client.logs.text(maximumBytes: 1 << 20).split(separator: "\n")
            try await short.start()
            try await limited.start()

            await PoolHogs.blockEveryThread(for: .seconds(3))
            let released = Date()

            let answers = try await client.logs.text(maximumBytes: 1 << 20).split(separator: "\n")
            // About fourteen lookups fit in the time; a name server that
            // needed the pool would have answered none (nslookup waits 5 s).
            #expect(answers.count - answersBefore.count >= 3, "\(answers.count - answersBefore.count) answers while the pool was blocked")
            #expect(!answers.contains("failed"), "\(answers)")
            // Both ended long before the pool was free again (0.2 s and a
            // 0.3 s limit, against 3 s: room for a loaded machine), and their
            // ends were recorded while it was still blocked.
            for container in [short, limited] {
                let record = try container.record
                let started = try #require(record.startedAt)
                let finished = try #require(record.finishedAt, "the end was not recorded while the pool was blocked")
                #expect(finished < released, "ended \(finished.timeIntervalSince(started)) s after its start, after the pool was free again")
            }
            #expect(try await limited.wait().reason == .timedOut)
            #expect(try await short.wait().code == 0)
            for container in [db, client, short, limited] { try await container.remove(force: true) }
            try await runtime.networks.remove("starve")
        }
    }

    @Test func exitsAreRecordedWhileEveryThreadForBlockingWorkIsTaken() async throws {
        try await withBusyboxRuntime("starve-blocking") { runtime, _ in
            let short = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "0.2"]))
            // Every thread the shared pool may start, held by work that waits
            // (as unpacks and lock waits of other callers would).
            let release = DispatchSemaphore(value: 0)
            let taken = 64
            for _ in 0 ..< taken { BlockingPool.shared.submit { release.wait() } }
            do {
                try await short.start()
                let exit = try #require(await short.exit(within: .seconds(5)), "the end was not recorded while the pool was taken")
                #expect(exit.code == 0)
                let record = try short.record
                let started = try #require(record.startedAt)
                let finished = try #require(record.finishedAt)
                #expect(finished.timeIntervalSince(started) < 0.8, "ended \(finished.timeIntervalSince(started)) s after its start")
            } catch {
                for _ in 0 ..< taken { release.signal() }
                throw error
            }
            for _ in 0 ..< taken { release.signal() }
            try await short.remove()
        }
    }

    @Test func aReplicaIsHealedAndContainersRunWhileEveryCooperativeThreadBlocksInTurns() async throws {
        try await withReconciler("starve-heal") { reconciler, runtime in
            let events = EventLog(reconciler)
            try reconciler.apply(shellService("worker", "exec sleep 600"))
            try await reconciler.waitForRollout("worker")
            let hogs = PoolHogs(slice: .milliseconds(50))
            let victim = try runtime.container(try #require(try runningReplicas(runtime, service: "worker").first).id)
            try victim.kill(.kill)
            let restarted = try await events.wait(timeout: .seconds(20)) { $0.name == "restarted" }
            let replacement = try runtime.container(try #require(restarted.first?.container)).record
            let finishedAt = try #require(try victim.record.finishedAt)
            let startedAt = try #require(replacement.startedAt)
            let clock = ContinuousClock()
            let begun = clock.now
            let exit = try await runtime.run(ContainerSpec(image: "busybox:test", command: ["true"]))
            let ran = begun.duration(to: clock.now)
            await hogs.stop()
            // Usually tens of milliseconds each; every step waits for a turn
            // of the pool at most a few times.
            #expect(startedAt.timeIntervalSince(finishedAt) < 2, "replaced after \(startedAt.timeIntervalSince(finishedAt)) s")
            #expect(exit.code == 0)
            #expect(ran < .seconds(3), "a container took \(ran) to run")
        }
    }
}
