#if canImport(Glibc)
import Glibc
#endif

/// The mark `PID-START` (a process ID and the process's start time) that
/// ends the names of work in progress in the state root (a container's
/// directory being created, spare directories, a record being built, a
/// build's staging), so that what a process that ended left behind is told
/// from what a running one still uses, whatever reused its ID.
package enum ProcessMark {
    /// This process's mark.
    package static var current: String {
        let pid = getpid()
        return "\(pid)-\(processStartTime(pid) ?? 0)"
    }

    /// Whether `name`, ending in a mark, belongs to a process that has
    /// ended; nil when it does not end in one.
    package static func hasEnded(_ name: some StringProtocol) -> Bool? {
        let fields = name.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count >= 2, let pid = Int32(fields[fields.count - 2]), let start = UInt64(fields[fields.count - 1]) else { return nil }
        return !ContainerRuntime.isAlive(pid: pid, startTime: start)
    }
}
