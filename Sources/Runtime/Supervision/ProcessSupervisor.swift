import CGantrySystem
import Foundation
import GantryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How a process ended.
public enum ProcessExit: Hashable, Sendable, Codable, CustomStringConvertible {
    /// It exited with a status code.
    case exited(Int32)
    /// A signal killed it.
    case signaled(Signal)

    /// The shell's convention: the code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal.rawValue
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with \(code)"
        case .signaled(let signal): "killed by \(signal)"
        }
    }
}

/// One thread, started on first use, waits with epoll on the pidfds of
/// every process Gantry started (reaping each with `waitid(P_PIDFD)`: only
/// Gantry's own children, and with no SIGCHLD handler) and on the pipes
/// their output arrives on.
///
/// Handlers run on that thread and never block: what takes locks or talks
/// to the kernel at length (recording an exit, releasing a network) goes
/// to a pool of threads (`Container.exitRecorder` for exits).
final class ProcessSupervisor: Sendable {
    static let shared = ProcessSupervisor(name: "gantry-supervisor")
    /// The thread of the networks' DNS servers, apart from the processes'
    /// so that a flood of queries never delays an exit, nor exits an answer.
    static let dns = ProcessSupervisor(name: "gantry-dns")

    /// What to do when a descriptor becomes readable; returns whether to keep watching.
    typealias Handler = @Sendable (Int32) -> Bool

    /// A watched descriptor: what to do when it is readable, and once the
    /// watch has ended.
    private struct Watch: Sendable {
        var handler: Handler
        var ended: @Sendable () -> Void
    }

    /// The watches by descriptor, shared with the thread.
    private final class Watches: Sendable {
        let table = Mutex<[Int32: Watch]>([:])
    }

    private let epoll: Int32
    private let watches = Watches()

    private init(name: String) {
        epoll = gantry_epoll_create()
        let thread = Thread { [epoll, watches] in
            ProcessSupervisor.run(epoll: epoll, watches: watches)
        }
        thread.name = name
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Calls `handler` on the supervisor thread whenever `fd` is readable,
    /// until it returns `false`; then stops watching and calls `ended`,
    /// which may close `fd` (never the handler: the number could be reused
    /// before the watch is gone). Neither may block.
    func watch(_ fd: Int32, handler: @escaping Handler, ended: @escaping @Sendable () -> Void = {}) {
        watches.table.withLock { $0[fd] = Watch(handler: handler, ended: ended) }
        if gantry_epoll_add_oneshot(epoll, fd) != 0 {
            // Only a descriptor that is not a pipe or pidfd gets here: give
            // it one read, and end the watch.
            _ = watches.table.withLock { $0.removeValue(forKey: fd) }
            _ = handler(fd)
            ended()
        }
    }

    /// Calls `handler` on the supervisor thread once the process behind
    /// `pidfd` has exited, after reaping it. The caller keeps the pidfd
    /// (and may close it in `handler`).
    func onExit(of pidfd: Int32, _ handler: @escaping @Sendable (ProcessExit) -> Void) {
        let status = Mutex<ProcessExit?>(nil)
        watch(pidfd, handler: { fd in
            status.withLock { $0 = ProcessSupervisor.reap(fd) }
            return false
        }, ended: {
            handler(status.withLock { $0 } ?? .signaled(.kill))
        })
    }

    /// Waits for the process behind `pidfd` to exit and reaps it. The
    /// caller keeps ownership of `pidfd` and closes it afterwards.
    func exit(of pidfd: Int32) async -> ProcessExit {
        await withCheckedContinuation { continuation in
            onExit(of: pidfd) { continuation.resume(returning: $0) }
        }
    }

    /// Reaps a child; for a process that is not a child (adopted after a
    /// restart), the status cannot be known and is reported as SIGKILL.
    static func reap(_ pidfd: Int32) -> ProcessExit {
        var code: Int32 = 0
        var signal: Int32 = 0
        guard gantry_wait_pidfd(pidfd, 0, &code, &signal) == 0 else { return .signaled(.kill) }
        return signal != 0 ? .signaled(Signal(signal)) : .exited(code)
    }

    private static func run(epoll: Int32, watches: Watches) {
        var ready = [Int32](repeating: -1, count: 64)
        while true {
            let count = gantry_epoll_wait(epoll, &ready, Int32(ready.count), -1)
            guard count > 0 else {
                // Only an interruption is expected; any other error would
                // come back at once, and the thread must not spin on it.
                if count < 0 && errno != EINTR { usleep(100_000) }
                continue
            }
            for fd in ready[..<Int(count)] {
                guard let watch = watches.table.withLock({ $0[fd] }) else { continue }
                if watch.handler(fd) {
                    gantry_epoll_rearm(epoll, fd)
                } else {
                    // Gone from epoll and the table before anything may close it.
                    gantry_epoll_delete(epoll, fd)
                    watches.table.withLock { _ = $0.removeValue(forKey: fd) }
                    watch.ended()
                }
            }
        }
    }
}
