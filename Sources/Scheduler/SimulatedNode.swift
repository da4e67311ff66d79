import Synchronization

/// A node that runs nothing: each launched workload "runs" for the time its
/// behaviour gives, on the node's clock, and ends with the status it gives.
/// For deterministic tests (with a `ManualClock`), large-scale
/// benchmarks and capacity planning.
public struct SimulatedNode: Node {
    /// How a simulated workload behaves: how long it runs (`nil`: until
    /// stopped) and the status it ends with.
    public typealias Behaviour = @Sendable (Workload) -> (duration: Duration?, status: Int32)

    public let info: NodeInfo
    private let behaviour: Behaviour
    private let clock: ElapsedClock

    /// A simulated node.
    ///
    /// - Parameters:
    ///   - info: what it offers.
    ///   - clock: the clock workloads run on.
    ///   - behaviour: how workloads behave; by default they run until stopped.
    public init<C: Clock & Sendable>(_ info: NodeInfo, clock: C = ContinuousClock(),
                                     behaviour: @escaping Behaviour = { _ in (nil, 0) })
    where C.Duration == Duration, C.Instant: Sendable {
        self.info = info
        self.behaviour = behaviour
        self.clock = ElapsedClock(clock)
    }

    public func launch(_ workload: Workload, assignment: Assignment) async throws -> any RunningWorkload {
        let (duration, status) = behaviour(workload)
        return SimulatedWorkload(end: duration.map { clock.now() + $0 }, status: status, clock: clock)
    }
}

/// A workload on a ``SimulatedNode``.
final class SimulatedWorkload: RunningWorkload {
    private let end: Duration?
    private let status: Int32
    private let clock: ElapsedClock
    private let stops: AsyncStream<Void>
    private let stopper: AsyncStream<Void>.Continuation
    private let stopped = Mutex(false)

    init(end: Duration?, status: Int32, clock: ElapsedClock) {
        self.end = end
        self.status = status
        self.clock = clock
        (stops, stopper) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func wait() async throws -> WorkloadExit {
        let (end, clock, stops) = (self.end, self.clock, self.stops)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var iterator = stops.makeAsyncIterator()
                _ = await iterator.next()
            }
            if let end { group.addTask { try? await clock.sleepUntil(end) } }
            await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
        return stopped.withLock { $0 } ? WorkloadExit(status: 128 + 15, reason: "stopped") : WorkloadExit(status: status)
    }

    func stop(grace: Duration) async throws {
        stopped.withLock { $0 = true }
        stopper.yield()
    }
}
