import CGantrySystem
import GantryCore
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A process this process started in a container and watches: a
/// container's main process, or one exec'd into it. It owns the process's
/// pidfd and the parent's end of its input (a pipe, or a terminal's
/// master), and closes them once, when its end is known; until then every
/// use of them happens under its lock, so that no one signals or writes to
/// a number the kernel has meanwhile given to something else.
final class ProcessHandle: Sendable {
    /// Its pid on the host.
    let pid: Int32
    private let descriptors: Mutex<(pidfd: Int32, input: Int32)>

    init(pid: Int32, pidfd: Int32, input: Int32) {
        self.pid = pid
        descriptors = Mutex((pidfd, input))
    }

    /// Sends `signal`. A process that is gone is not an error.
    ///
    /// - Returns: `false` when the handle is closed (the caller may reach
    ///   the process another way), `true` once sent.
    /// - Throws: the errno of a failed `pidfd_send_signal`.
    @discardableResult
    func signal(_ signal: Signal) throws(Errno) -> Bool {
        let failure: Errno?? = descriptors.withLock { descriptors in
            guard descriptors.pidfd >= 0 else { return nil }
            return gantry_pidfd_signal(descriptors.pidfd, signal.rawValue) == 0 || errno == ESRCH ? .some(nil) : .some(Sys.errno)
        }
        guard let failure else { return false }
        if let failure { throw failure }
        return true
    }

    /// A duplicate of its pidfd (the caller closes it), or -1 once closed.
    func duplicatePidfd() -> Int32 {
        descriptors.withLock { $0.pidfd >= 0 ? fcntl($0.pidfd, F_DUPFD_CLOEXEC, 3) : -1 }
    }

    /// A duplicate of its input (the caller closes it), or -1 when it has none.
    func duplicateInput() -> Int32 {
        descriptors.withLock { $0.input >= 0 ? fcntl($0.input, F_DUPFD_CLOEXEC, 3) : -1 }
    }

    /// Opens a socket in its network namespace; -2 once closed, -1 with
    /// `errno` when the call fails.
    func socketInNetworkNamespace(domain: Int32, type: Int32) -> Int32 {
        descriptors.withLock { $0.pidfd >= 0 ? gantry_socket_in_netns($0.pidfd, domain, type, 0) : -2 }
    }

    /// Whether it has ended (its pidfd is readable, or closed once its end
    /// was known), reaped or not.
    var hasEnded: Bool {
        descriptors.withLock { descriptors in
            guard descriptors.pidfd >= 0 else { return true }
            var ready = pollfd(fd: descriptors.pidfd, events: Int16(POLLIN), revents: 0)
            return poll(&ready, 1, 0) == 1
        }
    }

    /// How long to wait for its end to be known, after its input broke: a
    /// process that has ended is waited for until its end is recorded
    /// (however busy the machine); one that only closed its input, briefly.
    private var endWait: Duration { hasEnded ? .seconds(30) : .seconds(1) }

    /// Sets the size of its terminal (when its input is one).
    func resizeTerminal(rows: UInt16, columns: UInt16) {
        var size = winsize(ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        descriptors.withLock { if $0.input >= 0 { _ = ioctl($0.input, UInt(TIOCSWINSZ), &size) } }
    }

    /// Closes its input, so that it reads end-of-file.
    func closeInput() {
        let fd = descriptors.withLock { descriptors in
            defer { descriptors.input = -1 }
            return descriptors.input
        }
        if fd >= 0 { Glibc.close(fd) }
    }

    deinit {
        // A handle dropped without an end (a launch undone) still closes.
        close()
    }

    /// Closes what it owns, once its end is known.
    func close() {
        let (pidfd, input) = descriptors.withLock { descriptors in
            defer { descriptors = (-1, -1) }
            return descriptors
        }
        if pidfd >= 0 { Glibc.close(pidfd) }
        if input >= 0 { Glibc.close(input) }
    }

    /// Sends `data` to its input without holding a thread of Swift's
    /// cooperative pool; a process that ends or stops reading first makes
    /// the error say how it ended (`ended` is asked, with a limit).
    ///
    /// - Parameters:
    ///   - what: the process, as the error names it.
    ///   - ended: how the process ended, if it ends within a limit.
    func send(_ data: [UInt8], what: String, ended: @Sendable (Duration) async -> String?) async throws {
        let fd = duplicateInput()
        guard fd >= 0 else {
            throw await Self.noInput(what, within: hasEnded ? .seconds(30) : .milliseconds(100), ended: ended)
        }
        do {
            try await offload { _ in
                defer { Glibc.close(fd) }
                try writeAll(fd, data, what: what)
            }
        } catch let error as RuntimeError where error.systemError == .brokenPipe {
            if let end = await ended(endWait) {
                throw RuntimeError(.invalidState, "\(what) \(end) before reading all its input", underlying: error)
            }
            throw RuntimeError(.invalidState, "\(what) closed its input before reading all of it", underlying: error)
        }
    }

    /// The error for a send to a process with no open input: its input goes
    /// with its end, so the error says which end when it comes within `limit`.
    static func noInput(_ what: String, within limit: Duration, ended: @Sendable (Duration) async -> String?) async -> RuntimeError {
        if let end = await ended(limit) {
            return RuntimeError(.invalidState, "\(what) \(end) before reading all its input")
        }
        return RuntimeError(.invalidState, "\(what) has no open standard input")
    }

    /// Writes `data` to its input, blocking the calling thread while the
    /// pipe is full.
    func write(_ data: [UInt8], what: String) throws {
        let fd = duplicateInput()
        guard fd >= 0 else { throw RuntimeError(.invalidState, "\(what) has no open standard input") }
        defer { Glibc.close(fd) }
        try writeAll(fd, data, what: what)
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

/// How a process ended, if it ends within `limit`: `register` is given a
/// handler to call with the end (at once, when it is known already). The
/// timer behind the limit is cancelled as soon as there is an answer, so
/// nothing is left sleeping.
func end(within limit: Duration, register: (@escaping @Sendable (ContainerExit?) -> Void) -> Void) async -> ContainerExit? {
    let waiting = Mutex<(answered: Bool, timer: Task<Void, Never>?)>((false, nil))
    return await withCheckedContinuation { (continuation: CheckedContinuation<ContainerExit?, Never>) in
        let answer: @Sendable (ContainerExit?) -> Void = { exit in
            let (first, timer) = waiting.withLock { waiting -> (Bool, Task<Void, Never>?) in
                defer { waiting.answered = true }
                return (!waiting.answered, waiting.timer)
            }
            guard first else { return }
            timer?.cancel()
            continuation.resume(returning: exit)
        }
        register(answer)
        let task = Task {
            try? await Task.sleep(for: limit)
            answer(nil)
        }
        // Answered before the timer was kept: it is not needed.
        if waiting.withLock({ waiting in
            waiting.timer = task
            return waiting.answered
        }) { task.cancel() }
    }
}
