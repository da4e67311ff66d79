import CGantrySystem
import Foundation
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

extension ContainerRuntime {
    /// The directory of a container's secrets and configs: in the state
    /// root's run-time directory, a tmpfs, which the machine empties at boot.
    func providedDirectory(_ id: String) -> String {
        images.root.runtime + "/provided/" + id
    }

    /// Writes the container's secrets and configs that its directory of
    /// provided files lacks (all of them at its creation; after a restart
    /// of the machine, those whose source can be read again), each owned
    /// and with the mode the container is to see. A value given as an
    /// environment variable is kept beside, readable by this process only.
    func provideFiles(_ spec: ContainerSpec, process: ResolvedProcess, id: String, name: String) throws {
        let files = spec.providedFiles
        guard !files.isEmpty else { return }
        let directory = providedDirectory(id)
        do {
            try NetworkHost.withRuntime(of: images.root) {
                try Self.makeMemoryDirectory(directory, size: (files.count * 2 + 1) * ProvidedFile.limit)
            }
        } catch {
            try? removeProvidedFiles(id)
            throw RuntimeError(.invalidSpec, "container \(name) has secrets or configs, which are kept in memory only: \(error)")
        }
        var written: [(temporary: String, final: String)] = []
        var owners: [FileOwner] = []
        defer { for file in written { unlink(directory + "/" + file.temporary) } }
        for file in files {
            let wanted = (file.mounted ? [file.fileName] : []) + (file.environmentVariable == nil ? [] : [file.fileName + ".variable"])
            let missing = wanted.filter { access(directory + "/" + $0, F_OK) != 0 }
            guard !missing.isEmpty else { continue }
            let bytes = try file.read(container: "container \(name)")
            for fileName in missing {
                let temporary = "." + fileName
                let path = directory + "/" + temporary
                unlink(path)
                guard let descriptor = OwnedDescriptor(opening: path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode: 0o600) else {
                    throw RuntimeError(.systemCall, "cannot write the \(file.kind.rawValue) \(file.name) of container \(name) in \(directory)", underlying: Sys.errno)
                }
                written.append((temporary, fileName))
                try writeAll(descriptor.raw, bytes, what: path)
                // The copy for the variable stays this process's, mode 0400.
                guard fileName == file.fileName else {
                    fchmod(descriptor.raw, 0o400)
                    continue
                }
                let uid = file.uid ?? process.uid
                let gid = file.gid ?? process.gid
                if userNamespace != nil {
                    // An ordinary user is its containers' root; their other
                    // users are given in their namespace.
                    if uid != 0 || gid != 0 { owners.append(FileOwner(path: Array(temporary.utf8), uid: uid, gid: gid, mode: file.mode)) }
                } else if spec.namespaces.contains(.user) {
                    guard let hostUID = UserNamespaceMapping.hostID(uid, in: spec.uidMappings),
                          let hostGID = UserNamespaceMapping.hostID(gid, in: spec.gidMappings) else {
                        throw RuntimeError(.invalidSpec, "container \(name): the \(file.kind.rawValue) \(file.name) is to belong to \(uid):\(gid), which its user namespace does not map")
                    }
                    guard fchown(descriptor.raw, hostUID, hostGID) == 0 else {
                        throw RuntimeError(.systemCall, "cannot give the \(file.kind.rawValue) \(file.name) of container \(name) to \(hostUID):\(hostGID)", underlying: Sys.errno)
                    }
                } else if fchown(descriptor.raw, uid, gid) != 0 {
                    throw RuntimeError(.systemCall, "cannot give the \(file.kind.rawValue) \(file.name) of container \(name) to \(uid):\(gid)", underlying: Sys.errno)
                }
                fchmod(descriptor.raw, mode_t(file.mode))
            }
        }
        try userNamespace?.setOwners(owners, beneath: directory)
        for file in written {
            guard rename(directory + "/" + file.temporary, directory + "/" + file.final) == 0 else {
                throw RuntimeError(.systemCall, "cannot put the secrets and configs of container \(name) in place in \(directory)", underlying: Sys.errno)
            }
        }
        written = []
    }

