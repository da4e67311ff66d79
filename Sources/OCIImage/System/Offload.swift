import Dispatch
import Synchronization

/// A flag set when the task that started blocking work is cancelled.
package final class CancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    package func set() { value.store(true, ordering: .relaxed) }
    package var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Runs blocking file-system work on a thread outside Swift's cooperative
/// pool, so that long unpacks never starve other tasks. `body` receives a
/// function that reports whether the calling task was cancelled.
package func offload<T: Sendable>(_ body: @escaping @Sendable (_ isCancelled: @escaping @Sendable () -> Bool) throws -> T) async throws -> T {
    let flag = CancellationFlag()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try body { flag.isSet } })
            }
        }
    } onCancel: {
        flag.set()
    }
}
