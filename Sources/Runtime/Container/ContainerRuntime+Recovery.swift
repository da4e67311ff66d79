import CGantrySystem
import Foundation
import Logging
import OCIImage
import Synchronization
import Tracing
#if canImport(Glibc)
import Glibc
#endif

extension ContainerRuntime {
    /// A pidfd of a recorded process, if it is still that process: opened
    /// first and checked after, so that a reused pid cannot slip in between.
    static func openPidfd(pid: Int32?, startTime: UInt64?) -> Int32? {
        guard let pid, pid > 0, let startTime else { return nil }
        let pidfd = gantry_pidfd_open(pid)
        guard pidfd >= 0 else { return nil }
        guard processStartTime(pid) == startTime else {
            close(pidfd)
            return nil
        }
        return pidfd
    }

    /// Whether a recorded process is still the same one (pid reuse aside)
    /// and has not ended: a zombie, whose parent has yet to collect its
    /// exit, has (its container's ports and addresses are free to give up;
    /// a slow reaper, such as a container's own init, must not hold them).
    static func isAlive(pid: Int32?, startTime: UInt64?) -> Bool {
        guard let pid, pid > 0, let startTime, let status = processStatus(pid) else { return false }
        return status.startTime == startTime && status.state != "Z" && status.state != "X"
    }

    /// Cleans up after processes that ended: containers bound to them that
    /// were still created, running or paused are killed and removed (those
    /// that had stopped stay until removed, as their exit and logs are
    /// wanted); independent ones are adopted, or marked stopped.
    /// Finishes what processes that ended left behind in the state root:
    /// removes their containers bound to them (with cgroups, mounts,
    /// network devices and addresses), adopts their independent containers
    /// that still run, records the end of those that ended unwatched, and
    /// undoes creations and removals a crash cut short. Containers of
    /// processes that still run are never touched.
    ///
    /// Opening a runtime does this by default (`LeftoverPolicy.recover`);
    /// with `LeftoverPolicy.leave`, call it when you choose.
    @discardableResult
    public func recoverLeftovers() -> RecoveryReport {
        recover()
    }

