import CGantrySystem
import Foundation
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

extension Container {
    func watchOutput(_ fd: Int32, stream: StandardStream, writer: ContainerLogWriter) {
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
            if state.withLock({ $0.lifecycle.outputClosed() }) { recordEnd() }
        })
    }

    /// The main process ended (on the supervisor thread, which must not block).
    func exited(_ status: ProcessExit) {
        let (step, hasPidNamespace, cgroup) = state.withLock { state in
            (state.lifecycle.processExited(status), state.record.spec.namespaces.contains(.pid), state.record.cgroup)
        }
        guard let step else { return }
        Reclaimer.shared.releaseMountNamespace(step.mountNamespace, overlayLock: step.overlayLock)
        // The container ends with its main process: without a PID namespace
        // to take the rest down, the cgroup's other processes are killed.
        if !hasPidNamespace {
            for pid in (try? runtime.cgroups.processes(cgroup)) ?? [] { Glibc.kill(pid, SIGKILL) }
        }
        if step.record { recordEnd() }
    }

    /// Records the end, once the process has exited and its output is read.
    private func recordEnd() {
        // Recording the end takes locks and talks to the kernel's network
        // stack: not on the supervisor thread, which must never block, nor on
        // Swift's cooperative pool, nor behind long blocking work (unpacks,
        // waits for locks) that could take every thread of the shared pool.
        Self.exitRecorder.submit { [self] in finish() }
    }

    /// Records the end: the exit, the network released, waiters resumed.
    private func finish() {
        guard let (recordedStatus, timedOut, cgroup) = state.withLock({ state in
            state.lifecycle.endToRecord.map { ($0.status, $0.timedOut, state.record.cgroup) }
        }) else { return }
        var status = recordedStatus
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
        let (held, waiters) = state.withLock { state in
            if let record { state.record = record } else {
                if released { state.record.network = nil }
                state.record.status = .stopped
                state.record.exit = exit
                state.record.finishedAt = now
            }
            defer {
                state.waiters.removeAll()
                state.exitHandlers.removeAll()
            }
            let held = state.lifecycle.endRecorded(exit)
            // A pending timeout fires now, finds the container finished, and
            // so ends its watch (and closes its timer): armed under the lock,
            // which a timer that fired meanwhile took first to forget it.
            if let timer = held?.timer, timer >= 0 { gantry_timer_set(timer, 1) }
            return (held, (state.waiters, state.exitHandlers))
        }
        held?.process.close()
        outputSignal.bump(finished: true)
        waiters.0.forEach { $0.resume(returning: exit) }
        waiters.1.forEach { $0(exit) }
        runtime.logger.debug("exited", metadata: ["container": "\(name)", "exit": "\(exit)"])
    }

    /// The timeout's timer fired (on the supervisor thread).
    func timeOut() {
        // Its watch ends (and closes the timer) after this.
        guard let process = state.withLock({ $0.lifecycle.timerFired() }) else { return }
        _ = try? process.signal(.kill)
        // Thawing a paused one takes its record's lock: not on this thread.
        Self.exitRecorder.submit { [self] in thawIfPaused() }
    }
}
