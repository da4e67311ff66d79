import CArchive
import CGantrySystem
import Dispatch
import Foundation
import OCIImage
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// How files are copied into and out of a container.
public struct CopyOptions: Hashable, Sendable {
    /// Whether a source that is a symlink is copied as what it points to
    /// (`docker cp -L`) rather than as the link itself. Inside a container,
    /// the link is resolved within the container's root.
    public var followSymlink: Bool
    /// Whether copied files keep the owners they have at the source
    /// (`docker cp -a`). Otherwise files copied in belong to the container's
    /// root user, and files copied out to the calling user.
    public var keepOwners: Bool

    /// Creates options.
    public init(followSymlink: Bool = false, keepOwners: Bool = false) {
        self.followSymlink = followSymlink
        self.keepOwners = keepOwners
    }
}

extension Container {
    // MARK: - Copying

    /// Copies a file or directory of the container to the host, as
    /// `docker cp CONTAINER:SRC DEST` does.
    ///
    /// - An existing directory `hostPath` receives the source under its own
    ///   name; `SRC/.` copies a directory's contents instead.
    /// - A missing `hostPath` is created: a copy of the file, or a directory
    ///   with the source directory's contents. Its parent must exist, and a
    ///   file cannot be copied to a missing path ending in `/`.
    /// - An existing file is replaced by a file; a directory cannot replace it.
    ///
    /// The container's contents are untrusted: `path` is resolved within its
    /// root (a symlink to `/` leads to the container's root, not the host's),
    /// symlinks in the tree are copied as symlinks, and the copy is extracted
    /// beneath the destination, so no entry can write elsewhere on the host.
    /// Device nodes are not created on the host and files lose their
    /// set-user-ID and set-group-ID bits.
    ///
    /// - Throws: ``RuntimeError`` naming the container and the path: `notFound`
    ///   when the source or the destination's directory is missing,
    ///   `invalidSpec` for a destination that cannot take the source,
    ///   `invalidState` when the container is removed or the copy refused
    ///   unsafe entries, `systemCall` otherwise.
    public func copyOut(_ path: String, to hostPath: String, options: CopyOptions = CopyOptions()) async throws {
        try await blocking { [self] in
            try withRootFileSystem(writable: false) { root in
                let container = FileTree.container(root, name)
                let source = try CopySource(path, in: container, follow: options.followSymlink)
                defer { close(source.fd) }
                let destination = try CopyDestination(hostPath, in: .host, for: source)
                defer { close(destination.fd) }
                try transfer(source, to: destination, policy: Self.hostPolicy(options), options: options)
            }
        }
    }

    /// Copies a file or directory of the host into the container, as
    /// `docker cp SRC CONTAINER:DEST` does, with the rules of
    /// ``copyOut(_:to:options:)`` for the destination. `path` is resolved
    /// within the container's root, and nothing is written outside the
    /// destination inside it, whatever symlinks the container has planted.
    ///
    /// A running container is reached through its process's root; a created
    /// or stopped one through its root file system (its overlay mounted
    /// privately for the copy), without its volumes.
    ///
    /// - Throws: ``RuntimeError`` as ``copyOut(_:to:options:)`` does.
    public func copyIn(from hostPath: String, to path: String, options: CopyOptions = CopyOptions()) async throws {
        try await blocking { [self] in
            let source = try CopySource(hostPath, in: .host, follow: options.followSymlink)
            defer { close(source.fd) }
            try withRootFileSystem(writable: true) { root in
                let destination = try CopyDestination(path, in: FileTree.container(root, name), for: source)
                defer { close(destination.fd) }
                try transfer(source, to: destination, policy: containerPolicy(options), options: options)
            }
        }
    }

    /// Writes a tar archive of a file or directory of the container to
    /// `descriptor` (which stays open), as `docker cp CONTAINER:SRC -` does:
    /// the source under its own name, or a directory's contents for `SRC/.`.
    /// Symlinks are stored as symlinks, and owners as they are.
    ///
    /// - Throws: ``RuntimeError`` naming the container and the path.
    public func archive(_ path: String, to descriptor: FileDescriptor, options: CopyOptions = CopyOptions()) async throws {
        try await blocking { [self] in
            try withRootFileSystem(writable: false) { root in
                let source = try CopySource(path, in: FileTree.container(root, name), follow: options.followSymlink)
                defer { close(source.fd) }
                let archiver = try TreeArchiver(output: descriptor.rawValue, display: source.display)
                try archiver.add(source, as: source.contentsOnly ? nil : source.name)
                try archiver.finish()
            }
        }
    }

