import CGantrySystem
public import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A named volume: a directory of the state root that containers mount,
/// whose data outlives them.
public struct VolumeRecord: Hashable, Sendable, Codable {
    /// The unique name.
    public var name: String
    /// Free-form labels.
    public var labels: [String: String]
    /// When it was created.
    public var createdAt: Date
    /// The directory holding its data (what containers mount).
    public var mountpoint: String
}

/// The named volumes of a state root.
///
/// Each is a directory under `volumes/`, as Docker lays them out:
/// `volumes/<name>/volume.json` and the data in `volumes/<name>/_data`.
/// A volume is created on first use by a container, or explicitly; it is
/// removed only when no container (running or stopped) mounts it.
///
/// Removing deletes whole trees, so creating and removing are `async`:
/// the work runs on Gantry's threads for blocking work, never on Swift's
/// cooperative pool.
public final class Volumes: Sendable {
    let directory: String
    /// For a process that is not root: the user namespace whose root makes
    /// and removes what containers' users own.
    let userNamespace: UserNamespaceMapping?
    let logger: Logger
    /// The names of the containers whose specs mount a volume.
    private let users: @Sendable (String) throws -> [String]

    init(root: String, userNamespace: UserNamespaceMapping? = nil, logger: Logger, users: @escaping @Sendable (String) throws -> [String]) throws {
        directory = root
        self.userNamespace = userNamespace
        self.logger = logger
        self.users = users
        try Sys.makeDirectories(directory, mode: 0o711)
        // Searchable, not listable: a container that root runs in a user
        // namespace mounts its volumes from below, as its mapped root.
        chmod(directory, 0o711)
    }

    /// Creates a volume.
    ///
    /// - Parameters:
    ///   - name: unique among the root's volumes; a random one when nil.
    ///   - labels: free-form labels.
    /// - Throws: ``RuntimeError`` with code `invalidSpec` for a taken or invalid name.
    @discardableResult
    public func create(_ name: String? = nil, labels: [String: String] = [:]) async throws -> VolumeRecord {
        try await offload { [self] _ in try create(name, labels: labels) }
    }

    /// Creates a volume, on the calling thread.
    @discardableResult
    func create(_ name: String? = nil, labels: [String: String] = [:]) throws -> VolumeRecord {
        let name = name ?? ContainerRuntime.newID()
        try ContainerRuntime.validate(name: name, kind: "volume")
        let path = directory + "/" + name
        let record = VolumeRecord(name: name, labels: labels, createdAt: Date(), mountpoint: path + "/_data")
        let created = try FileIO.createRecordDirectory(name, in: directory, mode: 0o711) { staging in
            // Containers' users must reach the data; the volume's own directory stays closed.
            guard mkdir(staging + "/_data", 0o755) == 0 else { throw RuntimeError(.systemCall, "cannot create \(staging)/_data", underlying: Sys.errno) }
            try FileIO.replaceStateFile(staging + "/volume.json", with: ContainerRuntime.encoder.encode(record))
        }
        guard created else {
            if let damaged = damaged().first(where: { $0.name == name }) {
                throw RuntimeError(.invalidState, "volume \(name) exists but its record \(damaged.file) cannot be read (\(damaged.reason)); \(damaged.advice(kind: "volume"))")
            }
            throw RuntimeError(.invalidSpec, "a volume named \(name) already exists")
        }
        logger.debug("created volume", metadata: ["volume": "\(name)"])
        return record
    }

    /// The volume named `name`.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   when its record cannot be read.
    public func volume(_ name: String) throws -> VolumeRecord {
        try FileIO.readRecord(VolumeRecord.self, kind: "volume", named: name, in: directory, file: "volume.json", damaged: damaged)
    }

    /// Every volume, by name.
    public func list() throws -> [VolumeRecord] {
        FileIO.readNamedRecords(VolumeRecord.self, in: directory, file: "volume.json").sorted { $0.name < $1.name }
    }

    /// The names of the containers that mount the volume.
    public func containers(using name: String) throws -> [String] {
        try users(name).sorted()
    }

    /// Removes a volume and its data.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   while a container mounts it.
    public func remove(_ name: String) async throws {
        try await offload { [self] _ in try remove(name) }
    }

    /// Removes a volume and its data, on the calling thread.
    func remove(_ name: String) throws {
        _ = try volume(name)
        let using = try containers(using: name)
        guard using.isEmpty else {
            throw RuntimeError(.invalidState, "volume \(name) is in use by \(using.joined(separator: ", ")); remove those containers first")
        }
        try removeTree(directory + "/" + name, mapping: userNamespace)
    }

    /// Removes every volume no container mounts; returns their names.
    @discardableResult
    public func prune() async throws -> [String] {
        try await offload { [self] _ in try prune() }
    }

    /// Removes every volume no container mounts, on the calling thread.
    @discardableResult
    func prune() throws -> [String] {
        try list().compactMap { record in
            guard try containers(using: record.name).isEmpty else { return nil }
            try removeTree(directory + "/" + record.name, mapping: userNamespace)
            return record.name
        }
    }

    /// The data directory of a volume that exists.
    func dataDirectory(_ name: String) throws -> String {
        try volume(name).mountpoint
    }

    // MARK: - Containers

