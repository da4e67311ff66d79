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

extension Container {
    /// Both output streams as they arrive (and as kept in the log), from
    /// the first byte, until the container ends.
    public var output: ContainerOutput { follower([.stdout, .stderr], follow: true) }
    /// Standard output only.
    public var stdout: ContainerOutput { follower([.stdout], follow: true) }
    /// Standard error only.
    public var stderr: ContainerOutput { follower([.stderr], follow: true) }

    /// The log as kept so far, without waiting for more.
    public var logs: ContainerOutput { follower([.stdout, .stderr], follow: false) }

    private func follower(_ streams: Set<OutputStream>, follow: Bool) -> ContainerOutput {
        let (owned, spec) = state.withLock { ($0.owned, $0.record.spec) }
        let runtime = runtime
        let id = id
        let isFinished: @Sendable () -> Bool = {
            guard let record = try? runtime.load(id) else { return true }
            return record.status == .stopped || record.status == .removed
        }
        if spec.lifetime == .independent {
            let directory = runtime.containerDirectory(id)
            let files = [OutputStream.stdout, .stderr].filter(streams.contains).map { ($0, DetachedLog.paths(in: directory, $0, options: spec.log)) }
            return ContainerOutput(source: .raw(RawOutputFollower(files: files, follow: follow, isFinished: isFinished)))
        }
        return ContainerOutput(source: .log(LogFollower(path: logPath, maxFiles: spec.log.maxFiles, streams: streams, follow: follow,
                                                        signal: owned ? outputSignal : nil, isFinished: isFinished)))
    }

    /// Writes to the container's standard input (with `openStdin`).
    public func write(_ bytes: some Sequence<UInt8>) throws {
        // A duplicate: the descriptor may be closed (and its number reused) meanwhile.
        let fd = state.withLock { $0.stdin >= 0 ? fcntl($0.stdin, F_DUPFD_CLOEXEC, 3) : -1 }
        guard fd >= 0 else { throw RuntimeError(.invalidState, "container \(name) has no open standard input") }
        defer { close(fd) }
        try writeAll(fd, Array(bytes), what: "container \(name)")
    }

    /// A duplicate of the main process's pidfd while this process watches
    /// it (the caller closes it), or -1.
    func duplicatePidfd() -> Int32 {
        state.withLock { $0.pidfd >= 0 ? fcntl($0.pidfd, F_DUPFD_CLOEXEC, 3) : -1 }
    }

    /// Sets the size of the container's terminal (with `terminal`).
    public func resizeTerminal(rows: UInt16, columns: UInt16) {
        var size = winsize(ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        state.withLock { state in
            if state.stdin >= 0 { _ = ioctl(state.stdin, UInt(TIOCSWINSZ), &size) }
        }
    }

    /// Closes the container's standard input, so that it reads end-of-file.
    public func closeStdin() {
        let fd = state.withLock { state -> Int32 in
            defer { state.stdin = -1 }
            return state.stdin
        }
        if fd >= 0 { close(fd) }
    }
}
