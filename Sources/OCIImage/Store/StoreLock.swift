import GantryCore
#if canImport(Glibc)
import Glibc
#endif

/// The store-wide lock: operations that add content hold it shared, so that
/// garbage collection (which holds it exclusive) never removes content that
/// an operation has written but not yet recorded.
struct StoreLock: Sendable {
    let path: String

    enum Mode: Sendable { case shared, exclusive }

    /// Runs `body` holding the lock. Blocks the calling thread while waiting.
    func withLock<T>(_ mode: Mode, _ body: () throws -> T) throws -> T {
        let fd = try acquire(mode)
        defer { Sys.close(fd) }
        return try body()
    }

    /// Runs asynchronous `body` holding the lock, waiting for it off the
    /// cooperative thread pool.
    func withLock<T: Sendable>(_ mode: Mode, _ body: () async throws -> T) async throws -> T {
        let fd = try await offload { _ in try acquire(mode) }
        defer { Sys.close(fd) }
        return try await body()
    }

    private func acquire(_ mode: Mode) throws -> Int32 {
        let fd = try Sys.open(path, O_RDWR | O_CREAT, 0o600)
        do {
            try Sys.check("flock", path) { flock(fd, mode == .shared ? LOCK_SH : LOCK_EX) }
        } catch {
            Sys.close(fd)
            throw error
        }
        return fd
    }
}
