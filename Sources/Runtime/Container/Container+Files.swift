import Foundation
import CGantrySystem
import GantryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension Container {
    /// Makes the directory `path` in the container's root file system and
    /// whichever of its parents are missing, as `mkdir -p` does; what exists
    /// is left as it is. Paths resolve within the container's root, symlinks
    /// and `..` included.
    ///
    /// - Parameters:
    ///   - path: An absolute path in the container.
    ///   - mode: The permission bits of the directories made.
    ///   - owner: The container user and group to own them; its root by
    ///     default. An ordinary user's runtime makes them as the container's
    ///     root and then gives them away (not in a running container).
    /// - Throws: ``RuntimeError`` naming the path, when a component is not a
    ///   directory or the owner cannot be given.
    public func makeDirectories(_ path: String, mode: UInt32 = 0o755, owner: (uid: UInt32, gid: UInt32)? = nil) async throws {
        try await makeMissingDirectories(path, mode: mode, owner: owner)
    }

    /// Makes the directories ``makeDirectories(_:mode:owner:)`` makes, and
    /// returns those made (absolute paths in the container, parents first).
    @discardableResult
    package func makeMissingDirectories(_ path: String, mode: UInt32 = 0o755, owner: (uid: UInt32, gid: UInt32)? = nil) async throws -> [String] {
        let spec = try record.spec
        let host: (uid: UInt32, gid: UInt32)?
        var refusal: RuntimeError?
        var laterOwner: (uid: UInt32, gid: UInt32)?
        if let owner, owner != (0, 0), runtime.userNamespace != nil {
            // Made as the container's root, then given away in its user
            // namespace; not under a running container's feet.
            if try record.status == .running || record.status == .paused {
                refusal = RuntimeError(.invalidSpec, "cannot give \(path) in running container \(name) to \(owner.uid):\(owner.gid): an ordinary user's runtime makes files for the container's root only")
            }
            laterOwner = owner
            host = nil
        } else if let owner, owner != (0, 0) {
            func mapped(_ id: UInt32, _ mappings: [ContainerSpec.IDMapping]) -> UInt32? {
                guard !mappings.isEmpty else { return id }
                return mappings.first { id >= $0.containerID && id - $0.containerID < $0.size }.map { $0.hostID + (id - $0.containerID) }
            }
            guard let uid = mapped(owner.uid, spec.uidMappings), let gid = mapped(owner.gid, spec.gidMappings) else {
                throw RuntimeError(.invalidSpec, "cannot give \(path) in container \(name) to \(owner.uid):\(owner.gid): its user namespace does not map them")
            }
            host = (uid, gid)
        } else {
            host = nil
        }
        let components = CopyPath(path).components
        let name = name
        let madePaths = Mutex<[String]>([])
        try await blocking { [self, refusal] in
            try withRootFileSystem(writable: true) { root in
                let tree = FileTree.container(root, name)
                var parent = try tree.openDirectory("/")
                defer { close(parent) }
                var current = ""
                for component in components {
                    current += "/" + component
                    var made = false
                    if let refusal, faccessat(parent, component, F_OK, AT_SYMLINK_NOFOLLOW) != 0 { throw refusal }
                    if mkdirat(parent, component, mode_t(mode)) == 0 {
                        made = true
                    } else if errno != EEXIST {
                        throw RuntimeError(.systemCall, "cannot make \(tree.describe(current))", underlying: Sys.errno)
                    }
                    // Opened through the root, so that a symlink stays inside it.
                    let next = try tree.openDirectory(current)
                    if made {
                        madePaths.withLock { $0.append(current) }
                        if let host, fchown(next, host.uid, host.gid) != 0 {
                            close(next)
                            throw RuntimeError(.systemCall, "cannot give \(tree.describe(current)) to \(host.uid):\(host.gid)", underlying: Sys.errno)
                        }
                        fchmod(next, mode_t(mode))
                    }
                    close(parent)
                    parent = next
                }
            }
        }
        let made = madePaths.withLock { $0 }
        if let laterOwner { try await giveOwner(made, to: laterOwner) }
        return made
    }

    /// Gives the files at `paths` (absolute, in the container, none through
    /// a symlink) to the container user and group `owner`, keeping their
    /// set-ID bits, as the root of a user namespace with the container's
    /// mapping: what an ordinary user's runtime, which places files as the
    /// container's root, does afterwards. For a container that is not
    /// running, whose files are in its upper directory (made or copied
    /// since its image). Paths that are not there are passed over.
    ///
    /// - Throws: ``RuntimeError`` naming the path that cannot be given, or
    ///   `invalidState` for a running container or a root runtime (which
    ///   gives owners as it places files).
    package func giveOwner(_ paths: [String], to owner: (uid: UInt32, gid: UInt32)) async throws {
        guard !paths.isEmpty else { return }
        let record = try record
        guard record.status != .running && record.status != .paused else {
            throw RuntimeError(.invalidState, "cannot give files of container \(name) new owners while it runs")
        }
        guard let userNamespace = runtime.userNamespace else {
            throw RuntimeError(.invalidState, "a root runtime gives files their owners as it places them, not afterwards")
        }
        let upper = runtime.containerDirectory(id) + "/upper"
        let name = name
        try await blocking {
            var owners: [FileOwner] = []
            for path in paths {
                let relative = String(CopyPath(path).components.joined(separator: "/"))
                var status = stat()
                guard !relative.isEmpty, lstat(upper + "/" + relative, &status) == 0 else { continue }
                let setID = status.st_mode & S_IFMT == S_IFREG && status.st_mode & 0o6000 != 0
                owners.append(FileOwner(path: Array(relative.utf8), uid: owner.uid, gid: owner.gid, mode: setID ? UInt32(status.st_mode & 0o7777) : nil))
            }
            do {
                try userNamespace.setOwners(owners, beneath: upper)
            } catch {
                throw RuntimeError(.systemCall, "cannot give files of container \(name) to \(owner.uid):\(owner.gid)", underlying: error)
            }
        }
    }

    /// Whether `path` exists in the container's root file system (a final
    /// symlink not followed; every other resolved within the root).
    public func fileExists(_ path: String) async throws -> Bool {
        try await opens(path, flags: GANTRY_O_PATH | O_NOFOLLOW)
    }

    /// Whether `path` is a directory in the container's root file system
    /// (a final symlink followed, within the root); false when it is
    /// missing or something else.
    public func isDirectory(_ path: String) async throws -> Bool {
        try await opens(path, flags: GANTRY_O_PATH | O_DIRECTORY)
    }

    /// Whether `path` opens with `flags` in the container's root file system.
    private func opens(_ path: String, flags: Int32) async throws -> Bool {
        let name = name
        let found = Mutex(false)
        try await blocking { [self] in
            try withRootFileSystem(writable: false) { root in
                if case .success(let fd) = FileTree.container(root, name).open(path, flags: flags) {
                    close(fd)
                    found.withLock { $0 = true }
                }
            }
        }
        return found.withLock { $0 }
    }
}
