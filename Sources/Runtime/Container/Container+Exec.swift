import CGantrySystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A process to start inside a running container.
public struct ExecSpec: Hashable, Sendable, Codable {
    /// argv, the program first (looked up in the container's PATH).
    public var command: [String]
    /// Variables set over the container's (`KEY=VALUE`).
    public var environment: [String]
    /// The working directory; the container's by default.
    public var workingDirectory: String?
    /// `uid[:gid]` or a name from the image; the container's user by default.
    public var user: String?
    /// Whether the caller writes to the process's standard input.
    public var openStdin: Bool
    /// Whether the process runs on a pseudo-terminal of its own (its
    /// output then arrives as standard output; input goes to the terminal).
    public var terminal: Bool

    public init(_ command: [String], environment: [String] = [], workingDirectory: String? = nil, user: String? = nil,
                openStdin: Bool = false, terminal: Bool = false) {
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.openStdin = openStdin
        self.terminal = terminal
    }
}

/// A process started in a running container with ``Container/exec(_:)``:
/// it shares the container's namespaces, cgroup and restrictions.
public final class ExecProcess: Sendable {
    /// Its pid on the host.
    public let pid: Int32
    /// Its output, both streams, until it closes them.
    public let output: AsyncStream<OutputChunk>
    private let state: Mutex<State>

    private struct State {
        var pidfd: Int32
        var stdin: Int32
        var exit: ProcessExit?
        var waiters: [CheckedContinuation<ProcessExit, Never>] = []
    }

    init(pid: Int32, pidfd: Int32, stdin: Int32, output: AsyncStream<OutputChunk>) {
        self.pid = pid
        self.output = output
        state = Mutex(State(pidfd: pidfd, stdin: stdin))
        ProcessSupervisor.shared.onExit(of: pidfd) { [self] status in
            let waiters = state.withLock { state in
                state.exit = status
                close(state.pidfd)
                state.pidfd = -1
                if state.stdin >= 0 { close(state.stdin) }
                state.stdin = -1
                defer { state.waiters.removeAll() }
                return state.waiters
            }
            waiters.forEach { $0.resume(returning: status) }
        }
    }

    /// Waits for the process to end.
    public func wait() async -> ProcessExit {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> ProcessExit? in
                if let exit = state.exit { return exit }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Sends it a signal.
    public func kill(_ signal: Signal = .kill) {
        state.withLock { state in
            if state.pidfd >= 0 { gantry_pidfd_signal(state.pidfd, signal.rawValue) }
        }
    }

    /// Writes to its standard input (with `openStdin`).
    public func write(_ bytes: some Sequence<UInt8>) throws {
        // A duplicate: the descriptor may be closed (and its number reused) meanwhile.
        let fd = state.withLock { $0.stdin >= 0 ? fcntl($0.stdin, F_DUPFD_CLOEXEC, 3) : -1 }
        guard fd >= 0 else { throw RuntimeError(.invalidState, "the process \(pid) has no open standard input") }
        defer { close(fd) }
        try writeAll(fd, Array(bytes), what: "process \(pid)")
    }

    /// Closes its standard input.
    public func closeStdin() {
        let fd = state.withLock { state -> Int32 in
            defer { state.stdin = -1 }
            return state.stdin
        }
        if fd >= 0 { close(fd) }
    }
}

/// Writes every byte to a pipe, retrying after interruptions. A reader
/// that is gone is an error (EPIPE), not a SIGPIPE to this process.
func writeAll(_ fd: Int32, _ data: [UInt8], what: String) throws {
    var offset = 0
    while offset < data.count {
        let written = withoutSIGPIPE { data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) } }
        if written < 0 && errno == EINTR { continue }
        if written < 0 && errno == EAGAIN {
            // A terminal's master is non-blocking for the output reader.
            var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&ready, 1, 1000)
            continue
        }
        guard written > 0 else { throw RuntimeError(.systemCall, "cannot write to the input of \(what)", underlying: Sys.errno) }
        offset += written
    }
}

extension Container {
    /// Starts a process inside the running container: it joins every
    /// namespace and the cgroup of the container's main process, and gets
    /// the same capabilities, seccomp filter and `no_new_privs`. It is made
    /// non-dumpable before joining, so nothing in the container can trace
    /// it while it still holds host resources.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` unless the
    ///   container runs, or `launch` naming the step that failed.
    public func exec(_ exec: ExecSpec) async throws -> ExecProcess {
        let record = try record
        guard record.status == .running else {
            throw RuntimeError(.invalidState, "cannot exec in container \(name): it is \(record.status)")
        }
        guard let program = exec.command.first, !program.isEmpty else {
            throw RuntimeError(.invalidSpec, "exec in container \(name) needs a command")
        }
        var descriptors: [Int32] = []
        defer { descriptors.forEach { close($0) } }
        var joinPidfd = duplicatePidfd()
        if joinPidfd >= 0 {
            descriptors.append(joinPidfd)
        } else {
            guard let opened = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) else {
                throw RuntimeError(.invalidState, "cannot exec in container \(name): its process is gone")
            }
            joinPidfd = opened
            descriptors.append(joinPidfd)
        }
        var environment = record.process.environment
        for pair in exec.environment {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw RuntimeError(.invalidSpec, "environment entry \"\(pair)\" is not KEY=VALUE")
            }
            environment.removeAll { $0.hasPrefix(pair[...equals]) }
            environment.append(pair)
        }
        let (process, pipes) = try await launchInCgroup(
            record, pipes: exec.terminal ? .terminal() : .make(openStdin: exec.openStdin), what: "a process in container \(name)"
        ) { plan in
            plan.cloneFlags = 0
            plan.mounts = []
            plan.maskedPaths = []
            plan.readonlyPaths = []
            plan.sysctls = []
            plan.initProcess = false
            plan.joinPidfd = joinPidfd
            plan.joinNamespaces = record.spec.namespaces.rawValue
            plan.arguments = exec.command
            plan.environment = environment
            plan.executables = ContainerRuntime.executableCandidates(program, environment: environment)
            plan.workingDirectory = exec.workingDirectory ?? record.process.workingDirectory
            if let user = exec.user {
                let resolved = try UserDatabase(roots: record.layers).resolve(user)
                plan.uid = resolved.uid
                plan.gid = resolved.gid
                plan.groups = resolved.groups
                if resolved.uid != 0 {
                    plan.capabilities = CapabilitySets(bounding: plan.capabilities.bounding, effective: 0, permitted: 0, inheritable: 0, ambient: 0)
                }
            }
        }
        let (stream, continuation) = AsyncStream<OutputChunk>.makeStream()
        let streams = [(pipes.stdout, OutputStream.stdout), (pipes.stderr, .stderr)].filter { $0.0 >= 0 }
        let open = Mutex(streams.count)
        for (fd, kind) in streams {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            ProcessSupervisor.shared.watch(fd, handler: { fd in
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if count > 0 {
                        continuation.yield(OutputChunk(stream: kind, time: Date(), bytes: Array(buffer[..<count])))
                        continue
                    }
                    return count < 0 && (errno == EAGAIN || errno == EINTR)
                }
            }, ended: {
                close(fd)
                if open.withLock({ $0 -= 1; return $0 }) == 0 { continuation.finish() }
            })
        }
        return ExecProcess(pid: process.pid, pidfd: process.pidfd, stdin: pipes.stdin, output: stream)
    }
}
