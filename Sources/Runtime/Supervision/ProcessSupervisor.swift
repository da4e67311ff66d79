import CGantryLauncher
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How a process ended.
public enum ProcessExit: Hashable, Sendable, Codable, CustomStringConvertible {
    /// It exited with a status code.
    case exited(Int32)
    /// A signal killed it.
    case signaled(Int32)

    /// The shell's convention: the code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): "exited with \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

/// One thread, started on first use, waits with epoll on the pidfds of
/// every process Gantry started (reaping each with `waitid(P_PIDFD)`: only
/// Gantry's own children, and with no SIGCHLD handler) and on the pipes
/// their output arrives on.
final class ProcessSupervisor: Sendable {
    static let shared = ProcessSupervisor()

    /// What to do when a descriptor becomes readable; returns whether to keep watching.
    typealias Handler = @Sendable (Int32) -> Bool

    /// The handlers by descriptor, shared with the thread.
    private final class Handlers: Sendable {
        let table = Mutex<[Int32: Handler]>([:])
    }

    private let epoll: Int32
    private let handlers = Handlers()

    private init() {
        epoll = gantry_epoll_create()
        let thread = Thread { [epoll, handlers] in
            ProcessSupervisor.run(epoll: epoll, handlers: handlers)
        }
        thread.name = "gantry-supervisor"
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Calls `handler` on the supervisor thread whenever `fd` is readable,
    /// until it returns `false`. The handler must not block.
    func watch(_ fd: Int32, handler: @escaping Handler) {
        handlers.table.withLock { $0[fd] = handler }
        if gantry_epoll_add_oneshot(epoll, fd) != 0 {
            // Not pollable (a regular file): nothing will ever wait.
            _ = handlers.table.withLock { $0.removeValue(forKey: fd) }
            if handler(fd) { preconditionFailure("descriptor \(fd) cannot be watched") }
        }
    }

    /// Calls `handler` on the supervisor thread once the process behind
    /// `pidfd` has exited, after reaping it. The caller keeps the pidfd.
    func onExit(of pidfd: Int32, _ handler: @escaping @Sendable (ProcessExit) -> Void) {
        watch(pidfd) { fd in
            handler(ProcessSupervisor.reap(fd))
            return false
        }
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
        guard gantry_wait_pidfd(pidfd, 0, &code, &signal) == 0 else { return .signaled(SIGKILL) }
        return signal != 0 ? .signaled(signal) : .exited(code)
    }

    private static func run(epoll: Int32, handlers: Handlers) {
        var ready = [Int32](repeating: -1, count: 64)
        while true {
            let count = gantry_epoll_wait(epoll, &ready, Int32(ready.count), -1)
            guard count > 0 else { continue }
            for fd in ready[..<Int(count)] {
                guard let handler = handlers.table.withLock({ $0[fd] }) else { continue }
                if handler(fd) {
                    gantry_epoll_rearm(epoll, fd)
                } else {
                    handlers.table.withLock { _ = $0.removeValue(forKey: fd) }
                    gantry_epoll_delete(epoll, fd)
                }
            }
        }
    }
}
