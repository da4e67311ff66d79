import Foundation
import Synchronization

/// Threads of the reconcilers' own, on which their control loops, probes
/// and replica starts run.
///
/// The cooperative pool has a thread per core; a host program (or a test
/// run) that blocks those threads with synchronous work would otherwise
/// hold up healing for as long as it blocks. On these threads a replica
/// that ends is replaced however busy the rest of the process is.
final class ReconcilerThreads: TaskExecutor, Sendable {
    /// Shared by every reconciler of the process; they live as long as it.
    static let shared = ReconcilerThreads(count: 2)

    private struct Jobs: ~Copyable {
        var items: [UnownedJob] = []
        var head = 0
    }

    private let jobs = Mutex(Jobs())
    private let available = DispatchSemaphore(value: 0)

    private init(count: Int) {
        for index in 0 ..< count {
            let thread = Thread { [self] in
                while true {
                    available.wait()
                    guard let job = take() else { continue }
                    job.runSynchronously(on: asUnownedTaskExecutor())
                }
            }
            thread.name = "gantry-reconcile-\(index)"
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.items.append(job) }
        available.signal()
    }

    private func take() -> UnownedJob? {
        jobs.withLock { jobs in
            guard jobs.head < jobs.items.count else { return nil }
            let job = jobs.items[jobs.head]
            jobs.head += 1
            // Drop what was taken once it is most of the array.
            if jobs.head >= 256, jobs.head * 2 >= jobs.items.count {
                jobs.items.removeFirst(jobs.head)
                jobs.head = 0
            }
            return job
        }
    }
}
