import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A flag set when the task that started blocking work is cancelled.
package final class CancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    package init() {}
    package func set() { value.store(true, ordering: .relaxed) }
    package var isSet: Bool { value.load(ordering: .relaxed) }
}

/// A flag the first of several racing parties claims: for a continuation
/// that more than one event may resume (an end, a time limit).
package final class OnceFlag: Sendable {
    private let value = Atomic<Bool>(false)
    package init() {}
    /// True for the first caller only.
    package func claim() -> Bool { !value.exchange(true, ordering: .acquiringAndReleasing) }
}

/// Threads for work that blocks (file systems, `flock`, waits on the
/// kernel), kept apart from Swift's cooperative pool, which has one thread
/// per core: a blocking call there holds up every task behind it.
///
/// A thread is started when work arrives and none is idle, up to a limit;
/// past it, work waits its turn. A thread idle for a few seconds ends.
package final class BlockingPool: @unchecked Sendable {
    /// The pool every module shares.
    package static let shared = BlockingPool(maximumThreads: 64)

    private typealias Job = @Sendable () -> Void

    // Guarded by `mutex`; a pthread mutex because idle threads wait on a
    // condition variable with it.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Taken jobs are set to nil at once, so that nothing they captured
    // outlives them.
    private var jobs: [Job?] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    private var wakeups = 0

    private let maximumThreads: Int
    private let idleSeconds: Int

    /// A pool of at most `maximumThreads` threads, each ending after
    /// `idleSeconds` without work.
    package init(maximumThreads: Int, idleSeconds: Int = 5) {
        self.maximumThreads = max(1, maximumThreads)
        self.idleSeconds = idleSeconds
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Runs `job` on one of the pool's threads.
    package func submit(_ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        var start = false
        if idle > wakeups {
            wakeups += 1
            pthread_cond_signal(condition)
        } else if threads < maximumThreads {
            threads += 1
            start = true
        }
        pthread_mutex_unlock(mutex)
        if start && !startThread() {
            // No thread could be made: run it on a thread that exists, later.
            pthread_mutex_lock(mutex)
            threads -= 1
            let orphaned = threads == 0
            pthread_mutex_unlock(mutex)
            if orphaned { drainOnCaller() }
        }
    }

    /// Runs what is queued on the calling thread, when the pool has no
    /// thread at all and cannot start one (the process is out of threads).
    private func drainOnCaller() {
        while let job = nextJob() { job() }
    }

    private func nextJob() -> Job? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return popLocked()
    }

    private func popLocked() -> Job? {
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        jobs[head] = nil
        head += 1
        if head == jobs.count {
            jobs.removeAll(keepingCapacity: jobs.count <= 64)
            head = 0
        } else if head > 64 && head * 2 > jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    private func startThread() -> Bool {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { context in
            let pool = Unmanaged<BlockingPool>.fromOpaque(context!).takeRetainedValue()
            pool.work()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<BlockingPool>.fromOpaque(context).release()
            return false
        }
        pthread_detach(thread)
        return true
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            if let job = popLocked() {
                pthread_mutex_unlock(mutex)
                job()
                pthread_mutex_lock(mutex)
                continue
            }
            idle += 1
            var deadline = timespec()
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            deadline.tv_sec += idleSeconds
            var timedOut = false
            while wakeups == 0 && !timedOut {
                timedOut = pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT
            }
            idle -= 1
            if wakeups > 0 {
                wakeups -= 1
            } else if head >= jobs.count {
                threads -= 1
                pthread_mutex_unlock(mutex)
                return
            }
        }
    }
}

/// Runs blocking work on ``BlockingPool/shared``, outside Swift's
/// cooperative pool, so that long unpacks, locks and kernel waits never
/// starve other tasks. `body` receives a function that reports whether the
/// calling task was cancelled.
package func offload<T: Sendable>(_ body: @escaping @Sendable (_ isCancelled: @escaping @Sendable () -> Bool) throws -> T) async throws -> T {
    let flag = CancellationFlag()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            BlockingPool.shared.submit {
                continuation.resume(with: Result { try body { flag.isSet } })
            }
        }
    } onCancel: {
        flag.set()
    }
}

/// Runs blocking work that cannot fail on ``BlockingPool/shared``.
package func offload<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        BlockingPool.shared.submit { continuation.resume(returning: body()) }
    }
}
