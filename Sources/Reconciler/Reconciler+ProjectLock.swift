import CoreMetrics
import Foundation
import Logging
import OCIImage
import Runtime
import Scheduler
import SystemPackage
import ServiceLifecycle
import Synchronization
import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// One reconciler per project on a host: a lock file in the state root,
/// holding the pid of the process that reconciles it.
extension Reconciler {
    func lockProject() throws {
        let directory = runtime.stateRoot.path + "/reconciler"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/" + options.project + ".lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ReconcilerError(.store, "cannot open \(path): \(Errno(rawValue: errno))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let owner = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(fd)
            throw ReconcilerError(.invalidState, "project \(options.project) is already reconciled by another process (pid \(owner))")
        }
        ftruncate(fd, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(fd, $0, strlen($0)) }
        let taken = state.withLock { state -> Bool in
            guard !state.started else { return false }
            state.started = true
            state.lock = fd
            return true
        }
        guard taken else {
            close(fd)
            throw ReconcilerError(.invalidState, "the reconciler of project \(options.project) runs already")
        }
    }

    func unlockProject() {
        let fd = state.withLock { state in
            defer { state.lock = -1 }
            return state.lock
        }
        if fd >= 0 { close(fd) }
    }
}

/// Fired once; waiters wake then (or at once when it had fired).
final class ShutdownSignal: Sendable {
    private let state = Mutex<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func fire() {
        let waiters = state.withLock { state in
            state.fired = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let fired = state.withLock { state in
                if !state.fired { state.waiters.append(continuation) }
                return state.fired
            }
            if fired { continuation.resume() }
        }
    }
}
