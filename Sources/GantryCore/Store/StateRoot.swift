import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The directory that holds all of Gantry's state: blobs, snapshots and the
/// metadata database. See the Architecture article for its layout.
public struct StateRoot: Hashable, Sendable, CustomStringConvertible {
    /// The absolute path of the root.
    public let path: String

    /// A root at `path` (made absolute).
    public init(_ path: String) {
        self.path = absolutePath(path)
    }

    /// `/var/lib/gantry` for root; otherwise `$XDG_DATA_HOME/gantry`, or
    /// `~/.local/share/gantry` when `XDG_DATA_HOME` is unset.
    public static var `default`: StateRoot {
        if geteuid() == 0 { return StateRoot("/var/lib/gantry") }
        let environment = ProcessInfo.processInfo.environment
        if let data = environment["XDG_DATA_HOME"], data.hasPrefix("/") {
            return StateRoot(data + "/gantry")
        }
        return StateRoot(NSHomeDirectory() + "/.local/share/gantry")
    }

    public var description: String { path }

    /// `blobs/`: content-addressed blobs.
    public var blobs: String { path + "/blobs" }
    /// `snapshots/`: one unpacked layer per chain ID.
    public var snapshots: String { path + "/snapshots" }
    /// `tmp/`: scratch space for work in progress.
    public var scratch: String { path + "/tmp" }
    /// `gantry.sqlite`: the metadata database.
    public var database: String { path + "/gantry.sqlite" }
    /// `holds/`: one file per container, listing the snapshots it stands on.
    public var holds: String { path + "/holds" }
    /// `containers/`: one directory per container (state, log, upper layer).
    public var containers: String { path + "/containers" }
    /// `networks/`: one directory per network, with its address leases.
    public var networks: String { path + "/networks" }
    /// `pods/`: one directory per pod, with its namespace files.
    public var pods: String { path + "/pods" }
    /// `volumes/`: one directory per named volume, its data in `_data`.
    public var volumes: String { path + "/volumes" }
    /// `build-staging/`: the scratch space of image builds' steps, each
    /// named for the process that builds.
    public var buildStaging: String { path + "/build-staging" }
    /// `build-cache-mounts/`: the directories `RUN --mount=type=cache`
    /// keeps between builds, emptied with the build cache.
    public var buildCacheMounts: String { path + "/build-cache-mounts" }
    /// `lock`: taken shared by every operation and exclusive by garbage collection.
    public var lockFile: String { path + "/lock" }

    /// Where the root's run-time state lives: what must not outlast the
    /// machine's boot, such as the pid files of the processes that give an
    /// ordinary user's containers their network. For root that is
    /// `/run/gantry/<key>`; for an ordinary user `$XDG_RUNTIME_DIR/gantry/<key>`,
    /// or, without `XDG_RUNTIME_DIR`, `/run/user/<uid>/gantry/<key>` where
    /// the user has that directory and `/tmp/gantry-run-<uid>/<key>`
    /// otherwise. The key (16 hexadecimal digits) is a hash of ``path``, so
    /// that each root has a directory of its own. A run-time directory is a
    /// file system the system empties at boot, so a pid file found there
    /// names a process of this boot.
    public var runtime: String {
        let key = String(stableHash(path.utf8), radix: 16)
        return Self.runtimeBase + "/" + String(repeating: "0", count: 16 - key.count) + key
    }

    /// The directory of every root's run-time directory, for this process's user.
    package static var runtimeBase: String {
        let uid = geteuid()
        if uid == 0 { return "/run/gantry" }
        if let directory = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], directory.hasPrefix("/"), Self.isOwnPrivateDirectory(directory) {
            return directory + "/gantry"
        }
        if Self.isOwnPrivateDirectory("/run/user/\(uid)") { return "/run/user/\(uid)/gantry" }
        return "/tmp/gantry-run-\(uid)"
    }

    /// Whether `path` is a directory (not a link) of this process's user
    /// that no other user may write to.
    package static func isOwnPrivateDirectory(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR && status.st_uid == geteuid() && status.st_mode & 0o022 == 0
    }

    /// Removes the run-time directory if nothing is left in it.
    package func removeRuntimeIfEmpty() {
        rmdir(runtime)
    }

    /// Creates the root's directories if they are missing. The root is
    /// searchable but not listable by others, and snapshots (which hold
    /// set-user-ID files from images) are private to the owner.
    package func create() throws {
        try Sys.makeDirectories(path, mode: 0o711)
        try Sys.makeDirectories(snapshots, mode: 0o700)
        try Sys.makeDirectories(scratch, mode: 0o700)
    }
}
