import CGantryLauncher
import CGantrySystem
public import Foundation
import GantryCore
import Synchronization
import SystemPackage
import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// A container: a handle to start, watch, signal, pause and remove it, and
/// to read its output. Get one from ``ContainerRuntime/create(_:)`` or
/// ``ContainerRuntime/container(_:)``; any number of handles may refer to
/// the same container, from any process opening the same state root.
public final class Container: Sendable {
    /// The threads that record containers' ends, apart from the shared
    /// pool for blocking work.
    static let exitRecorder = BlockingPool(maximumThreads: 8)

    /// 64 hex digits.
    public let id: String
    /// The unique name.
    public let name: String
    let runtime: ContainerRuntime
    let logPath: String
    let outputSignal = OutputSignal()
    let state: Mutex<LiveState>

    /// What this process knows of a container: its record, where it is in
    /// its life (and what is held there), and who waits for its end.
    struct LiveState {
        var record: ContainerRecord
        var lifecycle: Lifecycle
        var waiters: [CheckedContinuation<ContainerExit, any Error>] = []
        var exitHandlers: [@Sendable (ContainerExit) -> Void] = []
    }

    init(runtime: ContainerRuntime, record: ContainerRecord, owned: Bool) {
        id = record.id
        name = record.name
        self.runtime = runtime
        logPath = runtime.containerDirectory(record.id) + "/container.log"
        state = Mutex(LiveState(record: record, lifecycle: owned ? .created : .foreign))
    }

    /// The container's record as it is now (re-read from the state root
    /// when another process runs it).
    public var record: ContainerRecord {
        get throws {
            let (record, owned) = state.withLock { ($0.record, $0.lifecycle.isOwned) }
            if owned { return record }
            let fresh = try runtime.load(id)
            state.withLock { $0.record = fresh }
            return fresh
        }
    }

    /// The current status.
    public var status: ContainerStatus {
        get throws { try record.status }
    }

    func invalid(_ action: String, _ status: ContainerStatus) -> RuntimeError {
        RuntimeError(.invalidState, "cannot \(action) container \(name): it is \(status)")
    }

    // MARK: - Starting

    /// Starts the container's process. Returns once the program has been
    /// executed in its sandbox.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` unless the
    ///   container is created, or `launch` naming the step that failed.
    public func start() async throws {
        try await withSpan("container.start") { span in
            span.attributes["gantry.container"] = name
            try await performStart()
        }
    }

    private func performStart() async throws {
        let record = try state.withLock { state -> ContainerRecord in
            guard state.record.status == .created else { throw invalid("start", state.record.status) }
            guard state.lifecycle.isOwned else {
                throw RuntimeError(.invalidState, "container \(name) was created by another process (pid \(state.record.ownerPid ?? 0)), which starts it")
            }
            guard state.lifecycle.beginStart() else {
                if case .removed = state.lifecycle { throw invalid("start", .removed) }
                throw invalid("start", .running)
            }
            state.record.status = .running
            return state.record
        }
        do {
            try await launch(record)
        } catch {
            // Whoever waits for an end that will not come learns why.
            let waiters = state.withLock { state in
                state.lifecycle.startFailed()
                state.record.status = .created
                defer { state.waiters.removeAll() }
                return state.waiters
            }
            let failure = RuntimeError(.invalidState, "container \(name) did not start", underlying: error)
            waiters.forEach { $0.resume(throwing: failure) }
            throw error
        }
    }

