import CGantryLauncher
import CGantrySystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Fresh, empty network namespaces (loopback up) made ahead of need on a
/// thread of their own, for containers that get a network namespace of
/// their own and no user namespace (``shared``), or for an ordinary user's
/// containers, in the user namespace its runtime keeps for them (made by a
/// short-lived child that joins it, as only a process of one thread may).
///
/// Making a network namespace is the largest single cost of a launch (the
/// kernel initialises every protocol's state for it, about half a
/// millisecond on a small VM); a launch that takes one from the reserve starts its
/// process in it instead, and the thread makes the next one while the
/// container runs. Such a namespace is the same as one the clone would
/// make: owned by the host's user namespace, with the same defaults, and
/// only the container's processes hold it once it has started. The first
/// launch starts the thread; when the reserve is empty (a burst) or the
/// thread cannot make namespaces, launches make their own as before.
final class NetworkNamespaceReserve: Sendable {
    static let shared = NetworkNamespaceReserve(capacity: 2)

    private struct State {
        var ready: [Int32] = []
        var started = false
        /// The thread could not make one for good (no privilege, or it
        /// could not return to its own namespace).
        var stopped = false
        /// How many launches took one.
        var handedOut = 0
    }

    private let capacity: Int
    /// The user namespace they are made in (the reserve's own descriptor),
    /// or -1 for the host's.
    private let userNamespace: Int32
    private let state = Mutex(State())
    private let wanted = DispatchSemaphore(value: 0)

    init(capacity: Int, userNamespace: Int32 = -1) {
        self.capacity = capacity
        self.userNamespace = userNamespace
    }

    /// Ends the thread and closes what the reserve holds (for a runtime's
    /// own reserve, when the runtime goes).
    func stop() {
        let (ready, started) = state.withLock { state in
            state.stopped = true
            defer { state.ready = [] }
            return (state.ready, state.started)
        }
        ready.forEach { close($0) }
        if started { wanted.signal() } else if userNamespace >= 0 { close(userNamespace) }
    }

    /// A descriptor of a fresh network namespace, which the caller closes
    /// once its process has started there; nil when none is ready.
    func take() -> Int32? {
        let (namespace, started, stopped) = state.withLock { state in
            let namespace = state.ready.popLast()
            if namespace != nil { state.handedOut += 1 }
            defer { state.started = true }
            return (namespace, state.started, state.stopped)
        }
        if !started {
            let thread = Thread { [self] in refill() }
            thread.name = "gantry-netns"
            thread.stackSize = 128 << 10
            thread.start()
        } else if !stopped {
            wanted.signal()
        }
        return namespace
    }

    /// How many launches have taken a namespace from the reserve.
    var handedOut: Int { state.withLock { $0.handedOut } }

    private func refill() {
        gantry_block_signals()
        defer { if userNamespace >= 0 { close(userNamespace) } }
        while true {
            let (needed, stopped) = state.withLock { (!$0.stopped && $0.ready.count < capacity, $0.stopped) }
            if stopped { return }
            guard needed else {
                wanted.wait()
                continue
            }
            let namespace = userNamespace >= 0 ? gantry_make_network_namespace_in(userNamespace) : gantry_make_network_namespace()
            if namespace >= 0 {
                let kept = state.withLock { state in
                    if !state.stopped { state.ready.append(namespace) }
                    return !state.stopped
                }
                if !kept { close(namespace) }
                continue
            }
            let error = errno
            if namespace == -2 || error == EPERM || error == EINVAL || error == ENOSYS {
                state.withLock { $0.stopped = true }
                return
            }
            // Out of memory or of namespaces (user.max_net_namespaces):
            // launches make their own, and the next one wakes this thread.
            wanted.wait()
        }
    }
}
