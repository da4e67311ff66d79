import SystemPackage

extension Container {
    /// Where a container is, as the process holding this handle knows it,
    /// and what that process holds for it there. Each case owns its
    /// resources; the transitions below change the case and return what
    /// the caller must do outside the lock (release, kill, record), so that
    /// they make no system call themselves and can be tested without root.
    enum Lifecycle {
        /// Created by this process, not started.
        case created
        /// ``Container/start()`` is launching it.
        case starting
        /// Its main process runs, watched by this process.
        case running(Running)
        /// Its main process has ended. Its output is still being read, or
        /// (`recording`) its end is being recorded.
        case ending(Running, ProcessExit, recording: Bool)
        /// Its end is recorded.
        case finished(ContainerExit)
        /// It is gone.
        case removed
        /// Another process created or runs it; it is followed through its
        /// record in the state root.
        case foreign
    }

    /// What a container whose process runs holds in the process watching it.
    struct Running {
        /// Its main process.
        var process: ProcessHandle
        /// The main process's mount namespace, held so that its teardown
        /// happens in the background once the process has ended, or -1.
        var mountNamespace: Int32 = -1
        /// The lock of the upper directory, held from the start until that
        /// namespace is torn down, or -1.
        var overlayLock: Int32 = -1
        /// The timeout's timerfd while it is armed, or -1.
        var timer: Int32 = -1
        /// The output pipes still being read into the log.
        var openStreams = 0
        /// The log its output is written to, when this process keeps it.
        var log: ContainerLogWriter?
        /// Whether its timeout killed it.
        var timedOut = false
    }

    /// What to do when a container's main process has ended.
    struct ExitStep: Equatable {
        /// The mount namespace and overlay lock to release (-1 for none).
        var mountNamespace: Int32
        var overlayLock: Int32
        /// Whether its end can be recorded now (its output is all read).
        var record: Bool
    }
}

extension Container.Lifecycle {
    /// Whether this process runs the container, and so learns its end itself.
    var isOwned: Bool {
        if case .foreign = self { return false }
        return true
    }

    /// The main process while this process watches it.
    var process: ProcessHandle? {
        switch self {
        case .running(let running), .ending(let running, _, _): running.process
        default: nil
        }
    }

    /// Whether its timeout killed (or is killing) it, or a recorded end says so.
    var timedOut: Bool {
        switch self {
        case .running(let running), .ending(let running, _, _): running.timedOut
        case .finished(let exit): exit.reason == .timedOut
        default: false
        }
    }

    /// The end, once recorded.
    var exit: ContainerExit? {
        if case .finished(let exit) = self { return exit }
        return nil
    }

    /// `created` → `starting`; `false` (and no change) from any other case.
    mutating func beginStart() -> Bool {
        guard case .created = self else { return false }
        self = .starting
        return true
    }

    /// `starting` → `created`, after a launch that failed.
    mutating func startFailed() {
        if case .starting = self { self = .created }
    }

    /// `starting` (or `foreign`, when adopting a container that outlived
    /// its starter) → `running`. Returns `false`, changing nothing, from
    /// any other case.
    mutating func started(_ running: Container.Running) -> Bool {
        switch self {
        case .starting, .foreign:
            self = .running(running)
            return true
        default:
            return false
        }
    }

    /// The main process ended with `status`. Returns what to release at
    /// once, and whether its end can be recorded now; `nil` when it was
    /// not running (an end already known).
    mutating func processExited(_ status: ProcessExit) -> Container.ExitStep? {
        guard case .running(var running) = self else { return nil }
        let step = Container.ExitStep(mountNamespace: running.mountNamespace, overlayLock: running.overlayLock,
                                      record: running.openStreams == 0)
        (running.mountNamespace, running.overlayLock) = (-1, -1)
        self = .ending(running, status, recording: step.record)
        return step
    }

    /// One of the output pipes reached its end. Returns whether the
    /// container's end can be recorded now (the process had ended, and this
    /// was the last pipe).
    mutating func outputClosed() -> Bool {
        switch self {
        case .running(var running):
            running.openStreams -= 1
            self = .running(running)
            return false
        case .ending(var running, let status, recording: false):
            running.openStreams -= 1
            let record = running.openStreams == 0
            self = .ending(running, status, recording: record)
            return record
        default:
            return false
        }
    }

    /// The timeout's timer is armed. Returns `false` when the end is
    /// recorded already: the caller fires it at once, so that its watch ends.
    mutating func timerArmed(_ timer: Int32) -> Bool {
        switch self {
        case .running(var running):
            running.timer = timer
            self = .running(running)
            return true
        case .ending(var running, let status, let recording):
            running.timer = timer
            self = .ending(running, status, recording: recording)
            return true
        default:
            return false
        }
    }

    /// The timeout's timer fired: its watch ends (and closes it). Returns
    /// the process to kill, when it still runs.
    mutating func timerFired() -> ProcessHandle? {
        switch self {
        case .running(var running):
            running.timer = -1
            running.timedOut = true
            self = .running(running)
            return running.process
        case .ending(var running, let status, let recording):
            // A process that ended as the timer fired was not killed by it.
            running.timer = -1
            self = .ending(running, status, recording: recording)
            return nil
        default:
            return nil
        }
    }

    /// What recording the end needs: how the process ended and whether its
    /// timeout killed it; `nil` unless the end is being recorded.
    var endToRecord: (status: ProcessExit, timedOut: Bool)? {
        guard case .ending(let running, let status, recording: true) = self else { return nil }
        return (status, running.timedOut)
    }

    /// The end is recorded: `ending` → `finished`. Returns what the
    /// container held, for the caller to release.
    mutating func endRecorded(_ exit: ContainerExit) -> Container.Running? {
        guard case .ending(let running, _, recording: true) = self else { return nil }
        self = .finished(exit)
        return running
    }
}
