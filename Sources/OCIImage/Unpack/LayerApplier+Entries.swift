import CArchive
import CGantrySystem
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension LayerApplier {
    // MARK: Creating entries

    /// Runs `create` on the entry's name; if something is in the way, removes
    /// it (a directory with its contents) and tries once more.
    func replacing(_ parentFD: Int32, _ name: Path, _ display: String, _ create: (UnsafePointer<CChar>) -> Int32) throws {
        try withCString(name) { cName in
            if create(cName) == 0 { return }
            guard Sys.errno == .fileExists else { throw SystemCallError("create", "\(target)/\(display)", Sys.errno) }
            try removeExisting(parentFD, name, display: display)
            try Sys.check("create", "\(target)/\(display)") { create(cName) }
        }
    }

    func removeExisting(_ parentFD: Int32, _ name: Path, display: String) throws {
        var st = stat()
        guard withCString(name, { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else { return }
        // Cached paths may lead through what is removed (a directory, or a
        // symlink to one).
        invalidateCache()
        if (st.st_mode & S_IFMT) == S_IFDIR {
            try Sys.removeTree(at: parentFD, name: name, display: "\(target)/\(display)")
        } else {
            try Sys.check("unlink", "\(target)/\(display)") { withCString(name) { unlinkat(parentFD, $0, 0) } }
        }
    }

    func createFile(_ entry: OpaquePointer, _ reader: OpaquePointer, parentFD: Int32, name: Path, display: String) throws {
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = withCString(name) { openat(parentFD, $0, flags, 0o600) }
        if fd < 0 && Sys.errno == .fileExists {
            try removeExisting(parentFD, name, display: display)
            fd = withCString(name) { openat(parentFD, $0, flags, 0o600) }
        }
        guard fd >= 0 else { throw SystemCallError("create", "\(target)/\(display)", Sys.errno) }
        defer { Sys.close(fd) }
        try writeData(fd, reader, size: archive_entry_size_is_set(entry) != 0 ? archive_entry_size(entry) : nil, display: display)
        try setOwnerAndAttributes(fd: fd, entry, display: display)
        try Sys.check("chmod", "\(target)/\(display)") { fchmod(fd, permissions(entry)) }
        if var times = times(entry) {
            try Sys.check("utimens", "\(target)/\(display)") { withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } } }
        }
    }

    func writeData(_ fd: Int32, _ reader: OpaquePointer, size: Int64?, display: String) throws {
        var block: UnsafeRawPointer?
        var length = 0
        var offset: la_int64_t = 0
        var position: Int64 = 0
        var blocks = 0
        while true {
            let status = archive_read_data_block(reader, &block, &length, &offset)
            if status == ARCHIVE_EOF { break }
            guard status >= ARCHIVE_WARN else { throw corrupt(reader) }
            blocks += 1
            if blocks & 63 == 0 && options.isCancelled?() == true {
                throw OCIImageError(.cancelled, "unpacking layer \(layer) was cancelled")
            }
            if offset != position {
                // A hole in a sparse file.
                guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { throw SystemCallError("lseek", "\(target)/\(display)", Sys.errno) }
                position = offset
            }
            try Sys.writeAll(fd, UnsafeRawBufferPointer(start: block, count: length), path: "\(target)/\(display)")
            position += Int64(length)
        }
        if let size, position < size {
            try Sys.check("truncate", "\(target)/\(display)") { ftruncate(fd, off_t(size)) }
        }
    }

    func createDirectory(_ entry: OpaquePointer, parentFD: Int32, name: Path, path: Path, display: String) throws {
        var replacedWhiteout = false
        var existed = false
        if withCString(name, { mkdirat(parentFD, $0, 0o700) }) != 0 {
            guard Sys.errno == .fileExists else { throw SystemCallError("mkdir", "\(target)/\(display)", Sys.errno) }
            var st = stat()
            let found = withCString(name) { fstatat(parentFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
            if found && (st.st_mode & S_IFMT) == S_IFDIR {
                existed = true
            } else {
                replacedWhiteout = found && isOverlay && isWhiteout(st)
                try removeExisting(parentFD, name, display: display)
                try Sys.check("mkdir", "\(target)/\(display)") { withCString(name) { mkdirat(parentFD, $0, 0o700) } }
            }
        }
        let fd = try Sys.check("open", "\(target)/\(display)") {
            withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
        defer { Sys.close(fd) }
        // A directory declared again takes the attributes the layer gives it,
        // not those it had.
        if existed { try clearAttributes(fd: fd, display: display) }
        try setOwnerAndAttributes(fd: fd, entry, display: display)
        if replacedWhiteout {
            // The layer deleted the lower directory, then made a new one.
            try setOpaque(fd, display: display)
        }
        deferDirectoryMetadata(fd: fd, path: path, entry)
    }

    /// Removes the carried extended attributes a directory has.
    func clearAttributes(fd: Int32, display: String) throws {
        for name in attributeNames(fd) where ExtendedAttributes.isCarried(name) {
            if gantry_fremovexattr(fd, name) != 0 && Sys.errno != .noData && Sys.errno != .notSupported && Sys.errno != .notPermitted {
                throw SystemCallError("removexattr \(name) on", "\(target)/\(display)", Sys.errno)
            }
        }
    }

    /// The names of a file's extended attributes.
    func attributeNames(_ fd: Int32) -> [String] {
        var buffer = [CChar](repeating: 0, count: 65536)
        let length = gantry_flistxattr(fd, &buffer, buffer.count)
        guard length > 0 else { return [] }
        return buffer[..<length].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }

    func setOpaque(_ fd: Int32, display: String) throws {
        try Sys.check("setxattr \(opaqueAttribute) on", "\(target)/\(display)") { gantry_fsetxattr(fd, opaqueAttribute, "y", 1, 0) }
    }

    /// Records the mode and times of a directory this layer changes without
    /// declaring it, so that they are restored afterwards as they were.
    ///
    /// Without privileges, a directory an earlier layer made read-only is
    /// opened up for its owner meanwhile (its mode is restored with the rest),
    /// as root would not need.
    func preserveTimes(of path: Path, fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0, deferred[FileID(st)] == nil else { return }
        deferred[FileID(st)] = DirectoryMetadata(path: path, mode: st.st_mode & 0o7777, times: (st.st_atim, st.st_mtim))
        if !options.privileged && st.st_uid == geteuid() && st.st_mode & 0o700 != 0o700 {
            // `fd` is an O_PATH descriptor; chmod reaches the directory through /proc.
            _ = chmod("/proc/self/fd/\(fd)", (st.st_mode & 0o7777) | 0o700)
        }
    }

    func deferDirectoryMetadata(fd: Int32, path: Path, _ entry: OpaquePointer) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        deferred[FileID(st)] = DirectoryMetadata(path: path, mode: archive_entry_perm(entry), times: times(entry))
    }

    func link(_ entry: OpaquePointer, to rawTarget: Path, parentFD: Int32, name: Path, display: String) throws {
        var components: [Path]
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
        let targetText = text(join(components))
        if isOverlay {
            // Find the target where the layer stack has it, and bring it into
            // this layer if it is below.
            switch resolveThroughLowers(Array(components.dropLast())) {
            case .success(let parent): components = parent + [targetName]
            case .failure(let refusal):
                refuse(display, "hard link target: \(refusal.message)")
                return
            }
            if let st = statBeneath(rootFD, join(components)) {
                if isWhiteout(st) {
                    refuse(display, "hard link target \(targetText) does not exist")
                    return
                }
            } else {
                switch try copyUp(components, display: display) {
                case .copied: break
                case .missing:
                    refuse(display, "hard link target \(targetText) does not exist")
                    return
                case .refused(let reason):
                    refuse(display, "hard link target \(targetText): \(reason)")
                    return
                }
            }
        }
        let targetParent = try directory(components.dropLast(), create: false, display: display)
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
                default: throw SystemCallError("link", "\(target)/\(display)", error)
                }
            }
        }
    }

    // MARK: Metadata

    /// The owner an entry gets: the one it names, or a plain archive's.
    func owner(_ entry: OpaquePointer) -> (uid_t, gid_t) {
        if let owner = options.plainArchive?.owner { return (owner.uid, owner.gid) }
        return (uid_t(truncatingIfNeeded: archive_entry_uid(entry)), gid_t(truncatingIfNeeded: archive_entry_gid(entry)))
    }

    /// The permission bits a file (not a directory) gets: without their
    /// set-ID bits unless the options (and a plain archive's policy) keep them.
    func permissions(_ entry: OpaquePointer) -> mode_t {
        let mode = archive_entry_perm(entry)
        guard !options.keepsSetIDBits || options.plainArchive?.keepsSetIDBits == false else { return mode }
        return mode & ~(S_ISUID | S_ISGID)
    }

    func times(_ entry: OpaquePointer) -> (timespec, timespec)? {
        guard archive_entry_mtime_is_set(entry) != 0 else { return nil }
        let mtime = timespec(tv_sec: time_t(archive_entry_mtime(entry)), tv_nsec: Int(archive_entry_mtime_nsec(entry)))
        let atime = archive_entry_atime_is_set(entry) != 0
            ? timespec(tv_sec: time_t(archive_entry_atime(entry)), tv_nsec: Int(archive_entry_atime_nsec(entry)))
            : mtime
        return (atime, mtime)
    }

    /// Owner first (changing it clears set-user-ID bits and file
    /// capabilities), then extended attributes.
    func setOwnerAndAttributes(fd: Int32, _ entry: OpaquePointer, display: String) throws {
        if options.privileged {
            let (uid, gid) = owner(entry)
            try Sys.check("chown", "\(target)/\(display)") { fchown(fd, uid, gid) }
        }
        var capability: [UInt8]?
        try ExtendedAttributes.forEach(in: entry) { name, value in
            let key = String(cString: name)
            if key == "security.capability", !options.privileged, options.userNamespace != nil {
                capability = Array(value)
                return
            }
            guard ExtendedAttributes.isCarried(key), options.privileged || !ExtendedAttributes.needsPrivilege(key) else {
                skippedAttributes.insert(key)
                return
            }
            if gantry_fsetxattr(fd, name, value.baseAddress, value.count, 0) != 0 {
                let error = Sys.errno
                guard error == .notSupported || error == .notPermitted else {
                    throw SystemCallError("setxattr \(key) on", "\(target)/\(display)", error)
                }
                skippedAttributes.insert(key)
            }
        }
        if !options.privileged, options.userNamespace != nil {
            let (uid, gid) = owner(entry)
            var st = stat()
            let regular = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
            // Giving an owner clears set-ID bits: they are set again after.
            let mode = permissions(entry)
            noteOwner(Sys.descriptorPath(fd), uid: uid, gid: gid,
                      mode: regular && mode & (S_ISUID | S_ISGID) != 0 ? mode : nil, capability: regular ? capability : nil)
        }
    }

    /// Rootless: records the owner (and what giving it clears) that the
    /// file at `hostPath` is to get as the user namespace's root; a file of
    /// root's needs nothing, as the caller is that root.
    func noteOwner(_ hostPath: Path?, uid: uid_t, gid: gid_t, mode: mode_t? = nil, capability: [UInt8]? = nil) {
        guard let hostPath, hostPath.starts(with: rootPath) else { return }
        var path = Array(hostPath.dropFirst(rootPath.count).drop { $0 == 0x2f })
        if path.isEmpty { path = [0x2e] }
        if uid == 0 && gid == 0 && capability == nil {
            owners[path] = nil
        } else {
            owners[path] = FileOwner(path: path, uid: uid, gid: gid, mode: mode.map { UInt32($0 & 0o7777) }, capability: capability)
        }
    }

    /// `noteOwner` for `name` in the directory `parentFD`.
    func noteOwner(parentFD: Int32, name: Path, uid: uid_t, gid: gid_t) {
        guard !options.privileged, options.userNamespace != nil, let parent = Sys.descriptorPath(parentFD) else { return }
        noteOwner(parent + [0x2f] + name, uid: uid, gid: gid)
    }

    /// The container ID of a lower layer's file owner (host IDs there are
    /// the namespace's).
    func containerOwner(_ st: stat) -> (uid_t, gid_t) {
        guard let mapping = options.userNamespace else { return (st.st_uid, st.st_gid) }
        return (UserNamespaceMapping.containerID(st.st_uid, in: mapping.uids) ?? 0, UserNamespaceMapping.containerID(st.st_gid, in: mapping.gids) ?? 0)
    }

    func setOwnerAndTimes(parentFD: Int32, name: Path, _ entry: OpaquePointer, display: String) throws {
        try withCString(name) { cName in
            let (uid, gid) = owner(entry)
            if options.privileged {
                try Sys.check("chown", "\(target)/\(display)") { fchownat(parentFD, cName, uid, gid, AT_SYMLINK_NOFOLLOW) }
            } else {
                noteOwner(parentFD: parentFD, name: name, uid: uid, gid: gid)
            }
            if var times = times(entry) {
                try Sys.check("utimens", "\(target)/\(display)") {
                    withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(parentFD, cName, $0, AT_SYMLINK_NOFOLLOW) } }
                }
            }
        }
        // Symlinks and special files cannot have `user.*` attributes, and
        // others on them are rare; they are reported as skipped.
        ExtendedAttributes.forEach(in: entry) { name, _ in skippedAttributes.insert(String(cString: name)) }
    }

    func setSpecialFileMetadata(parentFD: Int32, name: Path, _ entry: OpaquePointer, display: String) throws {
        // The node was just created here and is not a symlink, so following is safe.
        try withCString(name) { cName in
            try Sys.check("chmod", "\(target)/\(display)") { fchmodat(parentFD, cName, permissions(entry), 0) }
        }
        try setOwnerAndTimes(parentFD: parentFD, name: name, entry, display: display)
    }

    /// Applies deferred directory modes and times, deepest first. Each
    /// directory is found again by a path beneath the root and must still be
    /// the same directory; one that was replaced or removed is left alone.
    func finishDirectories() throws {
        let ordered = deferred.map { (depth: $0.value.path.count(where: { $0 == 0x2f }), identity: $0.key, metadata: $0.value) }
            .sorted { $0.depth > $1.depth }
        for (_, identity, metadata) in ordered {
            let display = target + "/" + text(metadata.path)
            var opened = openBeneath(metadata.path, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            if case .failure(.noSuchFileOrDirectory) = opened, isOverlay,
               case .success(let resolved) = resolveThroughLowers(metadata.path.split(separator: 0x2f).map(Array.init)) {
                // The path went through a symlink in a lower layer.
                opened = openBeneath(join(resolved), flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            }
            let fd: Int32
            switch opened {
            case .success(let value): fd = value
            case .failure(.noSuchFileOrDirectory), .failure(.notDirectory), .failure(.tooManySymbolicLinkLevels), .failure(.improperLink): continue
            case .failure(let error): throw SystemCallError("open", display, error)
            }
            defer { Sys.close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, FileID(st) == identity else { continue }
            try Sys.check("chmod", display) { fchmod(fd, metadata.mode) }
            if var times = metadata.times {
                try Sys.check("utimens", display) {
                    withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { futimens(fd, $0) } }
                }
            }
        }
    }
}
