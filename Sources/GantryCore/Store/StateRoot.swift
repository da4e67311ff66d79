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
    /// `lock`: taken shared by every operation and exclusive by garbage collection.
    public var lockFile: String { path + "/lock" }

    /// Creates the root's directories if they are missing. The root is
    /// searchable but not listable by others, and snapshots (which hold
    /// set-user-ID files from images) are private to the owner.
    package func create() throws {
        try Sys.makeDirectories(path, mode: 0o711)
        try Sys.makeDirectories(snapshots, mode: 0o700)
        try Sys.makeDirectories(scratch, mode: 0o700)
    }
}
