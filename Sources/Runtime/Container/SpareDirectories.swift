import Foundation
import GantryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Container directories made ahead of need, in the background: each with
/// the empty files and directories a creation and a start make (`upper/`,
/// `work/`, the creation marker, `container.log` and the record's next
/// file), so that creating a container renames one into place instead of
/// allocating half a dozen inodes while the caller waits. On a file system
/// that allocates inodes slowly (ext4 without a journal scans those freed
/// in the last 30 seconds at every allocation) that is a quarter of a
/// short-lived container's cost.
///
/// A spare is named `.spare-RANDOM-PID-START` for the process that made
/// it: the next open of the state root removes those of a process that has
/// ended. A process may take any spare it finds in its list; a spare that
/// another process's recovery removed first is simply not there to rename,
/// and the creation makes its directory itself.
final class SpareDirectories: Sendable {
    /// The prefix of a spare's name.
    static let prefix = ".spare-"

    private struct State {
        var ready: [String] = []
        var refilling = false
        var closed = false
    }

    private let directory: String
    private let owner: (pid: Int32, startTime: UInt64)
    private let capacity: Int
    private let state = Mutex(State())

    init(directory: String, owner: (pid: Int32, startTime: UInt64), capacity: Int = 2) {
        self.directory = directory
        self.owner = owner
        self.capacity = capacity
    }

    /// Moves a spare to `path` (which must not exist) and returns true, or
    /// returns false when none is ready; either way the spares are made up
    /// again in the background.
    func take(to path: String) -> Bool {
        let (spare, refill) = state.withLock { state -> (String?, Bool) in
            let spare = state.ready.popLast()
            let refill = !state.refilling && !state.closed
            if refill { state.refilling = true }
            return (spare, refill)
        }
        if refill { Reclaimer.shared.run { [self] in self.refill() } }
        guard let spare else { return false }
        return rename(spare, path) == 0
    }

    /// Removes the spares not taken; none is made afterwards.
    func close() {
        let spares = state.withLock { state -> [String] in
            state.closed = true
            defer { state.ready.removeAll() }
            return state.ready
        }
        for spare in spares { try? Sys.removeTree(spare) }
    }

    private func refill() {
        while state.withLock({ $0.ready.count < capacity && !$0.closed }) {
            guard let spare = make() else { break }
            let kept = state.withLock { state -> Bool in
                guard !state.closed else { return false }
                state.ready.append(spare)
                return true
            }
            if !kept { try? Sys.removeTree(spare) }
        }
        state.withLock { $0.refilling = false }
    }

    /// A new spare, or nil when it cannot be made (it is no error: the
    /// creation makes its directory itself).
    private func make() -> String? {
        var generator = SystemRandomNumberGenerator()
        let path = directory + "/" + Self.prefix + String(generator.next() as UInt64, radix: 16) + "-\(owner.pid)-\(owner.startTime)"
        guard mkdir(path, 0o700) == 0 else { return nil }
        let made = mkdir(path + "/upper", 0o755) == 0 && mkdir(path + "/work", 0o755) == 0
            && [(ContainerRuntime.creationMarker, mode_t(0o600)), ("container.log", 0o640), ("state.json.next", 0o600)].allSatisfy { name, mode in
                let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
                if fd >= 0 { Glibc.close(fd) }
                return fd >= 0
            }
        guard made else {
            try? Sys.removeTree(path)
            return nil
        }
        return path
    }

    /// Whether a name in the containers directory is a spare of a process
    /// that has ended (to be removed by recovery).
    static func isLeftover(_ name: String) -> Bool {
        guard name.hasPrefix(prefix) else { return false }
        return ProcessMark.hasEnded(name.dropFirst(prefix.count)) ?? true
    }
}
