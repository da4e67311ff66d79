import CGantryLauncher
import CGantrySystem
import Foundation
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

    /// What this process knows of a container it runs.
    struct LiveState {
        var record: ContainerRecord
        /// Whether this process started (or adopted) it and so records its end.
        var owned: Bool
        var pidfd: Int32 = -1
        /// The main process's mount namespace, held so that its teardown
        /// happens in the background once the process has ended, or -1.
        var mountNamespace: Int32 = -1
        /// The lock of the upper directory (see `lockOverlay`), held from
        /// the start until that namespace is torn down, or -1.
        var overlayLock: Int32 = -1
        var stdin: Int32 = -1
        var exitStatus: ProcessExit?
        var openStreams = 0
        var finished = false
        var timedOut = false
        var waiters: [CheckedContinuation<ContainerExit, Never>] = []
        var exitHandlers: [@Sendable (ContainerExit) -> Void] = []
        /// The timeout's timerfd while it is armed, or -1.
        var timer: Int32 = -1
        var log: ContainerLogWriter?
    }

    init(runtime: ContainerRuntime, record: ContainerRecord, owned: Bool) {
        id = record.id
        name = record.name
        self.runtime = runtime
        logPath = runtime.containerDirectory(record.id) + "/container.log"
        state = Mutex(LiveState(record: record, owned: owned))
    }

    /// The container's record as it is now (re-read from the state root
    /// when another process runs it).
    public var record: ContainerRecord {
        get throws {
            let (record, owned) = state.withLock { ($0.record, $0.owned) }
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

    private func invalid(_ action: String, _ status: ContainerStatus) -> RuntimeError {
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
            guard state.owned else {
                throw RuntimeError(.invalidState, "container \(name) was created by another process (pid \(state.record.ownerPid ?? 0)), which starts it")
            }
            state.record.status = .running
            return state.record
        }
        do {
            try await launch(record)
        } catch {
            state.withLock { $0.record.status = .created }
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
        state.withLock { state in
            if let updated { state.record = updated }
            state.pidfd = process.pidfd
            state.mountNamespace = process.mountNamespace
            state.overlayLock = overlayLock
            state.stdin = pipes.stdin
            state.openStreams = writer == nil ? 0 : [pipes.stdout, pipes.stderr].filter { $0 >= 0 }.count
            state.log = writer
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
                state.withLock { $0.timer = timer }
                ProcessSupervisor.shared.watch(timer, handler: { [weak self] _ in
                    self?.timeOut()
                    return false
                }, ended: { close(timer) })
            }
        }
    }

    private func watchOutput(_ fd: Int32, stream: OutputStream, writer: ContainerLogWriter) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        ProcessSupervisor.shared.watch(fd, handler: { [self] fd in
            withUnsafeTemporaryAllocation(byteCount: 65536, alignment: 16) { buffer in
                for _ in 0 ..< 16 {
                    let count = read(fd, buffer.baseAddress, buffer.count)
                    if count > 0 {
                        writer.append(UnsafeRawBufferPointer(rebasing: buffer[..<count]), stream: stream)
                        outputSignal.bump()
                        continue
                    }
                    // Nothing more now, or the end (or an error, as EIO from a terminal).
                    return count < 0 && (errno == EAGAIN || errno == EINTR)
                }
                return true
            }
        }, ended: { [self] in
            close(fd)
            state.withLock { $0.openStreams -= 1 }
            finishIfDone()
        })
    }

    private func exited(_ status: ProcessExit) {
        let (hasPidNamespace, cgroup, mountNamespace, overlayLock) = state.withLock { state in
            state.exitStatus = status
            defer { (state.mountNamespace, state.overlayLock) = (-1, -1) }
            return (state.record.spec.namespaces.contains(.pid), state.record.cgroup, state.mountNamespace, state.overlayLock)
        }
        Reclaimer.shared.releaseMountNamespace(mountNamespace, overlayLock: overlayLock)
        // The container ends with its main process: without a PID namespace
        // to take the rest down, the cgroup's other processes are killed.
        if !hasPidNamespace {
            for pid in (try? runtime.cgroups.processes(cgroup)) ?? [] { Glibc.kill(pid, SIGKILL) }
        }
        finishIfDone()
    }

    /// Records the end once the process has exited and its output is read.
    private func finishIfDone() {
        let ready = state.withLock { state -> Bool in
            guard let _ = state.exitStatus, state.openStreams == 0, !state.finished else { return false }
            state.finished = true
            return true
        }
        guard ready else { return }
        // Recording the end takes locks and talks to the kernel's network
        // stack: not on the supervisor thread, which must never block, nor on
        // Swift's cooperative pool, nor behind long blocking work (unpacks,
        // waits for locks) that could take every thread of the shared pool.
        Self.exitRecorder.submit { [self] in finish() }
    }

    /// Records the end: the exit, the network released, waiters resumed.
    private func finish() {
        // Taken (and forgotten) under the lock before they are closed, so
        // that no one signals or writes to a number reused meanwhile.
        var (status, cgroup, timedOut, pidfd, stdin) = state.withLock { state in
            defer {
                state.pidfd = -1
                state.stdin = -1
            }
            return (state.exitStatus!, state.record.cgroup, state.timedOut, state.pidfd, state.stdin)
        }
        // The init of a container that outlives its starter reports the
        // program's end in its own code; its record says how it truly ended.
        if state.withLock({ $0.record.spec.lifetime == .independent }), let recorded = ExitRecord.read(in: runtime.containerDirectory(id)) {
            status = recorded
        }
        let oomKilled = runtime.cgroups.oomKills(cgroup) > 0
        // Its address and published ports are free again before anyone
        // learns of the end, so that a replacement can take them at once.
        let released = runtime.releaseNetwork(of: state.withLock { $0.record })
        let now = Date()
        var exit = ContainerExit(status: status, reason: .exited)
        let record: ContainerRecord?
        do {
            record = try runtime.update(id) { record in
                if released { record.network = nil }
                if oomKilled {
                    exit.reason = .oomKilled
                } else if timedOut {
                    exit.reason = .timedOut
                } else if record.stopRequested == true {
                    exit.reason = .stopped
                }
                record.status = .stopped
                record.exit = exit
                record.finishedAt = now
                record.pid = nil
            }
        } catch {
            // Removed meanwhile, or the state cannot be written: waiters
            // still learn the exit.
            runtime.logger.warning("cannot record that a container ended", metadata: ["container": "\(name)", "error": "\(error)"])
            record = nil
        }
        if pidfd >= 0 { close(pidfd) }
        if stdin >= 0 { close(stdin) }
        let waiters = state.withLock { state in
            if let record { state.record = record } else {
                if released { state.record.network = nil }
                state.record.status = .stopped
                state.record.exit = exit
                state.record.finishedAt = now
            }
            state.log = nil
            // A pending timeout fires now, finds the container finished, and
            // so ends its watch (and closes its timer).
            if state.timer >= 0 { gantry_timer_set(state.timer, 1) }
            state.timer = -1
            defer {
                state.waiters.removeAll()
                state.exitHandlers.removeAll()
            }
            return (state.waiters, state.exitHandlers)
        }
        outputSignal.bump(finished: true)
        waiters.0.forEach { $0.resume(returning: exit) }
        waiters.1.forEach { $0(exit) }
        runtime.logger.debug("exited", metadata: ["container": "\(name)", "exit": "\(exit)"])
    }

    private func timeOut() {
        let signalled = state.withLock { state -> Bool in
            // The timer is done: its watch ends (and closes it) after this.
            state.timer = -1
            // A process that ended as the timer fired was not killed by it.
            guard !state.finished, state.exitStatus == nil, state.pidfd >= 0 else { return false }
            state.timedOut = true
            gantry_pidfd_signal(state.pidfd, SIGKILL)
            return true
        }
        if signalled { thawIfPaused() }
    }

    // MARK: - Waiting

    /// Waits for the container's process to end and returns how it ended.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` when it was never started.
    public func wait() async throws -> ContainerExit {
        let immediate = try state.withLock { state -> ContainerExit? in
            if let exit = state.record.exit, state.record.status == .stopped { return exit }
            if state.owned && state.record.status == .created { throw invalid("wait for", .created) }
            return nil
        }
        if let immediate { return immediate }
        if state.withLock({ $0.owned }) {
            return await withCheckedContinuation { continuation in
                let done = state.withLock { state -> ContainerExit? in
                    if state.finished, let exit = state.record.exit { return exit }
                    state.waiters.append(continuation)
                    return nil
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
    /// its end is recorded (at once when it had ended already). The handler
    /// runs on the supervision thread: it must return quickly and not block.
    ///
    /// - Parameter handler: receives how the container ended.
    /// - Throws: ``RuntimeError`` with code `invalidState` when the container
    ///   was never started, or another process runs it.
    public func onExit(_ handler: @escaping @Sendable (ContainerExit) -> Void) throws {
        let ended = try state.withLock { state -> ContainerExit? in
            if let exit = state.record.exit, state.record.status == .stopped { return exit }
            guard state.owned else {
                throw RuntimeError(.invalidState, "container \(name) is run by another process (pid \(state.record.ownerPid ?? 0)), which learns its end")
            }
            if state.record.status == .created { throw invalid("watch", .created) }
            if state.finished, let exit = state.record.exit { return exit }
            state.exitHandlers.append(handler)
            return nil
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
    public func socket(domain: Int32 = AF_INET, type: Int32 = Int32(SOCK_STREAM.rawValue)) throws -> Int32 {
        let result = try state.withLock { state -> Int32 in
            guard state.record.status == .running || state.record.status == .paused else { throw invalid("open a socket in", state.record.status) }
            guard state.owned, state.pidfd >= 0 else { return -2 }
            return gantry_socket_in_netns(state.pidfd, domain, type, 0)
        }
        if result >= 0 { return result }
        if result == -1 { throw RuntimeError(.systemCall, "cannot open a socket in container \(name)'s network namespace", underlying: Errno(rawValue: errno)) }
        // Another process runs it: enter its namespace through a pidfd checked against the recorded start time.
        let record = try record
        guard let pidfd = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) else {
            throw RuntimeError(.invalidState, "the process of container \(name) is gone")
        }
        defer { close(pidfd) }
        let fd = gantry_socket_in_netns(pidfd, domain, type, 0)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot open a socket in container \(name)'s network namespace", underlying: Errno(rawValue: errno)) }
        return fd
    }

    /// Sends `signal` to the container's main process.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` unless it runs (or is paused).
    public func kill(_ signal: Signal = .kill) throws {
        let record = try record
        guard record.status == .running || record.status == .paused else { throw invalid("signal", record.status) }
        try send(signal, record)
        if signal == .kill { thawIfPaused() }
    }

    private func send(_ signal: Signal, _ record: ContainerRecord) throws {
        // Our own pidfd is used under the lock, so that it cannot be closed meanwhile.
        let own: Errno?? = state.withLock { state in
            guard state.pidfd >= 0 else { return nil }
            return gantry_pidfd_signal(state.pidfd, signal.rawValue) == 0 || errno == ESRCH ? .some(nil) : .some(Sys.errno)
        }
        var failure: Errno?
        if let own {
            failure = own
        } else {
            guard let pidfd = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) else { return }
            defer { close(pidfd) }
            if gantry_pidfd_signal(pidfd, signal.rawValue) != 0 && errno != ESRCH { failure = Sys.errno }
        }
        if let failure {
            throw RuntimeError(.systemCall, "cannot send \(signal) to container \(name)", underlying: failure)
        }
    }

    func thawIfPaused() {
        guard let record = try? record, record.status == .paused else { return }
        try? runtime.cgroups.setFrozen(false, record.cgroup)
        _ = try? runtime.update(id) { if $0.status == .paused { $0.status = .running } }
    }

    /// Stops the container: its stop signal, then SIGKILL if it is still
    /// running after `grace` (the spec's stop grace period by default).
    /// Returns how it ended; a container that is not running is left as it is.
    @discardableResult
    public func stop(grace: Duration? = nil) async throws -> ContainerExit? {
        var record = try record
        guard record.status == .running || record.status == .paused else { return record.exit }
        record = try runtime.update(id) { $0.stopRequested = true }
        state.withLock { $0.record.stopRequested = true }
        let signal = record.spec.stopSignal
        try send(signal, record)
        thawIfPaused()
        let grace = grace ?? record.spec.stopGracePeriod
        let (pid, name, logger) = (record.pid, name, runtime.logger)
        return try await withThrowingTaskGroup(of: ContainerExit?.self) { group in
            group.addTask { try await self.wait() }
            group.addTask {
                try? await Task.sleep(for: grace)
                return nil
            }
            // The kernel drops a signal sent to the first process of a PID
            // namespace that neither handles nor blocks it (nor will one
            // sent before it did): waiting the grace period would gain
            // nothing, so it is killed as soon as that is seen.
            if let pid {
                group.addTask {
                    // Cancelled, it ends as the grace period's task does: with a kill.
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(50))
                        if Self.discards(signal, pid: pid) {
                            logger.notice("the container's first process neither handles nor blocks its stop signal, which its PID namespace drops; it is killed without waiting the grace period",
                                          metadata: ["container": "\(name)", "signal": "\(signal)"])
                            return nil
                        }
                    }
                    return nil
                }
            }
            while let result = try await group.next() {
                if let exit = result {
                    group.cancelAll()
                    return exit
                }
                try? send(.kill, try self.record)
            }
            return nil
        }
    }

    /// Whether the kernel drops `signal` sent to the process `pid`: the
    /// first process of its PID namespace, which gets only the signals it
    /// handles or blocks (to read them from a signalfd, as an init does);
    /// SIGKILL and SIGSTOP from outside always arrive.
    static func discards(_ signal: Signal, pid: Int32) -> Bool {
        guard signal != .kill, signal != .stop, signal.rawValue > 0, signal.rawValue <= 64,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        else { return false }
        var fields: [Substring: Substring] = [:]
        for line in status.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
        }
        guard fields["NSpid"]?.split(whereSeparator: { $0 == " " || $0 == "\t" }).last == "1",
              let caught = fields["SigCgt"].flatMap({ UInt64($0, radix: 16) }),
              let blocked = fields["SigBlk"].flatMap({ UInt64($0, radix: 16) })
        else { return false }
        let bit: UInt64 = 1 << UInt64(signal.rawValue - 1)
        return caught & bit == 0 && blocked & bit == 0
    }

    /// Freezes every process of the container. The kernel may take a while
    /// to reach every process; the wait happens off Swift's cooperative pool.
    public func pause() async throws { try await offload { [self] _ in try freeze(true) } }

    /// Thaws a paused container.
    public func resume() async throws { try await offload { [self] _ in try freeze(false) } }

    private func freeze(_ frozen: Bool) throws {
        let record = try record
        let (from, to): (ContainerStatus, ContainerStatus) = frozen ? (.running, .paused) : (.paused, .running)
        guard record.status == from else { throw invalid(frozen ? "pause" : "resume", record.status) }
        try runtime.cgroups.setFrozen(frozen, record.cgroup)
        let updated = try runtime.update(id) { $0.status = to }
        state.withLock { $0.record = updated }
    }

    /// What the container has used, from its cgroup.
    public func usage() throws -> ResourceUsage {
        let record = try record
        guard record.status != .removed else { throw invalid("measure", record.status) }
        return try runtime.cgroups.usage(record.cgroup)
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
            try? send(.kill, record)
            thawIfPaused()
            _ = try await wait()
            record = try self.record
        }
        // Removing a cgroup waits while the kernel still counts exiting
        // processes: off Swift's cooperative pool.
        let removed = record
        try await offload { [runtime] _ in try runtime.destroy(removed) }
        let waiters = state.withLock { state in
            state.record.status = .removed
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        outputSignal.bump(finished: true)
        let exit = record.exit ?? ContainerExit(status: .signaled(.kill), reason: .unknown)
        waiters.forEach { $0.resume(returning: exit) }
    }

    /// Kills the container when the task using it is cancelled.
    func killForCancellation() {
        state.withLock { state in
            if state.pidfd >= 0 { gantry_pidfd_signal(state.pidfd, SIGKILL) }
        }
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
        let updated = try runtime.update(id) {
            $0.ownerPid = runtime.owner.pid
            $0.ownerStartTime = runtime.owner.startTime
        }
        state.withLock { state in
            state.record = updated
            state.owned = true
            state.pidfd = pidfd
        }
        // Not our child: the pidfd says when it ends, and its init's exit
        // record how (read when the end is recorded), else it is unknown.
        ProcessSupervisor.shared.watch(pidfd, handler: { _ in false }, ended: { [self] in
            state.withLock { $0.exitStatus = .signaled(.kill) }
            finishIfDone()
        })
    }
}
