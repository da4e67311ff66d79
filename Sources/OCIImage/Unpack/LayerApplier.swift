import CArchive
import CGantrySystem
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Applies the entries of one tar stream to a directory tree, resolving
/// every path beneath the tree's root. Used by ``LayerUnpacker``.
final class LayerApplier {
    private typealias Path = [UInt8]

    private enum Lookup {
        case found(Int32)
        case missing
        case refused
    }

    private struct DirectoryMetadata {
        var mode: mode_t
        var times: (timespec, timespec)?
    }

    private let rootFD: Int32
    private let target: String
    private let layer: String
    private let options: LayerUnpackOptions
    private let lowerFDs: [Int32]
    private let stream: LayerStream
    private let opaqueAttribute: String

    /// GANTRY_O_PATH descriptors of directories already resolved, by path. Cleared
    /// whenever a directory is removed, since a path may then name something else.
    private var directoryCache: [Path: Int32] = [:]
    /// Every path this layer created, for whiteouts that must only hide lower layers.
    private var written: Set<Path> = []
    /// Directory modes and times are set last, children first, so that adding
    /// children does not change them and read-only directories can be filled.
    private var deferred: [Path: DirectoryMetadata] = [:]
    private var deferredOrder: [Path] = []

    private(set) var refused: [OCIImageError.RefusedEntry] = []
    private(set) var skippedAttributes: Set<String> = []

    init(rootFD: Int32, target: String, layer: String, options: LayerUnpackOptions, lowerFDs: [Int32], stream: LayerStream) {
        self.rootFD = rootFD
        self.target = target
        self.layer = layer
        self.options = options
        self.lowerFDs = lowerFDs
        self.stream = stream
        opaqueAttribute = options.privileged ? "trusted.overlay.opaque" : "user.overlay.opaque"
    }

    func closeCachedDirectories() {
        for fd in directoryCache.values { Sys.close(fd) }
        directoryCache.removeAll()
    }

    // MARK: The entry loop

    /// Applies every entry; returns how many there were.
    func applyAll(_ reader: OpaquePointer) throws -> Int {
        var count = 0
        var entry: OpaquePointer?
        while true {
            let status = archive_read_next_header(reader, &entry)
            if status == ARCHIVE_EOF { break }
            if status == ARCHIVE_RETRY { continue }
            guard status >= ARCHIVE_WARN, let entry else { throw corrupt(reader) }
            try apply(entry, reader)
            count += 1
            if count & 63 == 0 {
                if options.isCancelled?() == true {
                    throw OCIImageError(.cancelled, "unpacking layer \(layer) was cancelled")
                }
                options.progress?(stream.bytesRead)
            }
        }
        try finishDirectories()
        options.progress?(stream.bytesRead)
        return count
    }

    private func corrupt(_ reader: OpaquePointer) -> OCIImageError {
        stream.consumerError ?? OCIImageError(.corruptLayer, "layer \(layer) is corrupt or truncated: \(archiveMessage(reader))")
    }

    private func refuse(_ display: String, _ reason: String) {
        refused.append(OCIImageError.RefusedEntry(path: display, reason: reason))
    }

