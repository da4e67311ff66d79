import CGantrySystem
import Foundation
import GantryCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension Container {
    /// Sends `signal` to the container's main process.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` unless it runs (or is paused).
    public func kill(_ signal: Signal = .kill) throws {
        let record = try record
        guard record.status == .running || record.status == .paused else { throw invalid("signal", record.status) }
        try deliver(signal, record)
        if signal == .kill { thawIfPaused() }
    }

    /// Sends `signal` to the main process: through the handle this process
    /// holds, or else through a pidfd checked against the recorded start time.
    func deliver(_ signal: Signal, _ record: ContainerRecord) throws {
        do {
            if try state.withLock({ $0.lifecycle.process })?.signal(signal) == true { return }
            guard let pidfd = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) else { return }
            defer { close(pidfd) }
            if gantry_pidfd_signal(pidfd, signal.rawValue) != 0 && errno != ESRCH { throw Sys.errno }
        } catch {
            throw RuntimeError(.systemCall, "cannot send \(signal) to container \(name)", underlying: error)
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
        try deliver(signal, record)
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
                try? deliver(.kill, try self.record)
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
}
