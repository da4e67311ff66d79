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
        var started = false
        /// Jobs queued and jobs done, ever: a waiter waits for the jobs
        /// queued before it, not for the queue to be empty (which, on a
        /// busy server, it may never be).
        var queued = 0
        var done = 0
        var waiters: [(until: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let limit: Int
    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)

    private init(limit: Int) {
        self.limit = limit
    }

    /// Closes a container's mount namespace descriptor in the background,
    /// then the lock of its upper directory, which copies from any process
    /// wait for before they mount an overlay of their own there.
    func releaseMountNamespace(_ fd: Int32, overlayLock: Int32) {
        guard fd >= 0 || overlayLock >= 0 else { return }
        submit {
            if fd >= 0 { close(fd) }
            if overlayLock >= 0 { close(overlayLock) }
        }
    }

    /// Deletes the tree at `path` (moved out of the state root's view
    /// already) in the background.
    func removeTree(_ path: String, mapping: UserNamespaceMapping?, logger: @escaping @Sendable (Error) -> Void) {
        submit {
            do { try GantryCore.removeTree(path, mapping: mapping) } catch { logger(error) }
        }
    }

    /// Runs `job` on the thread, after what was asked for before it (or at
    /// once, here, when the queue is full).
    func run(_ job: @escaping @Sendable () -> Void) {
        submit(job)
    }

    private func submit(_ job: @escaping @Sendable () -> Void) {
        let (queued, start) = state.withLock { state -> (Bool, Bool) in
            guard state.queue.count < limit else { return (false, false) }
            state.queue.append(job)
            state.queued += 1
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
            // The default 8 MiB: deleting a tree recurses once per level,
            // and a container may leave a tree as deep as PATH_MAX allows.
            thread.stackSize = 8 << 20
            thread.start()
        }
        work.signal()
    }

    /// Waits until everything asked for so far is done.
    func settle() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.done >= state.queued { return true }
                state.waiters.append((state.queued, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    private func run() {
        gantry_block_signals()
        while true {
            work.wait()
            while let job = state.withLock({ $0.queue.isEmpty ? nil : $0.queue.removeFirst() }) {
                job()
                let ready = state.withLock { state in
                    state.done += 1
                    let done = state.done
                    defer { state.waiters.removeAll { $0.until <= done } }
                    return state.waiters.filter { $0.until <= done }.map(\.continuation)
                }
                ready.forEach { $0.resume() }
            }
        }
    }
}