    private func apply(_ entry: OpaquePointer, _ reader: OpaquePointer) throws {
        guard let rawPath = archive_entry_pathname(entry) ?? archive_entry_pathname_utf8(entry) else {
            refuse("<unnamed>", "the entry has no path")
            return
        }
        let raw = bytes(rawPath)
        let display = String(decoding: raw, as: UTF8.self)
        let components: [Path]
        switch normalize(raw) {
        case .success(let value): components = value
        case .failure(let reason):
            refuse(display, reason.message)
            return
        }
        let type = UInt32(archive_entry_filetype(entry)) & GANTRY_AE_IFMT
        let hardlink = archive_entry_hardlink(entry) ?? archive_entry_hardlink_utf8(entry)

        guard let name = components.last else {
            // The layer's root directory ("./").
            guard hardlink == nil && type == GANTRY_AE_IFDIR else {
                refuse(display, "the root of a layer can only be a directory")
                return
            }
            try setOwnerAndAttributes(fd: rootFD, entry, display: target)
            deferDirectoryMetadata(Path(), entry)
            return
        }
        let parent = components.dropLast()

        if name.starts(with: whiteoutPrefix) {
            try applyWhiteout(name: name, parent: parent, display: display)
            return
        }

        guard case .found(let parentFD) = try directory(parent, create: true, display: display) else { return }
        preserveTimes(of: join(parent), fd: parentFD)
        let path = join(components)
        written.insert(path)

        if let hardlink {
            try link(entry, to: bytes(hardlink), parentFD: parentFD, name: name, display: display)
            return
        }
        switch type {
        case GANTRY_AE_IFREG:
            try createFile(entry, reader, parentFD: parentFD, name: name, display: display)
        case GANTRY_AE_IFDIR:
            try createDirectory(entry, parentFD: parentFD, name: name, path: path, display: display)
        case GANTRY_AE_IFLNK:
            guard let linkTarget = archive_entry_symlink(entry) ?? archive_entry_symlink_utf8(entry) else {
                refuse(display, "the symlink has no target")
                return
            }
            try replacing(parentFD, name, display) { symlinkat(linkTarget, parentFD, $0) }
            try setOwnerAndTimes(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFIFO:
            try replacing(parentFD, name, display) { mknodat(parentFD, $0, S_IFIFO | 0o600, 0) }
            try setSpecialFileMetadata(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFCHR, GANTRY_AE_IFBLK:
            guard options.privileged else {
                refuse(display, "device nodes can only be created with root privileges")
                return
            }
            let kind: mode_t = type == GANTRY_AE_IFCHR ? S_IFCHR : S_IFBLK
            let device = archive_entry_rdev(entry)
            try replacing(parentFD, name, display) { mknodat(parentFD, $0, kind | 0o600, device) }
            try setSpecialFileMetadata(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFSOCK:
            // Sockets cannot be carried by an archive; like tar, skip them.
            written.remove(path)
        default:
            refuse(display, "unknown entry type \(type)")
        }
    }

    // MARK: Paths

    private struct Refusal: Error { var message: String }

    private let whiteoutPrefix: Path = Array(".wh.".utf8)
    private let opaqueMarker: Path = Array(".wh..wh..opq".utf8)
    private let metadataPrefix: Path = Array(".wh..wh.".utf8)

    /// Splits a path into components, dropping `.` and empty ones; refuses
    /// absolute paths and `..`.
    private func normalize(_ raw: Path) -> Result<[Path], Refusal> {
        if raw.first == 0x2f { return .failure(Refusal(message: "absolute path")) }
        var components: [Path] = []
        for component in raw.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if component.count == 1 && component[component.startIndex] == 0x2e { continue }
            if component.count == 2 && component.allSatisfy({ $0 == 0x2e }) {
                return .failure(Refusal(message: "path has a '..' component"))
            }
            components.append(Array(component))
        }
        return .success(components)
    }

    private func join(_ components: some Collection<Path>) -> Path {
        var path = Path()
        for component in components {
            if !path.isEmpty { path.append(0x2f) }
            path.append(contentsOf: component)
        }
        return path
    }

    private func bytes(_ string: UnsafePointer<CChar>) -> Path {
        Array(UnsafeRawBufferPointer(start: string, count: strlen(string)))
    }

    private func text(_ path: Path) -> String {
        path.isEmpty ? "." : String(decoding: path, as: UTF8.self)
    }

    /// Opens `path` beneath the root, never leaving it.
    private func openBeneath(_ path: Path, flags: Int32, noSymlinks: Bool = false) -> Result<Int32, Errno> {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | (noSymlinks ? GANTRY_RESOLVE_NO_SYMLINKS : 0))
        let fd = withCString(path.isEmpty ? [0x2e] : path) {
            gantry_openat2(rootFD, $0, UInt64(flags | O_CLOEXEC), 0, resolve)
        }
        return fd >= 0 ? .success(fd) : .failure(Sys.errno)
    }

    /// Finds (and, with `create`, makes) the directory `components` beneath
    /// the root, returning a cached GANTRY_O_PATH descriptor. Records a refusal for
    /// `display` when the path leads outside the root or through a non-directory.
    private func directory(_ components: ArraySlice<Path>, create: Bool, display: String) throws -> Lookup {
        if components.isEmpty { return .found(rootFD) }
        let path = join(components)
        if let fd = directoryCache[path] { return .found(fd) }
        switch openBeneath(path, flags: GANTRY_O_PATH | O_DIRECTORY) {
        case .success(let fd):
            return .found(cache(path, fd))
        case .failure(.noSuchFileOrDirectory) where create:
            var components = components
            if !lowerFDs.isEmpty {
                // A missing parent may be a symlink in a lower layer; resolve
                // it as the merged tree would, so that the entry lands where
                // applying the layers in order would put it.
                switch resolveThroughLowers(Array(components)) {
                case .success(let resolved):
                    components = resolved[...]
                    if components.isEmpty { return .found(rootFD) }
                case .failure(let refusal):
                    refuse(display, refusal.message)
                    return .refused
                }
            }
            // Create the missing components one by one, each beneath the root.
            var parentFD = rootFD
            for length in 1...components.count {
                let prefix = join(components.prefix(length))
                if let fd = directoryCache[prefix] {
                    parentFD = fd
                    continue
                }
                var result = openBeneath(prefix, flags: GANTRY_O_PATH | O_DIRECTORY)
                if case .failure(.noSuchFileOrDirectory) = result {
                    try makeImplicitDirectory(parentFD: parentFD, name: components[components.startIndex + length - 1], path: prefix)
                    result = openBeneath(prefix, flags: GANTRY_O_PATH | O_DIRECTORY)
                }
                switch result {
                case .success(let fd): parentFD = cache(prefix, fd)
                case .failure(let error): return try refuseLookup(error, display: display, path: prefix)
                }
            }
            return .found(parentFD)
        case .failure(.noSuchFileOrDirectory):
            return .missing
        case .failure(let error):
            return try refuseLookup(error, display: display, path: path)
        }
    }

    private func refuseLookup(_ error: Errno, display: String, path: Path) throws -> Lookup {
        switch error {
        case .improperLink:
            refuse(display, "\(text(path)) goes through a symlink that leads outside the root")
        case .tooManySymbolicLinkLevels:
            refuse(display, "\(text(path)) has too many levels of symlinks")
        case .notDirectory:
            refuse(display, "\(text(path)) is not a directory")
        default:
            throw OCIImageError.system("open", target + "/" + text(path), error)
        }
        return .refused
    }

    private func cache(_ path: Path, _ fd: Int32) -> Int32 {
        if directoryCache.count >= 512 { closeCachedDirectories() }
        directoryCache[path] = fd
        return fd
    }

    // MARK: Creating entries

    /// Runs `create` on the entry's name; if something is in the way, removes
    /// it (a directory with its contents) and tries once more.
    private func replacing(_ parentFD: Int32, _ name: Path, _ display: String, _ create: (UnsafePointer<CChar>) -> Int32) throws {
        try withCString(name) { cName in
            if create(cName) == 0 { return }
            guard Sys.errno == .fileExists else { throw OCIImageError.system("create", "\(target)/\(display)", Sys.errno) }
            try removeExisting(parentFD, name, display: display)
            try Sys.check("create", "\(target)/\(display)") { create(cName) }
        }
    }

    private func removeExisting(_ parentFD: Int32, _ name: Path, display: String) throws {
        var st = stat()
        guard withCString(name, { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            closeCachedDirectories()
            try Sys.removeTree(at: parentFD, name: name, display: "\(target)/\(display)")
        } else {
            try Sys.check("unlink", "\(target)/\(display)") { withCString(name) { unlinkat(parentFD, $0, 0) } }
        }
    }

    private func createFile(_ entry: OpaquePointer, _ reader: OpaquePointer, parentFD: Int32, name: Path, display: String) throws {
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = withCString(name) { openat(parentFD, $0, flags, 0o600) }
        if fd < 0 && Sys.errno == .fileExists {
            try removeExisting(parentFD, name, display: display)
            fd = withCString(name) { openat(parentFD, $0, flags, 0o600) }
        }
        guard fd >= 0 else { throw OCIImageError.system("create", "\(target)/\(display)", Sys.errno) }
        defer { Sys.close(fd) }
        try writeData(fd, reader, size: archive_entry_size_is_set(entry) != 0 ? archive_entry_size(entry) : nil, display: display)
        try setOwnerAndAttributes(fd: fd, entry, display: display)
        try Sys.check("chmod", "\(target)/\(display)") { fchmod(fd, archive_entry_perm(entry)) }
        if var times = times(entry) {
            try Sys.check("utimens", "\(target)/\(display)") { withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } } }
        }
    }