    /// Makes the volumes a container mounts ready: each missing one is
    /// created, and each empty one is filled with what the root file
    /// system (`layers`, top-most first) has at its mount point, its owners
    /// shifted to the host IDs `mapping` gives them (a container that root
    /// runs in a user namespace: its root then owns the new volume).
    func prepare(_ mounts: [ContainerSpec.Mount], layers: [String], mapping: UserNamespaceMapping? = nil) async throws {
        for case .volume(let name, let target, _) in mounts {
            do {
                _ = try volume(name)
            } catch let error as RuntimeError where error.code == .notFound {
                do {
                    try await create(name)
                } catch let error as RuntimeError where error.code == .invalidSpec && (try? volume(name)) != nil {
                    // Another container made it meanwhile.
                }
            }
            if mapping != nil { chmod(directory + "/" + name, 0o711) }
            try await seed(name, from: layers, at: target, mapping: mapping)
        }
    }

    /// Copies the image's content at `target` into the volume, if the
    /// volume is empty, under the volume's lock.
    private func seed(_ name: String, from layers: [String], at target: String, mapping: UserNamespaceMapping?) async throws {
        let record = try volume(name)
        guard let lock = OwnedDescriptor(opening: directory + "/" + name, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { throw RuntimeError(.notFound, "no volume is named \(name)", underlying: Sys.errno) }
        flock(lock.raw, LOCK_EX)
        guard ((try? FileManager.default.contentsOfDirectory(atPath: record.mountpoint)) ?? []).isEmpty else { return }
        if let userNamespace {
            // Files of the namespace's other IDs: copied by its root.
            try await offload { _ in try userNamespace.copy(target, from: layers, into: record.mountpoint) }
            logger.debug("seeded volume from the image", metadata: ["volume": "\(name)", "path": "\(target)"])
            return
        }
        try await Self.withMergedRoot(layers) { root in
            // Resolved inside the root: an image's symlinks cannot point the copy elsewhere.
            let source = gantry_openat2(root, target, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0,
                                        UInt64(GANTRY_RESOLVE_IN_ROOT | GANTRY_RESOLVE_NO_MAGICLINKS))
            guard source >= 0 else { return }  // nothing there to copy
            defer { close(source) }
            guard let destination = OwnedDescriptor(opening: record.mountpoint, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) else { throw RuntimeError(.systemCall, "cannot open \(record.mountpoint)", underlying: Sys.errno) }
            var info = stat()
            if fstat(source, &info) == 0 {
                // The mount point takes the image directory's owner and mode, as in Docker.
                fchown(destination.raw, info.st_uid, info.st_gid)
                fchmod(destination.raw, info.st_mode & 0o7777)
            }
            try FileIO.copyTree(from: source, to: destination.raw, path: "volume \(name)")
        }
        if let mapping { try Self.shiftOwners(record.mountpoint, mapping) }
        logger.debug("seeded volume from the image", metadata: ["volume": "\(name)", "path": "\(target)"])
    }

    /// Gives every file under `path` (and `path`) the host IDs `mapping`
    /// maps its owner to (modes kept: a new owner clears set-ID bits).
    static func shiftOwners(_ path: String, _ mapping: UserNamespaceMapping) throws {
        let entries = [""] + ((FileManager.default.enumerator(atPath: path)?.allObjects as? [String]) ?? []).map { "/" + $0 }
        for entry in entries {
            var info = stat()
            guard lstat(path + entry, &info) == 0,
                  let uid = UserNamespaceMapping.hostID(info.st_uid, in: mapping.uids),
                  let gid = UserNamespaceMapping.hostID(info.st_gid, in: mapping.gids) else { continue }
            guard lchown(path + entry, uid, gid) == 0 else {
                throw RuntimeError(.systemCall, "cannot give \(path + entry) to the container's user namespace", underlying: Sys.errno)
            }
            if (info.st_mode & S_IFMT) != S_IFLNK { chmod(path + entry, info.st_mode & 0o7777) }
        }
    }

    /// Calls `body` with a directory descriptor of the merged root file
    /// system of `layers`: the one layer itself, or a read-only overlay
    /// mounted in a mount namespace of a thread of its own, so that the
    /// mount is gone with the thread whatever happens.
    private static func withMergedRoot(_ layers: [String], _ body: @escaping @Sendable (Int32) throws -> Void) async throws {
        if layers.count == 1 {
            guard let root = OwnedDescriptor(opening: layers[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { throw RuntimeError(.systemCall, "cannot open \(layers[0])", underlying: Sys.errno) }
            return try body(root.raw)
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                continuation.resume(with: Result {
                    guard gantry_unshare_mounts() == 0 else {
                        throw RuntimeError(.systemCall, "cannot make a mount namespace to read the image", underlying: Sys.errno)
                    }
                    // Any directory will do as the mount point: only this thread sees it.
                    let point = layers[0]
                    let options = "lowerdir=" + layers.joined(separator: ":")
                    guard mount("overlay", point, "overlay", UInt(MS_RDONLY | MS_NODEV | MS_NOSUID), options) == 0 else {
                        throw RuntimeError(.systemCall, "cannot mount the image's layers", underlying: Sys.errno)
                    }
                    guard let root = OwnedDescriptor(opening: point, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { throw RuntimeError(.systemCall, "cannot open the image's root", underlying: Sys.errno) }
                    try body(root.raw)
                })
            }
            thread.name = "gantry-volume-seed"
            thread.start()
        }
    }
}
