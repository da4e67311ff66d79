import Scheduler
import Synchronization

/// The rate limits of the reconciler's work queue, as client-go's default controller
/// rate limiter: per key, an exponential back-off after each failure; for
/// all keys, a token bucket. A retry waits for the longer of the two.
public struct WorkQueueRateLimits: Hashable, Sendable {
    /// The first retry's delay (5 ms).
    public var baseDelay: Duration
    /// The longest per-key delay (1000 s).
    public var maxDelay: Duration
    /// Retries per second allowed for all keys together (10).
    public var ratePerSecond: Double
    /// Retries allowed at once before the rate applies (100).
    public var burst: Int

    /// client-go's defaults.
    ///
    /// - Parameters:
    ///   - baseDelay: the first retry's delay.
    ///   - maxDelay: the longest per-key delay.
    ///   - ratePerSecond: retries per second for all keys together.
    ///   - burst: retries allowed at once.
    public init(baseDelay: Duration = .milliseconds(5), maxDelay: Duration = .seconds(1000), ratePerSecond: Double = 10, burst: Int = 100) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.ratePerSecond = ratePerSecond
        self.burst = burst
    }
}

/// A queue of keys to reconcile, as Kubernetes controllers use: a key is
/// queued at most once however often it is added; a key being processed is
/// never handed out twice at once, and is queued again when it was added
/// meanwhile; failed keys come back after a per-key exponential back-off
/// bounded by a global rate.
final class WorkQueue<Key: Hashable & Sendable>: Sendable {
    private struct State {
        var order: [Key] = []
        var head = 0
        var queued: Set<Key> = []
        var processing: Set<Key> = []
        var dirty: Set<Key> = []
        var waiters: [CheckedContinuation<Key?, Never>] = []
        var failures: [Key: Int] = [:]
        /// The earliest delayed add pending per key.
        var delayed: [Key: Duration] = [:]
        var shutDown = false
        /// Token bucket: tokens left and when they were counted.
        var tokens: Double
        var tokensAt: Duration = .zero
    }

    private let state: Mutex<State>
    private let limits: WorkQueueRateLimits
    private let clock: ElapsedClock
    /// Runs a delayed add; the owner runs it in its task group.
    private let spawn: @Sendable (@escaping @Sendable () async -> Void) -> Void

    init(limits: WorkQueueRateLimits, clock: ElapsedClock, spawn: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Void) {
        self.limits = limits
        self.clock = clock
        self.spawn = spawn
        state = Mutex(State(tokens: Double(limits.burst)))
    }

    /// Keys waiting to be handed out.
    var depth: Int { state.withLock { $0.order.count - $0.head } }

    /// Queues `key` unless it is queued already.
    func add(_ key: Key) {
        let waiter = state.withLock { state -> CheckedContinuation<Key?, Never>? in
            guard !state.shutDown, !state.queued.contains(key) else { return nil }
            if state.processing.contains(key) {
                state.dirty.insert(key)
                return nil
            }
            if !state.waiters.isEmpty {
                state.processing.insert(key)
                return state.waiters.removeFirst()
            }
            state.queued.insert(key)
            state.order.append(key)
            return nil
        }
        waiter?.resume(returning: key)
    }

    /// Queues `key` after `delay`; of several delayed adds of one key only
    /// the earliest is kept.
    func add(_ key: Key, after delay: Duration) {
        guard delay > .zero else { return add(key) }
        let deadline = clock.now() + delay
        let schedule = state.withLock { state -> Bool in
            guard !state.shutDown else { return false }
            if let pending = state.delayed[key], pending <= deadline { return false }
            state.delayed[key] = deadline
            return true
        }
        guard schedule else { return }
        spawn { [self] in
            // Until the deadline, not for the delay: the clock may have moved meanwhile.
            try? await clock.sleepUntil(deadline)
            let due = state.withLock { state -> Bool in
                guard state.delayed[key] == deadline else { return false }
                state.delayed[key] = nil
                return true
            }
            if due { add(key) }
        }
    }

    /// Queues `key` again after a failure: after its own back-off or the
    /// global rate's, whichever is longer. Returns the delay.
    @discardableResult
    func addRateLimited(_ key: Key) -> Duration {
        let now = clock.now()
        let delay = state.withLock { state -> Duration in
            let failures = state.failures[key, default: 0]
            state.failures[key] = failures + 1
            var perKey = limits.baseDelay
            for _ in 0 ..< min(failures, 64) {
                perKey = perKey * 2
                if perKey >= limits.maxDelay { break }
            }
            perKey = min(perKey, limits.maxDelay)
            // Token bucket: refill, then reserve one token.
            let elapsed = Double((now - state.tokensAt).components.seconds) + Double((now - state.tokensAt).components.attoseconds) / 1e18
            state.tokens = min(Double(limits.burst), state.tokens + elapsed * limits.ratePerSecond)
            state.tokensAt = now
            state.tokens -= 1
            let bucket = state.tokens >= 0 ? Duration.zero : Duration.seconds(-state.tokens / limits.ratePerSecond)
            return max(perKey, bucket)
        }
        add(key, after: delay)
        return delay
    }

    /// How many times in a row `key` failed.
    func failures(_ key: Key) -> Int { state.withLock { $0.failures[key, default: 0] } }

    /// Clears `key`'s failures after it succeeded.
    func forget(_ key: Key) {
        _ = state.withLock { $0.failures.removeValue(forKey: key) }
    }

    /// The next key, once there is one; nil after ``shutDown()``. The
    /// caller calls ``done(_:)`` when it has processed it.
    func next() async -> Key? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Key?? in
                if state.head < state.order.count {
                    let key = state.order[state.head]
                    state.head += 1
                    if state.head > 1024, state.head * 2 > state.order.count {
                        state.order.removeFirst(state.head)
                        state.head = 0
                    }
                    state.queued.remove(key)
                    state.processing.insert(key)
                    return .some(key)
                }
                if state.shutDown { return .some(nil) }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Marks `key` processed; it is queued again when it was added meanwhile.
    func done(_ key: Key) {
        let again = state.withLock { state -> Bool in
            state.processing.remove(key)
            return state.dirty.remove(key) != nil
        }
        if again { add(key) }
    }

    /// Stops handing out keys: waiting and later calls of ``next()`` return nil.
    func shutDown() {
        let waiters = state.withLock { state in
            state.shutDown = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }
}