    @discardableResult
    func recover() -> RecoveryReport {
        var report = RecoveryReport()
        removeInterruptedCreations()
        // Snapshot holds of containers that are gone (a removal cut short
        // after the directory went): they would keep their layers forever.
        for holder in (try? FileManager.default.contentsOfDirectory(atPath: images.root.holds)) ?? []
        where holder.count == 64 && holder.allSatisfy(\.isHexDigit) && access(containerDirectory(holder), F_OK) != 0 {
            try? images.releaseSnapshots(holder: holder)
        }
        // Names of containers that are gone, likewise.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/names")) ?? [] {
            guard let id = try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/names/" + name),
                  access(containerDirectory(id), F_OK) != 0 else { continue }
            unlink(directory + "/names/" + name)
        }
        for record in (try? list()) ?? [] {
            let ownerAlive = Self.isAlive(pid: record.ownerPid, startTime: record.ownerStartTime)
            if ownerAlive { continue }
            let processAlive = Self.isAlive(pid: record.pid, startTime: record.pidStartTime)
            do {
                if record.spec.lifetime == .independent, record.status == .created, let main = mainProcess(of: record) {
                    // Started, but its owner died before recording it: it runs.
                    logger.info("adopting a container whose start was not recorded", metadata: ["container": "\(record.name)"])
                    let started = try update(record.id) {
                        $0.status = .running
                        $0.pid = main
                        $0.pidStartTime = processStartTime(main)
                        $0.startedAt = $0.startedAt ?? Date()
                    }
                    let container = Container(runtime: self, record: started, owned: false)
                    try container.adopt()
                    live.withLock { $0[record.id] = container }
                    report.adopted.append(record.name)
                } else if record.spec.lifetime == .boundToHost && record.status != .stopped {
                    // It died with its process (or was never started): nothing of it may stay.
                    logger.info("removing a container its process left behind", metadata: ["container": "\(record.name)"])
                    try? cgroups.remove(record.cgroup)
                    try destroy(record)
                    report.removed.append(record.name)
                } else if record.spec.lifetime == .boundToHost {
                    // It had ended: it stays, for its exit and logs, until removed.
                    continue
                } else if processAlive, record.status == .running || record.status == .paused {
                    let container = Container(runtime: self, record: record, owned: false)
                    try container.adopt()
                    live.withLock { $0[record.id] = container }
                    report.adopted.append(record.name)
                } else if record.status == .running || record.status == .paused {
                    let released = releaseNetwork(of: record)
                    try update(record.id) {
                        if released { $0.network = nil }
                        $0.status = .stopped
                        $0.finishedAt = $0.finishedAt ?? Date()
                        $0.exit = ExitRecord.exit(in: containerDirectory(record.id))
                        $0.pid = nil
                    }
                    try? cgroups.remove(record.cgroup)
                    report.ended.append(record.name)
                }
            } catch {
                logger.warning("cannot recover a container", metadata: ["container": "\(record.name)", "error": "\(error)"])
            }
        }
        // Removed containers' files that a process ended before deleting.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: removedDirectory)) ?? [] {
            try? networks.host.removeNamespace(at: removedDirectory + "/" + name + "/netns")
            deleteRemoved(removedDirectory + "/" + name)
        }
        // Leases (and their devices) of containers whose creation a crash cut short.
        removeNetworkLeftovers()
        // Secrets and configs of containers that are gone.
        removeProvidedLeftovers()
        return report
    }

    /// Removes the network leases (and devices) whose container or pod has
    /// no record, and those of `removing`.
    func removeNetworkLeftovers(removing: String? = nil) {
        let records: [String] = ["state.json", "pod.json", Networks.endpointFile]
        networks.removeLeftovers { owner in
            // A writer replacing the record has one of the two at any moment.
            guard owner != removing else { return false }
            return records.contains { access(owner + "/" + $0, F_OK) == 0 || access(owner + "/" + $0 + ".next", F_OK) == 0 }
        }
    }


    /// The file in a container's directory that says a creation is under
    /// way (it holds the cgroup's path), until the record is written.
    static let creationMarker = "creating"

    /// The prefix of a container directory being made (`.new-ID-PID-START`).
    static let stagingPrefix = ".new-"

    /// Undoes creations a crash cut short: container directories without a
    /// record that no process is creating (their marker is not locked), with the
    /// cgroup, name and snapshot hold made for them. Network leases are
    /// undone by ``Networks/removeLeftovers(isKnown:)`` once the directory is gone.
    private func removeInterruptedCreations() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where SpareDirectories.isLeftover(name) {
            try? Sys.removeTree(directory + "/" + name)
        }
        for name in names where name.hasPrefix(Self.stagingPrefix) {
            // ID-PID-START: nothing but the marker was made for it.
            guard ProcessMark.hasEnded(name.dropFirst(Self.stagingPrefix.count)) == true else { continue }
            try? removeTree(directory + "/" + name, mapping: userNamespace)
        }
        for id in names where id.count == 64 && id.allSatisfy(\.isHexDigit) {
            let path = containerDirectory(id)
            // A record, or the complete next one a writer killed between its
            // steps left, is a container; a half-written next one is not.
            guard access(path + "/state.json", F_OK) != 0, (try? load(id)) == nil else { continue }
            // "cgroup\npid start-time\n", locked by its creator until the
            // record is written (the directory appears with it). Without
            // one, the directory is damaged state, not a creation.
            let lock = open(path + "/" + Self.creationMarker, O_RDONLY | O_CLOEXEC)
            defer { if lock >= 0 { close(lock) } }
            guard lock >= 0 else {
                logger.warning("a container directory has no record; leaving it as it is", metadata: ["path": "\(path)"])
                continue
            }
            if flock(lock, LOCK_SH | LOCK_NB) != 0 { continue }
            let marker = ((try? FileIO.read(path + "/" + Self.creationMarker, code: .systemCall)) ?? "").split(separator: "\n").map(String.init)
            let creator = marker.count > 1 ? marker[1].split(separator: " ").compactMap { UInt64($0) } : []
            guard creator.count == 2, !Self.isAlive(pid: Int32(truncatingIfNeeded: creator[0]), startTime: creator[1]) else { continue }
            logger.info("removing a container whose creation was cut short", metadata: ["id": "\(id.prefix(12))"])
            let cgroup = marker.first.flatMap { $0.isEmpty ? nil : $0 } ?? cgroupParent + "/" + id
            do {
                try cgroups.remove(cgroup)
            } catch {
                // Kept, marker and all, so that a later open tries again.
                logger.warning("cannot remove the cgroup of a container whose creation was cut short", metadata: ["cgroup": "\(cgroup)", "error": "\(error)"])
                continue
            }
            for name in namesPointing(at: id) { unlink(directory + "/names/" + name) }
            try? images.releaseSnapshots(holder: id)
            try? removeDirectory(of: id)
        }
    }

    /// The main process of a container whose start was not recorded: the
    /// one process of its cgroup whose parent is outside it.
    private func mainProcess(of record: ContainerRecord) -> Int32? {
        let pids = (try? cgroups.processes(record.cgroup)) ?? []
        let inside = Set(pids)
        let roots = pids.filter { pid in
            guard let text = try? FileIO.read("/proc/\(pid)/stat", code: .systemCall), let close = text.lastIndex(of: ")") else { return false }
            let fields = text[text.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]).map { !inside.contains($0) } == true
        }
        return roots.count == 1 ? roots[0] : nil
    }
}