    /// The mounts of the container's secrets and configs, read-only, and
    /// the variables of the secrets given as such.
    func providedMounts(_ record: ContainerRecord) throws -> (mounts: [PlannedMount], environment: [String]) {
        let files = record.spec.providedFiles
        guard !files.isEmpty else { return ([], []) }
        try provideFiles(record.spec, process: record.process, id: record.id, name: record.name)
        let directory = providedDirectory(record.id)
        var mounts: [PlannedMount] = []
        var environment: [String] = []
        for file in files {
            if file.mounted {
                let flags = ContainerDefaults.rdonly | ContainerDefaults.nosuid | ContainerDefaults.nodev | ContainerDefaults.noexec
                mounts.append(.bind(directory + "/" + file.fileName, at: file.path, flags: flags, directory: false))
            }
            if let variable = file.environmentVariable {
                let path = directory + "/" + file.fileName + ".variable"
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw RuntimeError(.systemCall, "cannot read the secret \(file.name) of container \(record.name) in \(directory)", underlying: Sys.errno)
                }
                environment.append(variable + "=" + String(decoding: data, as: UTF8.self))
            }
        }
        return (mounts, environment)
    }

    /// The variables of the container's secrets given as such (what its
    /// processes and those run in it get).
    func providedVariables(_ record: ContainerRecord) throws -> [String] {
        guard record.spec.secrets.contains(where: { $0.environmentVariable != nil }) else { return [] }
        return try providedMounts(record).environment
    }

    /// `environment` with `variables` (`KEY=VALUE`) in place of its own of the same names.
    static func overriding(_ environment: [String], with variables: [String]) -> [String] {
        guard !variables.isEmpty else { return environment }
        let names = Set(variables.map { $0.prefix { $0 != "=" } })
        return environment.filter { !names.contains($0.prefix { $0 != "=" }) } + variables
    }

    /// Makes `directory` (0700, with its parents) on a file system in
    /// memory: where it is not in one, root mounts a tmpfs of `size` bytes
    /// there (``removeMemoryDirectory(_:)`` unmounts it); anyone else gets
    /// an error saying how to have one.
    package static func makeMemoryDirectory(_ directory: String, size: Int) throws {
        try Sys.makeDirectories(directory, mode: 0o700)
        if gantry_is_in_memory(directory) != 1, geteuid() == 0 {
            // Where /run is not a tmpfs (in some containers).
            guard mount("tmpfs", directory, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=0700,size=\(size)") == 0 else {
                throw RuntimeError(.systemCall, "cannot mount a tmpfs at \(directory)", underlying: Sys.errno)
            }
        }
        guard gantry_is_in_memory(directory) == 1 else {
            throw RuntimeError(.invalidSpec, "\(directory) is not on a tmpfs: set XDG_RUNTIME_DIR to a tmpfs directory of this user's (as systemd's /run/user/UID is)")
        }
    }

    /// Removes `root`'s run-time directory if nothing is left in it and no
    /// other process is making something there.
    package static func removeRuntimeIfUnused(_ root: StateRoot) {
        NetworkHost.removeRuntimeIfUnused(of: root)
    }

    /// Removes what ``makeMemoryDirectory(_:size:)`` made, and the tmpfs it mounted.
    package static func removeMemoryDirectory(_ directory: String, mapping: UserNamespaceMapping? = nil) throws {
        guard access(directory, F_OK) == 0 else { return }
        if geteuid() == 0 { umount2(directory, Int32(MNT_DETACH)) }
        try removeTree(directory, mapping: mapping)
    }

    /// Removes a container's secrets and configs.
    func removeProvidedFiles(_ id: String) throws {
        let directory = providedDirectory(id)
        try Self.removeMemoryDirectory(directory, mapping: userNamespace)
        rmdir(images.root.runtime + "/provided")
        NetworkHost.removeRuntimeIfUnused(of: images.root)
    }

    /// Removes the secrets and configs of containers that are gone.
    func removeProvidedLeftovers() {
        let base = images.root.runtime + "/provided"
        for id in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where access(containerDirectory(id), F_OK) != 0 {
            do {
                try removeProvidedFiles(id)
            } catch {
                logger.warning("cannot remove the secrets of a container that is gone", metadata: ["path": "\(base)/\(id)", "error": "\(error)"])
            }
        }
    }
}
