import CGantryLauncher
import Foundation
import Synchronization

/// Threads that live as long as the process and run every launch.
///
/// A container bound to the host gets `PR_SET_PDEATHSIG`, which the kernel
/// fires when the *thread* that cloned it ends; the cooperative pool's
/// threads may come and go, these never do. Launching here also keeps the
/// few milliseconds a launch blocks off the cooperative pool.
final class LaunchThreads: Sendable {
    static let shared = LaunchThreads(count: 4)

    private final class Queue: Sendable {
        let jobs = Mutex<[@Sendable () -> Void]>([])
        let available = DispatchSemaphore(value: 0)
    }

    private let queue = Queue()

    private init(count: Int) {
        for index in 0 ..< count {
            let thread = Thread { [queue] in
                // The children inherit this mask and reset it; the launcher
                // reads errno after interrupted calls, which a child sharing
                // this thread's memory could change meanwhile.
                gantry_block_signals()
                while true {
                    queue.available.wait()
                    let job = queue.jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                    job?()
                }
            }
            thread.name = "gantry-launch-\(index)"
            thread.stackSize = 512 << 10
            thread.start()
        }
    }

    /// Runs `body` on a launch thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.jobs.withLock {
                $0.append { continuation.resume(with: Result { try body() }) }
            }
            queue.available.signal()
        }
    }
}