    private func launch(_ record: ContainerRecord) async throws {
        let spec = record.spec
        let independent = spec.lifetime == .independent
        let writer = independent ? nil : try ContainerLogWriter(path: logPath, options: spec.log)
        let directory = runtime.containerDirectory(id)
        // Not while a copy has the overlay mounted (the kernel does not
        // support two overlays over one upper directory). Held until the
        // container's own overlay is gone, after its end.
        let overlayLock = record.usesOverlay ? try lockOverlay(what: "start") : -1
        var launched = false
        defer { if !launched && overlayLock >= 0 { close(overlayLock) } }
        // A container that outlives this process has an init that records
        // how its program ended, for whichever process looks next.
        // It also copies the program's output to log files it rotates, as
        // this process does for a container bound to it.
        let exitRecord = independent ? try ExitRecord.create(in: directory) : -1
        defer { if exitRecord >= 0 { close(exitRecord) } }
        let logFiles = independent ? try DetachedLog.create(in: directory, options: spec.log) : []
        defer { logFiles.joined().forEach { close($0) } }
        let outputPipes = try independent || !spec.terminal ? ProcessPipes.make(openStdin: !independent && spec.openStdin) : .terminal()
        let (process, pipes) = try await launchInCgroup(record, pipes: outputPipes, what: "container \(name)") { plan in
            guard independent else { return }
            // Unless asked for, the init is not seen: the program keeps the
            // signal semantics of a first process.
            plan.initKeepsFirstProcessSignals = !plan.initProcess
            plan.initProcess = true
            plan.exitRecord = exitRecord
            plan.relays = [(outputPipes.stdout, logFiles[0]), (outputPipes.stderr, logFiles[1])]
            plan.logMaxSize = UInt64(spec.log.maxSize)
        }
        if independent {
            // The init has them.
            close(pipes.stdout)
            close(pipes.stderr)
        }
        launched = true
        let now = Date()
        let startTime = processStartTime(process.pid)
        let updated: ContainerRecord?
        do {
            updated = try runtime.update(id) {
                $0.status = .running
                $0.pid = process.pid
                $0.pidStartTime = startTime
                $0.startedAt = now
            }
        } catch {
            // It runs and this process supervises it; only other processes
            // see stale state until the next write succeeds.
            runtime.logger.warning("cannot record that a container started", metadata: ["container": "\(name)", "error": "\(error)"])
            updated = nil
        }
        let handle = ProcessHandle(pid: process.pid, pidfd: process.pidfd, input: pipes.stdin)
        var running = Running(process: handle, mountNamespace: process.mountNamespace, overlayLock: overlayLock, log: writer)
        running.openStreams = writer == nil ? 0 : [pipes.stdout, pipes.stderr].filter { $0 >= 0 }.count
        state.withLock { state in
            if let updated { state.record = updated }
            _ = state.lifecycle.started(running)
        }
        if let writer {
            watchOutput(pipes.stdout, stream: .stdout, writer: writer)
            if pipes.stderr >= 0 { watchOutput(pipes.stderr, stream: .stderr, writer: writer) }
        }
        ProcessSupervisor.shared.onExit(of: process.pidfd) { [self] status in
            exited(status)
        }
        if let timeout = spec.timeout {
            // A timer the supervisor thread watches: it fires however busy
            // Swift's cooperative pool is.
            let nanoseconds = UInt64(max(1, timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000))
            let timer = gantry_timer(nanoseconds)
            if timer >= 0 {
                state.withLock { state in
                    if !state.lifecycle.timerArmed(timer) { gantry_timer_set(timer, 1) }
                }
                ProcessSupervisor.shared.watch(timer, handler: { [weak self] _ in
                    self?.timeOut()
                    return false
                }, ended: { close(timer) })
            }
        }
    }

    // MARK: - Waiting

