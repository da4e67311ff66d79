import CGantryLauncher
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Tears down what ended and removed containers leave behind, on a thread
/// of its own, so that neither the container's exit nor its removal waits
/// for it.
///
/// Two kinds of work come here, in the order they were asked for:
///
/// - A container's mount namespace. The launcher holds a descriptor of it,
///   so that the namespace outlives the container's last process: the
///   kernel then unmounts the overlay and the standard mounts (two RCU
///   grace periods and every superblock's shutdown) when the descriptor is
///   closed here, instead of in the exiting process before its parent
///   learns that it ended.
/// - A removed container's directory (upper layer, log, state), moved
///   aside by the removal; deleting a tree of files costs most on a disk.
///
/// The queue is bounded: when it is full, the caller does the work itself,
/// so a host too busy to give this thread time never accumulates held
/// namespaces or unremoved trees. The thread runs at the normal priority:
/// it holds global kernel locks (the namespace semaphore) while it
/// unmounts, and a starved holder would stall every launch.
final class Reclaimer: Sendable {
    static let shared = Reclaimer(limit: 64)

    private struct State {
        var queue: [@Sendable () -> Void] = []
        var running = false
        var started = false
        /// Who waits for the queue to drain.
        var waiters: [CheckedContinuation<Void, Never>] = []
        var blockedWaiters: [DispatchSemaphore] = []

        var isIdle: Bool { queue.isEmpty && !running }
    }

    private let limit: Int
    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)

    private init(limit: Int) {
        self.limit = limit
    }

    /// Closes a container's mount namespace descriptor in the background.
    func releaseMountNamespace(_ fd: Int32) {
        guard fd >= 0 else { return }
        submit { close(fd) }
    }

    /// Deletes the tree at `path` (moved out of the state root's view
    /// already) in the background.
    func removeTree(_ path: String, logger: @escaping @Sendable (Error) -> Void) {
        submit {
            do { try FileIO.removeTree(path) } catch { logger(error) }
        }
    }

    private func submit(_ job: @escaping @Sendable () -> Void) {
        let (queued, start) = state.withLock { state -> (Bool, Bool) in
            guard state.queue.count < limit else { return (false, false) }
            state.queue.append(job)
            defer { state.started = true }
            return (true, !state.started)
        }
        guard queued else {
            job()
            return
        }
        if start {
            let thread = Thread { [self] in run() }
            thread.name = "gantry-reclaim"
            thread.stackSize = 256 << 10
            thread.start()
        }
        work.signal()
    }

    /// Waits until everything asked for so far is done.
    func settle() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.isIdle { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Waits, blocking the calling thread, until everything asked for so
    /// far is done (for synchronous callers that are about to reuse what a
    /// queued job releases, such as an upper directory).
    func drain() {
        let semaphore = DispatchSemaphore(value: 0)
        let done = state.withLock { state -> Bool in
            if state.isIdle { return true }
            state.blockedWaiters.append(semaphore)
            return false
        }
        if !done { semaphore.wait() }
    }

    private func run() {
        gantry_block_signals()
        while true {
            work.wait()
            while let job = state.withLock({ state -> (@Sendable () -> Void)? in
                guard !state.queue.isEmpty else { return nil }
                state.running = true
                return state.queue.removeFirst()
            }) {
                job()
                let (waiters, blocked) = state.withLock { state in
                    state.running = false
                    guard state.queue.isEmpty else { return ([CheckedContinuation<Void, Never>](), [DispatchSemaphore]()) }
                    defer {
                        state.waiters.removeAll()
                        state.blockedWaiters.removeAll()
                    }
                    return (state.waiters, state.blockedWaiters)
                }
                waiters.forEach { $0.resume() }
                blocked.forEach { $0.signal() }
            }
        }
    }
}
