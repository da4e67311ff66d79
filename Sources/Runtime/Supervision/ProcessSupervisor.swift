import CGantryLauncher
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How a process ended.
public enum ProcessExit: Hashable, Sendable, CustomStringConvertible {
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

/// One thread, started on first use, waits on the pidfds of every process
/// Gantry started and reaps each with `waitid(P_PIDFD)` — only Gantry's own
/// children, never others, and with no SIGCHLD handler.
final class ProcessSupervisor: Sendable {
    static let shared = ProcessSupervisor()

    /// Continuations waiting for an exit, by pidfd.
    private final class Waiters: Sendable {
        let table = Mutex<[Int32: CheckedContinuation<ProcessExit, Never>]>([:])

        func add(_ pidfd: Int32, _ continuation: CheckedContinuation<ProcessExit, Never>) {
            table.withLock { $0[pidfd] = continuation }
        }

        func take(_ pidfd: Int32) -> CheckedContinuation<ProcessExit, Never>? {
            table.withLock { $0.removeValue(forKey: pidfd) }
        }
    }

    private let epoll: Int32
    private let waiters = Waiters()

    private init() {
        epoll = gantry_epoll_create()
        let thread = Thread { [epoll, waiters] in
            ProcessSupervisor.run(epoll: epoll, waiters: waiters)
        }
        thread.name = "gantry-supervisor"
        thread.stackSize = 256 << 10
        thread.start()
    }

    /// Waits for the process behind `pidfd` to exit and reaps it. The
    /// caller keeps ownership of `pidfd` and closes it afterwards.
    func exit(of pidfd: Int32) async -> ProcessExit {
        await withCheckedContinuation { continuation in
            waiters.add(pidfd, continuation)
            if gantry_epoll_add_oneshot(epoll, pidfd) != 0 {
                // Only a bad descriptor gets here; report what waitid says now.
                waiters.take(pidfd)?.resume(returning: Self.reap(pidfd))
            }
        }
    }

    private static func reap(_ pidfd: Int32) -> ProcessExit {
        var code: Int32 = 0
        var signal: Int32 = 0
        guard gantry_wait_pidfd(pidfd, 0, &code, &signal) == 0 else { return .signaled(SIGKILL) }
        return signal != 0 ? .signaled(signal) : .exited(code)
    }

    private static func run(epoll: Int32, waiters: Waiters) {
        var ready = [Int32](repeating: -1, count: 64)
        while true {
            let count = gantry_epoll_wait(epoll, &ready, Int32(ready.count), -1)
            guard count > 0 else { continue }
            for pidfd in ready[..<Int(count)] {
                gantry_epoll_delete(epoll, pidfd)
                let status = reap(pidfd)
                waiters.take(pidfd)?.resume(returning: status)
            }
        }
    }
}