    /// Waits for the container's process to end and returns how it ended.
    /// A wait that begins while ``start()`` is launching the process ends
    /// with that start: it throws when the start fails.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` when it was never
    ///   started, or its start failed (the launch error as `underlying`).
    public func wait() async throws -> ContainerExit {
        let immediate = try state.withLock { state -> ContainerExit? in
            if let exit = state.record.exit, state.record.status == .stopped { return exit }
            switch state.lifecycle {
            case .created: throw invalid("wait for", .created)
            case .finished(let exit): return exit
            case .removed: return state.record.exit ?? Self.unknownEnd
            default: return nil
            }
        }
        if let immediate { return immediate }
        if state.withLock({ $0.lifecycle.isOwned }) {
            return try await withCheckedThrowingContinuation { continuation in
                let done = state.withLock { state -> ContainerExit? in
                    switch state.lifecycle {
                    case .finished(let exit): return exit
                    case .removed: return state.record.exit ?? Self.unknownEnd
                    default:
                        state.waiters.append(continuation)
                        return nil
                    }
                }
                if let done { continuation.resume(returning: done) }
            }
        }
        // Another process runs it: follow its record.
        while true {
            let record = try runtime.load(id)
            state.withLock { $0.record = record }
            if record.status == .stopped, let exit = record.exit { return exit }
            if record.status == .created { throw invalid("wait for", .created) }
            if !ContainerRuntime.isAlive(pid: record.ownerPid, startTime: record.ownerStartTime),
               !ContainerRuntime.isAlive(pid: record.pid, startTime: record.pidStartTime) {
                return ExitRecord.exit(in: runtime.containerDirectory(id))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Calls `handler` once, when the container's process has ended and
    /// its end is recorded (at once, on the caller's thread, when it had
    /// ended already). The handler runs on the thread that recorded the end,
    /// one of Gantry's few: it must return quickly. A handler added while
    /// ``start()`` is launching the process stays through a start that
    /// fails: it learns the end of a later start, or of the removal.
    ///
    /// - Parameter handler: receives how the container ended.
    /// - Throws: ``RuntimeError`` with code `invalidState` when the container
    ///   was never started, or another process runs it.
    public func onExit(_ handler: @escaping @Sendable (ContainerExit) -> Void) throws {
        let ended = try state.withLock { state -> ContainerExit? in
            if let exit = state.record.exit, state.record.status == .stopped { return exit }
            switch state.lifecycle {
            case .foreign:
                throw RuntimeError(.invalidState, "container \(name) is run by another process (pid \(state.record.ownerPid ?? 0)), which learns its end")
            case .created: throw invalid("watch", .created)
            case .finished(let exit): return exit
            case .removed: return state.record.exit ?? Self.unknownEnd
            default:
                state.exitHandlers.append(handler)
                return nil
            }
        }
        if let ended { handler(ended) }
    }

    // MARK: - Signals

    /// Opens a socket in the container's network namespace, whatever its
    /// network mode: connecting it reaches what listens in the container,
    /// even on its loopback. The caller owns (and closes) the descriptor.
    ///
    /// - Parameters:
    ///   - domain: the address family (`AF_INET`).
    ///   - type: the socket type (`SOCK_STREAM`); close-on-exec is added.
    /// - Throws: ``RuntimeError`` with code `invalidState` unless it runs,
    ///   or `systemCall` with the errno.
    public func socket(domain: Int32 = AF_INET, type: Int32 = Int32(SOCK_STREAM.rawValue)) throws -> FileDescriptor {
        let process = try state.withLock { state -> ProcessHandle? in
            guard state.record.status == .running || state.record.status == .paused else { throw invalid("open a socket in", state.record.status) }
            return state.lifecycle.process
        }
        let result = process?.socketInNetworkNamespace(domain: domain, type: type) ?? -2
        if result >= 0 { return FileDescriptor(rawValue: result) }
        if result == -1 { throw RuntimeError(.systemCall, "cannot open a socket in container \(name)'s network namespace", underlying: Errno(rawValue: errno)) }
        // Another process runs it: enter its namespace through a pidfd checked against the recorded start time.
        let record = try record
        guard let pidfd = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) else {
            throw RuntimeError(.invalidState, "the process of container \(name) is gone")
        }
        defer { close(pidfd) }
        let fd = gantry_socket_in_netns(pidfd, domain, type, 0)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot open a socket in container \(name)'s network namespace", underlying: Errno(rawValue: errno)) }
        return FileDescriptor(rawValue: fd)
    }

    // MARK: - Removing

    /// Removes the container and everything it had: cgroup, upper layer,
    /// log and state. A running container is killed first with `force`,
    /// otherwise refused.
    public func remove(force: Bool = false) async throws {
        var record = try record
        if record.status == .running || record.status == .paused {
            guard force else {
                throw RuntimeError(.invalidState, "cannot remove container \(name): it is \(record.status); stop it first or force the removal")
            }
            try? deliver(.kill, record)
            thawIfPaused()
            _ = try await wait()
            record = try self.record
        }
        // A container this process created and has not started cannot be
        // started any more; one it is starting is not removed under it.
        let claimed = try state.withLock { state -> Bool in
            switch state.lifecycle {
            case .starting: throw RuntimeError(.invalidState, "cannot remove container \(name) while it is starting; remove it once start returns")
            case .created:
                state.lifecycle = .removed
                return true
            default: return false
            }
        }
        // Removing a cgroup waits while the kernel still counts exiting
        // processes: off Swift's cooperative pool.
        let removed = record
        do {
            try await offload { [runtime] _ in try runtime.destroy(removed) }
        } catch {
            if claimed { state.withLock { $0.lifecycle = .created } }
            throw error
        }
        let exit = record.exit ?? Self.unknownEnd
        let (waiters, handlers) = state.withLock { state in
            state.record.status = .removed
            state.lifecycle = .removed
            defer {
                state.waiters.removeAll()
                state.exitHandlers.removeAll()
            }
            return (state.waiters, state.exitHandlers)
        }
        outputSignal.bump(finished: true)
        waiters.forEach { $0.resume(returning: exit) }
        handlers.forEach { $0(exit) }
    }

    /// The end of a container removed before its end was known.
    static let unknownEnd = ContainerExit(status: .signaled(.kill), reason: .unknown)

    /// Kills the container when the task using it is cancelled.
    func killForCancellation() {
        _ = try? state.withLock { $0.lifecycle.process }?.signal(.kill)
        thawIfPaused()
    }

    // MARK: - Adoption

    /// Watches a container that survived the process that started it.
    func adopt() throws {
        let record = try record
        guard let pid = record.pid else { return }
        guard let pidfd = ContainerRuntime.openPidfd(pid: pid, startTime: record.pidStartTime) else {
            throw RuntimeError(.invalidState, "the process \(pid) of container \(name) is gone")
        }
        let updated: ContainerRecord
        do {
            updated = try runtime.update(id) {
                $0.ownerPid = runtime.owner.pid
                $0.ownerStartTime = runtime.owner.startTime
            }
        } catch {
            close(pidfd)
            throw error
        }
        let adopted = state.withLock { state in
            state.record = updated
            return state.lifecycle.started(Running(process: ProcessHandle(pid: pid, pidfd: pidfd, input: -1)))
        }
        guard adopted else {
            close(pidfd)
            return
        }
        // Not our child: the pidfd says when it ends, and its init's exit
        // record how (read when the end is recorded), else it is unknown.
        ProcessSupervisor.shared.watch(pidfd, handler: { _ in false }, ended: { [self] in
            exited(.signaled(.kill))
        })
    }
}
