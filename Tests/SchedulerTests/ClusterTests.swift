import Testing
@testable import Scheduler

private let gib: Int64 = 1 << 30

/// Waits (in real time, up to five seconds) until `condition` holds.
func eventually(_ what: String, _ condition: () async -> Bool) async throws {
    for _ in 0..<5000 {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(1))
    }
    Issue.record("timed out waiting until \(what)")
    throw CancellationError()
}

private func simulated(_ name: String, cpus: Int64, clock: ManualClock,
                       behaviour: @escaping SimulatedNode.Behaviour = { _ in (.seconds(10), 0) }) -> SimulatedNode {
    SimulatedNode(NodeInfo(name: name, capacity: ResourceVector(milliCPU: cpus * 1000, memory: 8 * gib, pids: 1000)),
                  clock: clock, behaviour: behaviour)
}

private func job(_ name: String, cpu: Double = 1, priority: Int = 0) -> Workload {
    Workload(name: name, resources: ResourceRequirements(requests: .cpus(cpu, memory: gib)), priority: priority, stopGrace: .zero)
}

@Suite(.timeLimit(.minutes(5))) struct ClusterTests {
    @Test func waitsForRoomAndRunsWhenItFrees() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [simulated("a", cpus: 2, clock: clock)], clock: clock)
        try await withThrowingTaskGroup(of: WorkloadExit.self) { group in
            for index in 0..<3 { group.addTask { try await cluster.run(job("w\(index)")) } }
            try await eventually("two run and one waits") {
                let pending = await cluster.pending
                return await cluster.snapshot.boundCount == 2 && pending.count == 1 && pending[0].attempts == 1
            }
            #expect(await cluster.pending.first?.reasons == ["insufficient cpu": 1])
            try await eventually("the workloads sleep") { clock.sleeperCount == 3 }
            clock.advance(by: .seconds(10))
            try await eventually("the third runs") { await cluster.pending.isEmpty }
            // Placed is not yet launched: wait for its own ten seconds to start.
            try await eventually("the third sleeps") { clock.deadlines.contains(clock.now.advanced(by: .seconds(10))) }
            clock.advance(by: .seconds(10))
            var exits: [WorkloadExit] = []
            for try await exit in group { exits.append(exit) }
            #expect(exits == Array(repeating: WorkloadExit(status: 0), count: 3))
        }
        #expect(await cluster.snapshot.boundCount == 0)
    }

    @Test func higherPriorityPreemptsLower() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [simulated("a", cpus: 1, clock: clock) { workload in
            (workload.priority > 0 ? .seconds(1) : nil, 0)
        }], clock: clock)
        async let low = cluster.run(job("batch", priority: 0))
        try await eventually("the batch job runs") { await cluster.snapshot.boundCount == 1 }
        async let high = cluster.run(job("urgent", priority: 100))
        #expect(try await low == WorkloadExit(status: 143, reason: "preempted"))
        try await eventually("the urgent job runs") { clock.deadlines.contains(clock.now.advanced(by: .seconds(1))) }
        clock.advance(by: .seconds(1))
        #expect(try await high == WorkloadExit(status: 0))
    }

    @Test func neverFittingAndDuplicateNamesAreErrors() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [simulated("a", cpus: 1, clock: clock) { _ in (nil, 0) }], clock: clock)
        await #expect { try await cluster.run(job("huge", cpu: 4)) } throws: { "\($0)".contains("\"huge\"") }
        let first = Task { try await cluster.run(job("twice")) }
        try await eventually("it runs") { await cluster.snapshot.boundCount == 1 }
        await #expect { try await cluster.run(job("twice")) } throws: { ($0 as? SchedulerError)?.code == .exists }
        try await cluster.add(simulated("b", cpus: 1, clock: clock))
        await #expect { try await cluster.add(simulated("b", cpus: 1, clock: clock)) } throws: { "\($0)".contains("\"b\"") }
        first.cancel()
        _ = try? await first.value
        #expect(await cluster.snapshot.boundCount == 0)
    }

    @Test func cancellingAWaitingWorkloadRemovesIt() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [simulated("a", cpus: 1, clock: clock) { _ in (nil, 0) }], clock: clock)
        let blocker = Task { try await cluster.run(job("blocker")) }
        try await eventually("the blocker runs") { await cluster.snapshot.boundCount == 1 }
        let waiter = Task { try await cluster.run(job("waiter")) }
        try await eventually("the waiter waits") { await cluster.pending.count == 1 }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(await cluster.pending.isEmpty)
        blocker.cancel()
        _ = try? await blocker.value
        #expect(await cluster.snapshot.boundCount == 0)
    }

    @Test func addingANodeAdmitsAtOnce() async throws {
        let clock = ManualClock()
        let cluster = try Cluster(nodes: [simulated("a", cpus: 1, clock: clock) { _ in (nil, 0) }], clock: clock)
        let first = Task { try await cluster.run(job("first")) }
        let second = Task { try await cluster.run(job("second")) }
        try await eventually("one waits") { await cluster.pending.count == 1 }
        try await cluster.add(simulated("b", cpus: 1, clock: clock) { _ in (nil, 0) })
        try await eventually("both run") { await cluster.snapshot.boundCount == 2 }
        first.cancel()
        second.cancel()
        _ = try? await first.value
        _ = try? await second.value
    }
}
