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

    private func follower(_ streams: Set<StandardStream>, follow: Bool) -> ContainerOutput {
        let (owned, spec) = state.withLock { ($0.lifecycle.isOwned, $0.record.spec) }
        let runtime = runtime
        let id = id
        let isFinished: @Sendable () -> Bool = {
            guard let record = try? runtime.load(id) else { return true }
            return record.status == .stopped || record.status == .removed
        }
        if spec.lifetime == .independent {
            let directory = runtime.containerDirectory(id)
            let files = [StandardStream.stdout, .stderr].filter(streams.contains).map { ($0, DetachedLog.paths(in: directory, $0, options: spec.log)) }
            return ContainerOutput(source: .raw(RawOutputFollower(files: files, follow: follow, isFinished: isFinished)))
        }
        return ContainerOutput(source: .log(LogFollower(path: logPath, maxFiles: spec.log.maxFiles, streams: streams, follow: follow,
                                                        signal: owned ? outputSignal : nil, isFinished: isFinished)))
    }

    /// Writes to the container's standard input (with `openStdin`),
    /// blocking the calling thread while the container's pipe is full: for
    /// a thread of your own. From async code, use ``send(_:)``.
    public func write(_ bytes: some Sequence<UInt8>) throws {
        guard let process = state.withLock({ $0.lifecycle.process }) else {
            throw RuntimeError(.invalidState, "container \(name) has no open standard input")
        }
        try process.write(Array(bytes), what: "container \(name)")
    }

    /// Sends `bytes` to the container's standard input (with `openStdin`),
    /// without holding a thread of Swift's cooperative pool: while the
    /// container's pipe is full, the write waits on a thread of Gantry's own.
    ///
    /// A container that ends, or closes its input, before reading it all
    /// makes the send fail with what truly happened: the error says how the
    /// container ended (its time limit, an OOM kill, its exit code) rather
    /// than only "broken pipe", which stays its `underlying` error.
    ///
    /// - Throws: `RuntimeError` with code `invalidState` when the container
    ///   has no open input or stopped reading it.
    public func send(_ bytes: some Sequence<UInt8>) async throws {
        let data = Array(bytes)
        let ended: @Sendable (Duration) async -> String? = { [self] limit in await exit(within: limit).map { "\($0)" } }
        guard let process = state.withLock({ $0.lifecycle.process }) else {
            throw await ProcessHandle.noInput("container \(name)", within: .milliseconds(100), ended: ended)
        }
        try await process.send(data, what: "container \(name)", ended: ended)
    }

    /// How the container ended, if it ends within `limit`.
    func exit(within limit: Duration) async -> ContainerExit? {
        await end(within: limit) { answer in
            do { try onExit { answer($0) } } catch { answer(nil) }
        }
    }

    /// A duplicate of the main process's pidfd while this process watches
    /// it (the caller closes it), or -1.
    func duplicatePidfd() -> Int32 {
        state.withLock { $0.lifecycle.process }?.duplicatePidfd() ?? -1
    }

    /// Sets the size of the container's terminal (with `terminal`).
    public func resizeTerminal(rows: UInt16, columns: UInt16) {
        state.withLock { $0.lifecycle.process }?.resizeTerminal(rows: rows, columns: columns)
    }

    /// Closes the container's standard input, so that it reads end-of-file.
    public func closeStdin() {
        state.withLock { $0.lifecycle.process }?.closeInput()
    }
}
