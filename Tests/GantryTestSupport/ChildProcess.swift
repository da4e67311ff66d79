import CGantrySystem
import Foundation
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, for tests that run
/// programs. Foundation's `Process` is not used: on Linux its `run()` reads
/// `/proc/self/fd` in a way that now and then reads past a buffer and
/// crashes the whole test process, more often the more descriptors are open.
public final class ChildProcess: @unchecked Sendable {
    /// Where one of the child's standard streams goes.
    public enum Stream: Sendable {
        /// The test process's own.
        case inherit
        /// `/dev/null`.
        case null
        /// A file, created if missing, appended to or truncated.
        case file(String, append: Bool = true)
        /// A descriptor of the test process (duplicated; the caller keeps and closes its own).
        case descriptor(Int32)
    }

    /// How the child ended.
    public struct Termination: Sendable, Equatable {
        /// The exit status, or the signal's number when `signaled`.
        public var status: Int32
        /// Whether a signal ended it.
        public var signaled: Bool
    }

    /// The child's process ID.
    public let pid: pid_t
    private let lock = NSLock()
    private var ended: Termination?

    /// Starts `program` (a path, or a name looked up in `PATH`) with
    /// `arguments`; `environment` is laid over the test process's own.
    public init(_ program: String, _ arguments: [String], environment: [String: String]? = nil,
                stdin: Stream = .null, stdout: Stream = .inherit, stderr: Stream = .inherit) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch stream {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path, let append):
                posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
            case .descriptor(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        // Nothing else of the test process reaches the child.
        gantry_spawn_close_from(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        var none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var variables = ProcessInfo.processInfo.environment
        for (key, value) in environment ?? [:] { variables[key] = value }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = program.contains("/")
            ? posix_spawn(&child, program, &actions, &attributes, argv, envp)
            : posix_spawnp(&child, program, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw ToolError(description: "cannot start \(program): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// Whether the child still runs (an ended one is reaped).
    public var isRunning: Bool {
        lock.withLock {
            if ended != nil { return false }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == 0 || reaped < 0 && errno == EINTR { return true }
            // Reaped elsewhere (ECHILD): ended, with its status unknown.
            ended = reaped == pid ? Self.termination(status) : Termination(status: -1, signaled: false)
            return false
        }
    }

    /// Waits for the child to end, blocking the thread.
    @discardableResult
    public func wait() -> Termination {
        lock.withLock {
            if let ended { return ended }
            var status: Int32 = 0
            var reaped = waitpid(pid, &status, 0)
            while reaped < 0, errno == EINTR { reaped = waitpid(pid, &status, 0) }
            let termination = reaped == pid ? Self.termination(status) : Termination(status: -1, signaled: false)
            ended = termination
            return termination
        }
    }

    /// Sends `signal` unless the child was reaped already.
    public func kill(_ signal: Signal) {
        lock.withLock { if ended == nil { _ = Glibc.kill(pid, signal.rawValue) } }
    }

    /// The child's process ID (as Foundation's `Process` names it).
    public var processIdentifier: Int32 { pid }

    /// Waits for the child to end, blocking the thread.
    public func waitUntilExit() { wait() }

    /// The exit status, or the signal's number; waits for the end first.
    public var terminationStatus: Int32 { wait().status }

    /// Sends SIGTERM.
    public func terminate() { kill(.terminate) }

    private static func termination(_ status: Int32) -> Termination {
        status & 0x7F == 0 ? Termination(status: (status >> 8) & 0xFF, signaled: false) : Termination(status: status & 0x7F, signaled: true)
    }
}