    private func writeData(_ fd: Int32, _ reader: OpaquePointer, size: Int64?, display: String) throws {
        var block: UnsafeRawPointer?
        var length = 0
        var offset: la_int64_t = 0
        var position: Int64 = 0
        while true {
            let status = archive_read_data_block(reader, &block, &length, &offset)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN else { throw corrupt(reader) }
            if offset != position {
                // A hole in a sparse file.
                guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { throw OCIImageError.system("lseek", "\(target)/\(display)", Sys.errno) }
                position = offset
            }
            try Sys.writeAll(fd, UnsafeRawBufferPointer(start: block, count: length), path: "\(target)/\(display)")
            position += Int64(length)
        }
        if let size, position < size {
            try Sys.check("truncate", "\(target)/\(display)") { ftruncate(fd, off_t(size)) }
        }
    }

    private func createDirectory(_ entry: OpaquePointer, parentFD: Int32, name: Path, path: Path, display: String) throws {
        let made = withCString(name) { mkdirat(parentFD, $0, 0o700) }
        if made != 0 {
            guard Sys.errno == .fileExists else { throw OCIImageError.system("mkdir", "\(target)/\(display)", Sys.errno) }
            var st = stat()
            let isDirectory = withCString(name) { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            if !isDirectory {
                try removeExisting(parentFD, name, display: display)
                try Sys.check("mkdir", "\(target)/\(display)") { withCString(name) { mkdirat(parentFD, $0, 0o700) } }
            }
        }
        let fd = try Sys.check("open", "\(target)/\(display)") {
            withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
        defer { Sys.close(fd) }
        try setOwnerAndAttributes(fd: fd, entry, display: display)
        deferDirectoryMetadata(path, entry)
    }

    /// Records the mode and times of a directory this layer changes without
    /// declaring it, so that they are restored afterwards as they were.
    private func preserveTimes(of path: Path, fd: Int32) {
        guard deferred[path] == nil else { return }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        deferredOrder.append(path)
        deferred[path] = DirectoryMetadata(mode: st.st_mode & 0o7777, times: (st.st_atim, st.st_mtim))
    }

    private func deferDirectoryMetadata(_ path: Path, _ entry: OpaquePointer) {
        if deferred[path] == nil { deferredOrder.append(path) }
        deferred[path] = DirectoryMetadata(mode: archive_entry_perm(entry), times: times(entry))
    }

    private func link(_ entry: OpaquePointer, to rawTarget: Path, parentFD: Int32, name: Path, display: String) throws {
        let components: [Path]
        switch normalize(rawTarget) {
        case .success(let value): components = value
        case .failure(let reason):
            refuse(display, "hard link target \(String(decoding: rawTarget, as: UTF8.self)): \(reason.message)")
            return
        }
        guard let targetName = components.last else {
            refuse(display, "hard link to the layer root")
            return
        }
        let targetPath = join(components)
        let targetText = text(targetPath)
        var targetParent = try directory(components.dropLast(), create: false, display: display)
        if case .overlay = options.whiteouts, !existsInLayer(targetPath) {
            // The target is in a lower layer: copy it up into this one first.
            if try copyUp(components, display: display) {
                targetParent = try directory(components.dropLast(), create: false, display: display)
            }
        }
        guard case .found(let targetParentFD) = targetParent else {
            if case .missing = targetParent { refuse(display, "hard link target \(targetText) does not exist") }
            return
        }
        try withCString(targetName) { cTarget in
            try withCString(name) { cName in
                if linkat(targetParentFD, cTarget, parentFD, cName, 0) == 0 { return }
                var error = Sys.errno
                if error == .fileExists {
                    try removeExisting(parentFD, name, display: display)
                    if linkat(targetParentFD, cTarget, parentFD, cName, 0) == 0 { return }
                    error = Sys.errno
                }
                switch error {
                case .noSuchFileOrDirectory: refuse(display, "hard link target \(targetText) does not exist")
                case .notPermitted: refuse(display, "hard link target \(targetText) is a directory or may not be linked")
                default: throw OCIImageError.system("link", "\(target)/\(display)", error)
                }
            }
        }
    }

    // MARK: Metadata

    private func times(_ entry: OpaquePointer) -> (timespec, timespec)? {
        guard archive_entry_mtime_is_set(entry) != 0 else { return nil }
        let mtime = timespec(tv_sec: time_t(archive_entry_mtime(entry)), tv_nsec: Int(archive_entry_mtime_nsec(entry)))
        let atime = archive_entry_atime_is_set(entry) != 0
            ? timespec(tv_sec: time_t(archive_entry_atime(entry)), tv_nsec: Int(archive_entry_atime_nsec(entry)))
            : mtime
        return (atime, mtime)
    }

    /// Owner first (changing it clears set-user-ID bits and file
    /// capabilities), then extended attributes.
    private func setOwnerAndAttributes(fd: Int32, _ entry: OpaquePointer, display: String) throws {
        if options.privileged {
            let uid = uid_t(truncatingIfNeeded: archive_entry_uid(entry))
            let gid = gid_t(truncatingIfNeeded: archive_entry_gid(entry))
            try Sys.check("chown", "\(target)/\(display)") { fchown(fd, uid, gid) }
        }
        guard archive_entry_xattr_count(entry) > 0 else { return }
        archive_entry_xattr_reset(entry)
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            let key = String(cString: name)
            guard isAllowedAttribute(key) else {
                skippedAttributes.insert(key)
                continue
            }
            if gantry_fsetxattr(fd, name, value, size, 0) != 0 {
                let error = Sys.errno
                guard error == .notSupported || error == .notPermitted else {
                    throw OCIImageError.system("setxattr \(key) on", "\(target)/\(display)", error)
                }
                skippedAttributes.insert(key)
            }
        }
    }

    /// `user.*` always; `trusted.*` and `security.capability` with privileges;
    /// never overlayfs's own attributes, which would change how layers stack.
    private func isAllowedAttribute(_ key: String) -> Bool {
        if key.hasPrefix("trusted.overlay.") || key.hasPrefix("user.overlay.") { return false }
        if key.hasPrefix("user.") { return true }
        if key == "security.capability" || key.hasPrefix("trusted.") { return options.privileged }
        return false
    }

    private func setOwnerAndTimes(parentFD: Int32, name: Path, _ entry: OpaquePointer, display: String) throws {
        try withCString(name) { cName in
            if options.privileged {
                let uid = uid_t(truncatingIfNeeded: archive_entry_uid(entry))
                let gid = gid_t(truncatingIfNeeded: archive_entry_gid(entry))
                try Sys.check("chown", "\(target)/\(display)") { fchownat(parentFD, cName, uid, gid, AT_SYMLINK_NOFOLLOW) }
            }
            if var times = times(entry) {
                try Sys.check("utimens", "\(target)/\(display)") {
                    withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(parentFD, cName, $0, AT_SYMLINK_NOFOLLOW) } }
                }
            }
        }
        if archive_entry_xattr_count(entry) > 0 {
            // Symlinks and special files cannot have `user.*` attributes, and
            // others on them are rare; they are reported as skipped.
            archive_entry_xattr_reset(entry)
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
                if let name { skippedAttributes.insert(String(cString: name)) }
            }
        }
    }

    private func setSpecialFileMetadata(parentFD: Int32, name: Path, _ entry: OpaquePointer, display: String) throws {
        // The node was just created here and is not a symlink, so following is safe.
        try withCString(name) { cName in
            try Sys.check("chmod", "\(target)/\(display)") { fchmodat(parentFD, cName, archive_entry_perm(entry), 0) }
        }
        try setOwnerAndTimes(parentFD: parentFD, name: name, entry, display: display)
    }

    private func finishDirectories() throws {
        for path in deferredOrder.reversed() {
            guard let metadata = deferred[path] else { continue }
            let fd: Int32
            switch openBeneath(path, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW, noSymlinks: true) {
            case .success(let value): fd = value
            // Replaced or removed later in the layer.
            case .failure(.noSuchFileOrDirectory), .failure(.notDirectory), .failure(.tooManySymbolicLinkLevels), .failure(.improperLink): continue
            case .failure(let error): throw OCIImageError.system("open", target + "/" + text(path), error)
            }
            defer { Sys.close(fd) }
            try Sys.check("chmod", target + "/" + text(path)) { fchmod(fd, metadata.mode) }
            if var times = metadata.times {
                try Sys.check("utimens", target + "/" + text(path)) {
                    withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } }
                }
            }
        }
    }

    // MARK: Whiteouts

    private func applyWhiteout(name: Path, parent: ArraySlice<Path>, display: String) throws {
        let overlay: Bool
        if case .overlay = options.whiteouts { overlay = true } else { overlay = false }
        if name == opaqueMarker {
            guard case .found(let parentFD) = try directory(parent, create: overlay, display: display) else { return }
            preserveTimes(of: join(parent), fd: parentFD)
            let fd = try Sys.check("open", "\(target)/\(text(join(parent)))") {
                gantry_openat2(parentFD, ".", UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, 0)
            }
            defer { Sys.close(fd) }
            if overlay {
                try Sys.check("setxattr \(opaqueAttribute) on", "\(target)/\(text(join(parent)))") { gantry_fsetxattr(fd, opaqueAttribute, "y", 1, 0) }
            } else {
                try removeLowerContent(fd, path: join(parent))
            }
            return
        }
        // Other `.wh..wh.` names are AUFS bookkeeping with no meaning here.
        if name.starts(with: metadataPrefix) { return }
        let hidden = Array(name.dropFirst(whiteoutPrefix.count))
        if hidden.isEmpty || hidden == [0x2e] || hidden == [0x2e, 0x2e] {
            refuse(display, "whiteout for an invalid name")
            return
        }
        let hiddenPath = join(Array(parent) + [hidden])
        // A whiteout hides lower layers only, never what this layer made.
        if written.contains(hiddenPath) { return }
        guard case .found(let parentFD) = try directory(parent, create: overlay, display: display) else { return }
        preserveTimes(of: join(parent), fd: parentFD)
        if overlay {
            written.insert(hiddenPath)
            try replacing(parentFD, hidden, display) { mknodat(parentFD, $0, S_IFCHR, gantry_makedev(0, 0)) }
        } else {
            var st = stat()
            if withCString(hidden, { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 {
                try removeExisting(parentFD, hidden, display: display)
            }
        }
    }

    /// For an opaque directory in apply mode: removes everything below `fd`
    /// that this layer did not write.
    private func removeLowerContent(_ fd: Int32, path: Path) throws {
        for child in try Sys.listDirectory(fd, display: target + "/" + text(path)) {
            let childPath = path.isEmpty ? child : path + [0x2f] + child
            if written.contains(childPath) {
                var st = stat()
                if withCString(child, { fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                    let childFD = try Sys.check("open", target + "/" + text(childPath)) {
                        withCString(child) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                    }
                    defer { Sys.close(childFD) }
                    try removeLowerContent(childFD, path: childPath)
                }
            } else {
                try removeExisting(fd, child, display: text(childPath))
            }
        }
    }

    // MARK: Lower layers (overlay mode)

    private func existsInLayer(_ path: Path) -> Bool {
        var st = stat()
        return withCString(path) { fstatat(rootFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    }

    /// The topmost lower layer holding `path` and the metadata it has there,
    /// or `nil` when no lower layer has it or a whiteout hides it.
    private func lowerStat(_ path: Path) -> (layerFD: Int32, stat: stat)? {
        for lower in lowerFDs {
            let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS)
            let fd = withCString(path) { gantry_openat2(lower, $0, UInt64(GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
            guard fd >= 0 else { continue }
            defer { Sys.close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0 { return nil }
            return (lower, st)
        }
        return nil
    }

    private enum UnionEntry {
        case directory, missing, other
        case symlink([UInt8])
    }

    /// What `path` is in the stack of this layer over the lower layers:
    /// this layer first, then each lower one until a whiteout hides it.
    /// Every prefix of `path` is known to be a directory or missing.
    private func unionLookup(_ path: Path) -> UnionEntry {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        for layerFD in [rootFD] + lowerFDs {
            let fd = withCString(path) { gantry_openat2(layerFD, $0, UInt64(GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
            guard fd >= 0 else { continue }
            defer { Sys.close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: return .directory
            case S_IFCHR where st.st_rdev == 0: return .missing
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
                let count = readlinkat(fd, "", &buffer, buffer.count)
                return count > 0 ? .symlink(buffer[..<count].map { UInt8(bitPattern: $0) }) : .other
            default: return .other
            }
        }
        return .missing
    }

    /// Resolves a directory path through symlinks found in the layer stack,
    /// with the same limits as ``openBeneath(_:flags:noSymlinks:)``: absolute
    /// symlinks and `..` past the root are refused, and so are loops.
    private func resolveThroughLowers(_ components: [Path]) -> Result<[Path], Refusal> {
        var resolved: [Path] = []
        var pending = components[...]
        var symlinks = 0
        while let component = pending.popFirst() {
            if component == [0x2e] { continue }
            if component == [0x2e, 0x2e] {
                guard resolved.popLast() != nil else {
                    return .failure(Refusal(message: "\(text(join(components))) goes through a symlink that leads outside the root"))
                }
                continue
            }
            let candidate = resolved + [component]
            switch unionLookup(join(candidate)) {
            case .directory, .missing:
                resolved = candidate
            case .other:
                return .failure(Refusal(message: "\(text(join(candidate))) is not a directory"))
            case .symlink(let target):
                symlinks += 1
                guard symlinks <= 40 else { return .failure(Refusal(message: "\(text(join(components))) has too many levels of symlinks")) }
                guard target.first != 0x2f else {
                    return .failure(Refusal(message: "\(text(join(components))) goes through a symlink that leads outside the root"))
                }
                pending = (target.split(separator: 0x2f).map(Array.init) + pending)[...]
            }
        }
        return .success(resolved)
    }

    /// Creates a parent directory the layer does not list. In overlay mode it
    /// takes the metadata of the same directory in the lower layers, as
    /// overlayfs's copy-up would; otherwise it is root's, mode 0755.
    private func makeImplicitDirectory(parentFD: Int32, name: Path, path: Path) throws {
        try Sys.check("mkdir", target + "/" + text(path)) { withCString(name) { mkdirat(parentFD, $0, 0o700) } }
        let fd = try Sys.check("open", target + "/" + text(path)) {
            withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
        defer { Sys.close(fd) }
        var mode: mode_t = 0o755
        var owner: (uid_t, gid_t) = (0, 0)
        if let lower = lowerStat(path) {
            if (lower.stat.st_mode & S_IFMT) == S_IFDIR {
                mode = lower.stat.st_mode & 0o7777
                owner = (lower.stat.st_uid, lower.stat.st_gid)
                if deferred[path] == nil { deferredOrder.append(path) }
                deferred[path] = DirectoryMetadata(mode: mode, times: (lower.stat.st_atim, lower.stat.st_mtim))
            }
        }
        if options.privileged {
            try Sys.check("chown", target + "/" + text(path)) { fchown(fd, owner.0, owner.1) }
        }
        try Sys.check("chmod", target + "/" + text(path)) { fchmod(fd, mode) }
    }

    /// Copies a regular file or symlink from the lower layers into this one.
    /// Returns false when no lower layer has it.
    private func copyUp(_ components: [Path], display: String) throws -> Bool {
        let path = join(components)
        guard let name = components.last, let lower = lowerStat(path) else { return false }
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS)
        let kind = lower.stat.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFLNK else { return false }
        guard case .found(let parentFD) = try directory(components.dropLast(), create: true, display: display) else { return false }
        let destination = target + "/" + text(path)
        if kind == S_IFLNK {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let linkFD = try Sys.check("open", destination) {
                withCString(path) { gantry_openat2(lower.layerFD, $0, UInt64(GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
            }
            defer { Sys.close(linkFD) }
            let count = readlinkat(linkFD, "", &buffer, buffer.count - 1)
            guard count >= 0 else { throw OCIImageError.system("readlink", destination, Sys.errno) }
            buffer[count] = 0
            try withCString(name) { cName in
                try Sys.check("symlink", destination) { symlinkat(buffer, parentFD, cName) }
                if options.privileged {
                    try Sys.check("chown", destination) { fchownat(parentFD, cName, lower.stat.st_uid, lower.stat.st_gid, AT_SYMLINK_NOFOLLOW) }
                }
            }
            return true
        }
        let source = try Sys.check("open", destination) {
            withCString(path) { gantry_openat2(lower.layerFD, $0, UInt64(O_RDONLY | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
        }
        defer { Sys.close(source) }
        let fd = try Sys.check("create", destination) {
            withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        }
        defer { Sys.close(fd) }
        var remaining = Int(lower.stat.st_size)
        while remaining > 0 {
            let copied = gantry_copy_file_range(source, fd, remaining)
            guard copied > 0 else { throw OCIImageError.system("copy_file_range", destination, Sys.errno) }
            remaining -= copied
        }
        if options.privileged {
            try Sys.check("chown", destination) { fchown(fd, lower.stat.st_uid, lower.stat.st_gid) }
        }
        try Sys.check("chmod", destination) { fchmod(fd, lower.stat.st_mode & 0o7777) }
        var times = (lower.stat.st_atim, lower.stat.st_mtim)
        try Sys.check("utimens", destination) {
            withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } }
        }
        return true
    }
}
