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
    ///     default. An ordinary user's runtime gives them to its root only.
    /// - Throws: ``RuntimeError`` naming the path, when a component is not a
    ///   directory or the owner cannot be given.
    public func makeDirectories(_ path: String, mode: UInt32 = 0o755, owner: (uid: UInt32, gid: UInt32)? = nil) async throws {
        let spec = try record.spec
        let host: (uid: UInt32, gid: UInt32)?
        var refusal: RuntimeError?
        if let owner, owner != (0, 0), runtime.userNamespace != nil {
            // Refused only when a directory is to be made.
            refusal = RuntimeError(.invalidSpec, "cannot give \(path) in container \(name) to \(owner.uid):\(owner.gid): an ordinary user's runtime makes files for the container's root only")
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
    }

    /// Whether `path` is a directory in the container's root file system
    /// (a final symlink followed, within the root); false when it is
    /// missing or something else.
    public func isDirectory(_ path: String) async throws -> Bool {
        let name = name
        let found = Mutex(false)
        try await blocking { [self] in
            try withRootFileSystem(writable: false) { root in
                if case .success(let fd) = FileTree.container(root, name).open(path, flags: GANTRY_O_PATH | O_DIRECTORY) {
                    close(fd)
                    found.withLock { $0 = true }
                }
            }
        }
        return found.withLock { $0 }
    }
}
