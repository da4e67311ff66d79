import Scheduler
import Synchronization
import Testing
@testable import Reconciler

/// Runs a work queue whose delayed adds run as child tasks of the test.
private func withQueue(_ limits: WorkQueueRateLimits = WorkQueueRateLimits(), clock: ManualClock = ManualClock(),
                       _ body: @Sendable (WorkQueue<String>, ManualClock) async throws -> Void) async throws {
    let (jobs, input) = AsyncStream<@Sendable () async -> Void>.makeStream()
    let queue = WorkQueue<String>(limits: limits, clock: ElapsedClock(clock)) { input.yield($0) }
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask {
            await withDiscardingTaskGroup { inner in
                for await job in jobs { inner.addTask { await job() } }
                inner.cancelAll()
            }
        }
        try await body(queue, clock)
        queue.shutDown()
        input.finish()
    }
}

/// Waits (real time) until the clock has a sleeper, so that advancing it wakes one.
private func sleepers(_ clock: ManualClock, _ count: Int) async throws {
    for _ in 0 ..< 2000 where clock.sleeperCount < count { try await Task.sleep(for: .milliseconds(1)) }
    #expect(clock.sleeperCount >= count)
}

@Suite struct WorkQueueTests {
    @Test func aKeyIsQueuedOnceHoweverOftenItIsAdded() async throws {
        try await withQueue { queue, _ in
            for _ in 0 ..< 5 { queue.add("a") }
            queue.add("b")
            #expect(queue.depth == 2)
            #expect(await queue.next() == "a")
            #expect(await queue.next() == "b")
            #expect(queue.depth == 0)
            queue.done("a")
            queue.done("b")
        }
    }

    @Test func aKeyAddedWhileProcessingComesBackAfterwards() async throws {
        try await withQueue { queue, _ in
            queue.add("a")
            #expect(await queue.next() == "a")
            queue.add("a")
            queue.add("a")
            // Not handed out twice at once.
            #expect(queue.depth == 0)
            queue.done("a")
            #expect(queue.depth == 1)
            #expect(await queue.next() == "a")
            queue.done("a")
            #expect(queue.depth == 0)
        }
    }

    @Test func failuresBackOffExponentiallyUpToTheCap() async throws {
        let limits = WorkQueueRateLimits(baseDelay: .milliseconds(5), maxDelay: .seconds(1000), ratePerSecond: 1e9, burst: 1_000_000)
        try await withQueue(limits) { queue, clock in
            var delays: [Duration] = []
            for _ in 0 ..< 20 { delays.append(queue.addRateLimited("k")) }
            #expect(delays.prefix(4) == [.milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(40)])
            #expect(delays.last == .seconds(1000))
            #expect(queue.failures("k") == 20)
            queue.forget("k")
            #expect(queue.addRateLimited("k") == .milliseconds(5))
            // Only the earliest delayed add is pending; it arrives after 5 ms of the clock.
            try await sleepers(clock, 1)
            #expect(queue.depth == 0)
            clock.advance(by: .milliseconds(5))
            #expect(await queue.next() == "k")
            queue.done("k")
        }
    }

    @Test func theGlobalBucketLimitsRetriesOfManyKeys() async throws {
        let limits = WorkQueueRateLimits(baseDelay: .milliseconds(5), maxDelay: .seconds(1000), ratePerSecond: 10, burst: 2)
        try await withQueue(limits) { queue, _ in
            let delays = (0 ..< 4).map { queue.addRateLimited("key\($0)") }
            // Two tokens at once, then one per 100 ms.
            #expect(delays[0] == .milliseconds(5) && delays[1] == .milliseconds(5))
            #expect(delays[2] == .milliseconds(100))
            #expect(delays[3] == .milliseconds(200))
        }
    }

    @Test func shuttingDownWakesWaiters() async throws {
        try await withQueue { queue, _ in
            async let waiting = queue.next()
            try await Task.sleep(for: .milliseconds(20))
            queue.shutDown()
            #expect(await waiting == nil)
            queue.add("late")
            #expect(await queue.next() == nil)
        }
    }
}