    /// Extracts a tar archive (uncompressed, gzip or zstd) read from
    /// `descriptor` to its end into the existing directory `path` of the
    /// container, as `docker cp - CONTAINER:DEST` does. No entry can create or
    /// change anything outside that directory: absolute names, `..` and
    /// paths through symlinks leading out are refused.
    ///
    /// - Throws: ``RuntimeError`` naming the container and the path, with
    ///   code `invalidState` listing refused entries.
    public func extract(from descriptor: FileDescriptor, into path: String, options: CopyOptions = CopyOptions()) async throws {
        try await blocking { [self] in
            try withRootFileSystem(writable: true) { root in
                let tree = FileTree.container(root, name)
                let directory = try tree.openDirectory(path)
                defer { close(directory) }
                try Self.extract(descriptor.rawValue, from: "the archive read from descriptor \(descriptor.rawValue)", into: directory,
                                 named: tree.describe(path), policy: containerPolicy(options))
            }
        }
    }

    // MARK: - Reaching the root file system

    /// Calls `body` with a descriptor of the container's root directory.
    ///
    /// A running (or paused) container's root is its main process's,
    /// through `/proc/<pid>/root`, checked to belong to that process still.
    /// A created or stopped container's overlay is mounted for the copy as
    /// a detached mount that no path reaches and that goes away with its
    /// descriptor, so it cannot outlive the copy, even on a crash.
    func withRootFileSystem<T>(writable: Bool, _ body: (Int32) throws -> T) throws -> T {
        let record = try record
        if writable, record.spec.readOnlyRootfs {
            throw RuntimeError(.invalidState, "cannot copy into container \(name): its root file system is read-only")
        }
        let root: Int32
        var overlayLock: Int32 = -1
        defer { if overlayLock >= 0 { close(overlayLock) } }
        switch record.status {
        case .running, .paused:
            root = try openProcessRoot(record)
        case .created, .stopped:
            if record.usesOverlay {
                // One overlay on the upper directory at a time: start refuses
                // during a copy, a copy that lost the race to a start uses
                // the process's root, and a copy after the end waits until
                // the container's own overlay is torn down (in the
                // background), when the lock the start took is released.
                overlayLock = try lockOverlay(what: "copy files of")
                let now = try self.record
                let running = now.status == .running || now.status == .paused
                root = running ? try openProcessRoot(now) : try mountOverlay(now, writable: writable)
            } else {
                root = try openDirectoryRoot(record)
            }
        case .removed:
            throw RuntimeError(.invalidState, "cannot copy files of container \(name): it is removed")
        }
        defer { close(root) }
        return try body(root)
    }

