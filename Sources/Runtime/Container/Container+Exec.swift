import CGantrySystem
import Foundation
import GantryCore
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
/// it shares the container's namespaces, cgroup and restrictions, and is
/// handled as the container's own process is (``ContainerProcess``).
public final class ExecProcess: ContainerProcess {
    /// Its pid on the host.
    public let pid: Int32
    /// Its output, both streams, until it closes them.
    public let output: ContainerOutput
    private let process: ProcessHandle
    private let ending: Mutex<End>

    private struct End {
        var exit: ContainerExit?
        var handlers: [@Sendable (ContainerExit) -> Void] = []
    }

    init(pid: Int32, pidfd: Int32, stdin: Int32, output: AsyncStream<OutputChunk>,
         reason: @escaping @Sendable (ProcessExit) -> ExitReason) {
        self.pid = pid
        self.output = ContainerOutput(source: .stream(output))
        process = ProcessHandle(pid: pid, pidfd: pidfd, input: stdin)
        ending = Mutex(End())
        ProcessSupervisor.shared.onExit(of: pidfd) { [self] status in
            let exit = ContainerExit(status: status, reason: reason(status))
            let handlers = ending.withLock { end in
                end.exit = exit
                defer { end.handlers.removeAll() }
                return end.handlers
            }
            process.close()
            handlers.forEach { $0(exit) }
        }
    }

    /// Waits for the process to end and returns how it ended.
    public func wait() async -> ContainerExit {
        await withCheckedContinuation { continuation in
            onEnd { continuation.resume(returning: $0) }
        }
    }

    /// Calls `handler` once with how the process ended (at once when it had).
    private func onEnd(_ handler: @escaping @Sendable (ContainerExit) -> Void) {
        let ended = ending.withLock { end -> ContainerExit? in
            if let exit = end.exit { return exit }
            end.handlers.append(handler)
            return nil
        }
        if let ended { handler(ended) }
    }

    /// Sends it `signal`; a process that has ended already is not an error.
    ///
    /// - Throws: ``RuntimeError`` with code `systemCall` when the signal cannot be sent.
    public func kill(_ signal: Signal = .kill) throws {
        do {
            try process.signal(signal)
        } catch {
            throw RuntimeError(.systemCall, "cannot send \(signal) to process \(pid)", underlying: error)
        }
    }

    /// Writes to its standard input (with `openStdin`), blocking the
    /// calling thread while the pipe is full: for a thread of your own.
    /// From async code, use ``send(_:)``.
    public func write(_ bytes: some Sequence<UInt8>) throws {
        try process.write(Array(bytes), what: "process \(pid)")
    }

    /// Sends `bytes` to its standard input (with `openStdin`) without
    /// holding a thread of Swift's cooperative pool; a process that ends or
    /// stops reading first makes the error say how it ended.
    public func send(_ bytes: some Sequence<UInt8>) async throws {
        try await process.send(Array(bytes), what: "process \(pid)") { [self] limit in
            await end(within: limit) { answer in onEnd { answer($0) } }.map { "\($0)" }
        }
    }

    /// Closes its standard input, so that it reads end-of-file.
    public func closeStdin() { process.closeInput() }

    /// Sets the size of its terminal (with `terminal`).
    public func resizeTerminal(rows: UInt16, columns: UInt16) {
        process.resizeTerminal(rows: rows, columns: columns)
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
        if runtime.userNamespace != nil, record.spec.initProcess || record.spec.lifetime != .boundToHost, let pid = record.pid {
            // An init never executes: it keeps a copy of the launching
            // process's memory, and no one but root may enter a process
            // that holds what it cannot read. Its program is entered instead.
            guard let program = Self.programOfInit(pid) else {
                throw RuntimeError(.invalidState, "cannot exec in container \(name): its program has ended")
            }
            joinPidfd = program.pidfd
            descriptors.append(program.pidfd)
        }
        var environment = ContainerRuntime.overriding(record.process.environment, with: try runtime.providedVariables(record))
        for pair in exec.environment {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw RuntimeError(.invalidSpec, "environment entry \"\(pair)\" is not KEY=VALUE")
            }
            environment.removeAll { $0.hasPrefix(pair[...equals]) }
            environment.append(pair)
        }
        // Counted before the launch: the process can meet the limit at once.
        let oomKills = runtime.cgroups.oomKills(record.cgroup)
        let (process, pipes) = try await launchInCgroup(
            record, pipes: exec.terminal ? .terminal() : .make(openStdin: exec.openStdin), what: "a process in container \(name)"
        ) { plan in
            plan.cloneFlags = 0
            plan.userNamespaceDescriptor = -1
            plan.networkHelper = nil
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
        let streams = [(pipes.stdout, StandardStream.stdout), (pipes.stderr, .stderr)].filter { $0.0 >= 0 }
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
        return ExecProcess(pid: process.pid, pidfd: process.pidfd, stdin: pipes.stdin, output: stream) { [weak self] status in
            self?.reasonForTheEnd(ofAnExec: status, oomKillsBefore: oomKills) ?? .exited
        }
    }

    /// Why a process exec'd in the container ended with `status`: a signal
    /// is put down to the OOM killer when the container's cgroup counted a
    /// kill since the process started, or to the container's timeout or
    /// stop when that is what is ending the container. Reads one cgroup
    /// file: quick enough for the supervisor thread.
    func reasonForTheEnd(ofAnExec status: ProcessExit, oomKillsBefore: Int64) -> ExitReason {
        guard case .signaled = status else { return .exited }
        let (cgroup, timedOut, stopped) = state.withLock { state in
            (state.record.cgroup, state.lifecycle.timedOut, state.record.stopRequested == true)
        }
        if runtime.cgroups.oomKills(cgroup) > oomKillsBefore { return .oomKilled }
        if timedOut { return .timedOut }
        return stopped ? .stopped : .exited
    }
}

extension Container {
    /// A pidfd and the pid of the program an init runs (the init's only
    /// child), or nil.
    static func programOfInit(_ pid: Int32) -> (pidfd: Int32, pid: Int32)? {
        guard let children = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8),
              let child = children.split(separator: " ").first.flatMap({ Int32($0) }) else { return nil }
        let pidfd = gantry_pidfd_open(child)
        guard pidfd >= 0 else { return nil }
        // Still the init's child (and not a process that took a freed pid).
        guard let status = try? String(contentsOfFile: "/proc/\(child)/status", encoding: .utf8),
              status.split(separator: "\n").contains("PPid:\t\(pid)") else {
            close(pidfd)
            return nil
        }
        return (pidfd, child)
    }
}