    /// Takes the lock of the container's upper directory, held while an
    /// overlay other than the container's own is mounted over it; a
    /// descriptor to close, or an error naming `what` was to be done.
    func lockOverlay(what: String, waiting patience: Duration = .milliseconds(100)) throws -> Int32 {
        let upper = runtime.containerDirectory(id) + "/upper"
        let fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot open \(upper)", underlying: Sys.errno) }
        // A lock just released can stay held for a moment: a process this
        // one forks meanwhile has the descriptor until it executes. So a
        // holder is waited for briefly before the answer is no.
        let attempts = Int(patience / .milliseconds(2))
        for attempt in 0 ... attempts {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return fd }
            if attempt < attempts { usleep(2000) }
        }
        close(fd)
        throw RuntimeError(.invalidState, "cannot \(what) container \(name) now: a copy of its files or its start is in progress")
    }

    private func openProcessRoot(_ record: ContainerRecord) throws -> Int32 {
        var pidfd = duplicatePidfd()
        if pidfd < 0, let opened = ContainerRuntime.openPidfd(pid: record.pid, startTime: record.pidStartTime) { pidfd = opened }
        guard pidfd >= 0, var pid = record.pid else {
            throw RuntimeError(.invalidState, "cannot copy files of container \(name): its process is gone")
        }
        if runtime.userNamespace != nil, record.spec.initProcess || record.spec.lifetime != .boundToHost {
            // An ordinary user may not enter an init (see exec): its program's root is the same.
            close(pidfd)
            guard let program = Self.programOfInit(pid) else {
                throw RuntimeError(.invalidState, "cannot copy files of container \(name): its program has ended")
            }
            (pidfd, pid) = program
        }
        defer { close(pidfd) }
        let root = open("/proc/\(pid)/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let error = Sys.errno
        // The pidfd still names a live process, so the pid was not reused
        // between the two: the root opened is the container's.
        guard root >= 0, gantry_pidfd_signal(pidfd, 0) == 0 else {
            if root >= 0 { close(root) }
            throw RuntimeError(.invalidState, "cannot open the root of container \(name): its process \(pid) is gone",
                               underlying: root >= 0 ? nil : error)
        }
        return root
    }

    private func openDirectoryRoot(_ record: ContainerRecord) throws -> Int32 {
        let root = open(record.layers[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else {
            throw RuntimeError(.systemCall, "cannot open the root file system \(record.layers[0]) of container \(name)", underlying: Sys.errno)
        }
        return root
    }

    /// Mounts the container's overlay as the launcher does, detached.
    private func mountOverlay(_ record: ContainerRecord, writable: Bool) throws -> Int32 {
        let directory = runtime.containerDirectory(id)
        func failure(_ step: String) -> RuntimeError {
            let error = Sys.errno
            let code: RuntimeError.Code = error == .noFunction ? .unsupportedHost : .systemCall
            return RuntimeError(code, "cannot mount the root file system of container \(name) for a copy (\(step))", underlying: error)
        }
        if Self.volatileUpper(record) {
            // A volatile overlay leaves a mark that refuses the next mount
            // unless removed; the container has not been through a crash
            // (it would have been removed), so its upper directory is whole.
            unlink(directory + "/work/work/incompat/volatile/dirty")
            rmdir(directory + "/work/work/incompat/volatile")
            rmdir(directory + "/work/work/incompat")
        }
        if let mapping = runtime.userNamespace {
            // An ordinary user makes it as the root of its user namespace (in
            // a child process), which the layers' owners are for.
            let kept = try runtime.userNamespaceDescriptor()
            let user = try kept ?? mapping.makeNamespace()
            defer { if kept == nil { close(user) } }
            let mount = gantry_overlay_in_user_namespace(user, record.layers.joined(separator: ":"), directory + "/upper", directory + "/work", writable ? 0 : 1)
            guard mount >= 0 else { throw failure("in the user namespace") }
            return mount
        }
        let context = fsopen("overlay", UInt32(FSOPEN_CLOEXEC))
        guard context >= 0 else { throw failure("fsopen") }
        defer { close(context) }
        guard gantry_overlay_set_lower(context, record.layers.joined(separator: ":")) == 0 else { throw failure("lowerdir") }
        let options = [("upperdir", directory + "/upper"), ("workdir", directory + "/work")]
        for (key, value) in options where fsconfig(context, FSCONFIG_SET_STRING.rawValue, key, value, 0) != 0 {
            throw failure(key)
        }
        guard fsconfig(context, FSCONFIG_CMD_CREATE.rawValue, nil, nil, 0) == 0 else { throw failure("create") }
        let attributes = UInt32(MOUNT_ATTR_NODEV) | UInt32(MOUNT_ATTR_NOSUID) | (writable ? 0 : UInt32(MOUNT_ATTR_RDONLY))
        let mount = fsmount(context, UInt32(FSMOUNT_CLOEXEC), attributes)
        guard mount >= 0 else { throw failure("fsmount") }
        return mount
    }

    // MARK: - Moving the archive

    /// The host IDs of the container's root user.
    private var containerRoot: (uid: UInt32, gid: UInt32) {
        get throws {
            let spec = try record.spec
            func host(_ mappings: [ContainerSpec.IDMapping]) -> UInt32 {
                mappings.first { $0.containerID == 0 }?.hostID ?? 0
            }
            return (host(spec.uidMappings), host(spec.gidMappings))
        }
    }

    private func containerPolicy(_ options: CopyOptions) throws -> PlainArchivePolicy {
        PlainArchivePolicy(owner: options.keepOwners ? nil : try containerRoot, allowsDevices: true, keepsSetIDBits: true)
    }

    /// Onto the host, nothing from the container may grant privileges.
    private static func hostPolicy(_ options: CopyOptions) -> PlainArchivePolicy {
        PlainArchivePolicy(owner: options.keepOwners ? nil : (geteuid(), getegid()), allowsDevices: false, keepsSetIDBits: false)
    }

    /// Archives `source` on a thread of its own into a socket whose other end
    /// is extracted into the destination here; returns once both are done.
    private func transfer(_ source: CopySource, to destination: CopyDestination, policy: PlainArchivePolicy, options: CopyOptions) throws {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw RuntimeError(.systemCall, "cannot copy \(source.display): socketpair failed", underlying: Sys.errno)
        }
        let (reader, writer) = (ends[0], ends[1])
        let archiving = ErrorBox()
        let done = DispatchSemaphore(value: 0)
        let sourceFD = source.fd
        let (name, display, contentsOnly, topName) = (source.name, source.display, source.contentsOnly, destination.name)
        let thread = Thread {
            do {
                let archiver = try TreeArchiver(output: writer, display: display)
                try archiver.add(CopySource(fd: sourceFD, name: name, display: display, contentsOnly: contentsOnly), as: topName)
                try archiver.finish()
            } catch {
                archiving.error.withLock { $0 = error }
            }
            close(writer)
            done.signal()
        }
        thread.name = "gantry-copy"
        thread.start()
        var extracting: (any Error)?
        do {
            try Self.extract(reader, from: source.display, into: destination.fd, named: destination.display, policy: policy)
        } catch {
            extracting = error
        }
        // An extraction that stopped early makes the archiver's writes fail.
        close(reader)
        done.wait()
        let archiveError = archiving.error.withLock { $0 }
        if let archiveError, !(archiveError is TreeArchiver.OutputClosed) || extracting == nil { throw archiveError }
        if let extracting { throw extracting }
    }

    /// Extracts the archive read from `fd` with OCIImage's unpacker, its
    /// errors said as the runtime's.
    static func extract(_ fd: Int32, from source: String, into directory: Int32, named target: String, policy: PlainArchivePolicy) throws {
        var options = LayerUnpackOptions(whiteouts: .apply)
        options.plainArchive = policy
        do {
            try LayerUnpacker.extract(tarFrom: fd, named: source, into: directory, named: target, options: options)
        } catch let error as OCIImageError {
            if error.code == .unsafeLayerEntries {
                let shown = error.refusedEntries.prefix(20).map(\.description).joined(separator: "; ")
                throw RuntimeError(.invalidState, "copying \(source) to \(target) refused \(error.refusedEntries.count) entries: \(shown)")
            }
            throw RuntimeError(.systemCall, "cannot copy \(source) to \(target): \(error.message)", underlying: error.underlying)
        }
    }

    /// Runs blocking copy work on a thread outside Swift's cooperative pool.
    func blocking(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }
}

// MARK: - Paths

/// Where copy paths are resolved: inside a container's root, where every
/// component (symlinks and `..` too) stays within the root, or on the host.
struct FileTree {
    let fd: Int32
    let resolve: UInt64
    let container: String?

    static let host = FileTree(fd: AT_FDCWD, resolve: 0, container: nil)

    static func container(_ root: Int32, _ name: String) -> FileTree {
        FileTree(fd: root, resolve: UInt64(GANTRY_RESOLVE_IN_ROOT | GANTRY_RESOLVE_NO_MAGICLINKS), container: name)
    }

    /// The path as errors name it.
    func describe(_ path: String) -> String {
        container.map { "container \($0):\(path)" } ?? path
    }

    /// Opens `path`; in a container, relative paths start at its root.
    func open(_ path: String, flags: Int32) -> Result<Int32, Errno> {
        var relative = path
        if container != nil {
            relative = String(path.drop { $0 == "/" })
            if relative.isEmpty { relative = "." }
        }
        let fd = gantry_openat2(fd, relative, UInt64(flags | O_CLOEXEC), 0, resolve)
        return fd >= 0 ? .success(fd) : .failure(Sys.errno)
    }

    /// Opens an existing directory (following a final symlink, within the root).
    func openDirectory(_ path: String) throws -> Int32 {
        switch open(path, flags: O_RDONLY | O_DIRECTORY) {
        case .success(let fd): return fd
        case .failure(.noSuchFileOrDirectory): throw RuntimeError(.notFound, "no such directory: \(describe(path))")
        case .failure(.notDirectory): throw RuntimeError(.invalidSpec, "not a directory: \(describe(path))")
        case .failure(let error): throw RuntimeError(.systemCall, "cannot open \(describe(path))", underlying: error)
        }
    }
}

/// A copy path split as `docker cp` reads it.
struct CopyPath {
    /// The components without `.` and empty ones (`..` is left to the kernel).
    var components: [String]
    /// Whether it ends in `/.`: a directory's contents.
    var contentsOnly: Bool
    /// Whether it ends in `/` or `/.`: it must be a directory.
    var trailingSlash: Bool
    var absolute: Bool

    init(_ path: String) {
        absolute = path.hasPrefix("/")
        contentsOnly = path == "." || path.hasSuffix("/.")
        trailingSlash = contentsOnly || path.hasSuffix("/")
        components = path.split(separator: "/").map(String.init).filter { $0 != "." }
    }

    /// The name of what it designates.
    var name: String? { components.last }

    var parent: String { (absolute ? "/" : "") + components.dropLast().joined(separator: "/") }
}

/// The source of a copy: an O_PATH descriptor of the file itself (a
/// symlink is not followed), and the name it is archived under.
struct CopySource {
    var fd: Int32
    var name: [UInt8]
    var display: String
    var contentsOnly: Bool

    init(fd: Int32, name: [UInt8], display: String, contentsOnly: Bool) {
        (self.fd, self.name, self.display, self.contentsOnly) = (fd, name, display, contentsOnly)
    }

    init(_ path: String, in tree: FileTree, follow: Bool) throws {
        let parsed = CopyPath(path)
        display = tree.describe(path)
        guard parsed.name != ".." else {
            throw RuntimeError(.invalidSpec, "copy source \(display) ends in ..; name the directory itself")
        }
        // A trailing slash designates a directory, through a symlink too.
        let noFollow = follow || parsed.trailingSlash ? 0 : O_NOFOLLOW
        switch tree.open(path, flags: GANTRY_O_PATH | noFollow) {
        case .success(let opened): fd = opened
        case .failure(.noSuchFileOrDirectory): throw RuntimeError(.notFound, "no such file or directory: \(display)")
        case .failure(.notDirectory): throw RuntimeError(.invalidSpec, "not a directory: \(display)")
        case .failure(let error): throw RuntimeError(.systemCall, "cannot open \(display)", underlying: error)
        }
        var st = stat()
        fstat(fd, &st)
        let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        if parsed.trailingSlash && !isDirectory {
            close(fd)
            throw RuntimeError(.invalidSpec, "not a directory: \(display)")
        }
        // The root has no name: its contents are copied.
        contentsOnly = parsed.contentsOnly || parsed.name == nil
        name = Array((parsed.name ?? ".").utf8)
    }

    var isDirectory: Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}

/// Where a copy is extracted: a directory, and the name the source takes
/// in it (`nil`: its contents go straight in).
struct CopyDestination {
    var fd: Int32
    var name: [UInt8]?
    var display: String

    init(_ path: String, in tree: FileTree, for source: CopySource) throws {
        let parsed = CopyPath(path)
        display = tree.describe(path)
        // An existing directory (or a symlink to one, within the root).
        switch tree.open(path, flags: O_RDONLY | O_DIRECTORY) {
        case .success(let opened):
            fd = opened
            name = source.contentsOnly ? nil : source.name
            return
        case .failure(.noSuchFileOrDirectory), .failure(.notDirectory), .failure(.tooManySymbolicLinkLevels):
            break
        case .failure(let error):
            throw RuntimeError(.systemCall, "cannot open \(display)", underlying: error)
        }
        guard let last = parsed.name, last != ".." else { throw RuntimeError(.invalidSpec, "not a directory: \(display)") }
        let parentDisplay = tree.describe(parsed.parent.isEmpty ? "." : parsed.parent)
        switch tree.open(parsed.parent.isEmpty ? "." : parsed.parent, flags: O_RDONLY | O_DIRECTORY) {
        case .success(let opened): fd = opened
        case .failure(.noSuchFileOrDirectory): throw RuntimeError(.notFound, "the directory of \(display) does not exist (\(parentDisplay))")
        case .failure(.notDirectory): throw RuntimeError(.invalidSpec, "the directory of \(display) is not a directory (\(parentDisplay))")
        case .failure(let error): throw RuntimeError(.systemCall, "cannot open \(parentDisplay)", underlying: error)
        }
        var st = stat()
        let exists = fstatat(fd, last, &st, AT_SYMLINK_NOFOLLOW) == 0
        let sourceIsDirectory = source.isDirectory
        if exists {
            // A file (or a symlink that leads nowhere inside): replaced, never followed.
            if sourceIsDirectory || parsed.trailingSlash {
                close(fd)
                throw RuntimeError(.invalidSpec, sourceIsDirectory ? "cannot copy directory \(source.display) to file \(display)" : "not a directory: \(display)")
            }
        } else if parsed.trailingSlash && !sourceIsDirectory {
            close(fd)
            throw RuntimeError(.notFound, "destination directory \(display) does not exist")
        }
        name = Array(last.utf8)
    }
}

private final class ErrorBox: Sendable {
    let error = Mutex<(any Error)?>(nil)
}

/// Calls `body` with `bytes` as a NUL-terminated C string.
