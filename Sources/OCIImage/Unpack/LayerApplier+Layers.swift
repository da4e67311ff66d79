import CArchive
import CGantrySystem
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension LayerApplier {
    // MARK: Whiteouts

    func applyWhiteout(name: Path, parent: ArraySlice<Path>, display: String) throws {
        let overlay = isOverlay
        if name == opaqueMarker {
            guard case .found(let parentFD) = try directory(parent, create: overlay, display: display) else { return }
            preserveTimes(of: join(parent), fd: parentFD)
            let fd = try Sys.check("open", "\(target)/\(text(join(parent)))") {
                gantry_openat2(parentFD, ".", UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0, 0)
            }
            defer { Sys.close(fd) }
            if overlay {
                try setOpaque(fd, display: text(join(parent)))
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
            markWritten(Array(parent) + [hidden])
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
    func removeLowerContent(_ fd: Int32, path: Path) throws {
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

    /// `path`'s metadata in the layer at `layerFD`, without following any
    /// symlink, or `nil` when the layer does not have it.
    func statBeneath(_ layerFD: Int32, _ path: Path) -> stat? {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        let fd = withCString(path.isEmpty ? [0x2e] : path) {
            gantry_openat2(layerFD, $0, UInt64(GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, resolve)
        }
        guard fd >= 0 else { return nil }
        defer { Sys.close(fd) }
        var st = stat()
        return fstat(fd, &st) == 0 ? st : nil
    }

    /// An overlay whiteout: a character device with device number 0/0.
    func isWhiteout(_ st: stat) -> Bool {
        (st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0
    }

    func isOpaque(_ layerFD: Int32, _ path: Path) -> Bool {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        let fd = withCString(path.isEmpty ? [0x2e] : path) {
            gantry_openat2(layerFD, $0, UInt64(O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), 0, resolve)
        }
        guard fd >= 0 else { return false }
        defer { Sys.close(fd) }
        var value: UInt8 = 0
        return gantry_fgetxattr(fd, opaqueAttribute, &value, 1) == 1 && value == UInt8(ascii: "y")
    }

    /// Whether a layer that lacks `path` hides it from the layers below: an
    /// ancestor of it there is a whiteout, not a directory, or opaque.
    func hidesBelow(_ layerFD: Int32, _ components: [Path]) -> Bool {
        for length in 0..<components.count {
            let prefix = join(components.prefix(length))
            guard let st = statBeneath(layerFD, prefix) else { return false }
            if (st.st_mode & S_IFMT) != S_IFDIR || isOpaque(layerFD, prefix) { return true }
        }
        return false
    }

    /// What the stack of this layer over the lower layers shows at `path`,
    /// as overlayfs would: the highest layer that has it, unless a whiteout or
    /// an opaque directory above hides it. Every prefix of `path` is a
    /// directory or missing in each layer.
    func stackEntry(_ path: Path) -> (layerFD: Int32, stat: stat)? {
        let components = path.split(separator: 0x2f).map(Array.init)
        for layerFD in [rootFD] + lowerFDs {
            if let st = statBeneath(layerFD, path) {
                return isWhiteout(st) ? nil : (layerFD, st)
            }
            if hidesBelow(layerFD, components) { return nil }
        }
        return nil
    }

    enum UnionEntry {
        case directory, missing, other
        case symlink([UInt8])
    }

    /// What `path` is in the layer stack.
    func unionLookup(_ path: Path) -> UnionEntry {
        guard let (layerFD, st) = stackEntry(path) else { return .missing }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFLNK:
            guard let target = readLink(layerFD, path) else { return .other }
            return .symlink(target)
        default: return .other
        }
    }

    func readLink(_ layerFD: Int32, _ path: Path) -> [UInt8]? {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        let fd = withCString(path) { gantry_openat2(layerFD, $0, UInt64(GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
        guard fd >= 0 else { return nil }
        defer { Sys.close(fd) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let count = readlinkat(fd, "", &buffer, buffer.count)
        return count > 0 ? buffer[..<count].map { UInt8(bitPattern: $0) } : nil
    }

    /// Resolves a directory path through symlinks found in the layer stack,
    /// with the same limits as ``openBeneath(_:flags:noSymlinks:)``: absolute
    /// symlinks and `..` past the root are refused, and so are loops.
    func resolveThroughLowers(_ components: [Path]) -> Result<[Path], Refusal> {
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
    /// takes the owner, mode, times and attributes of the same directory in
    /// the lower layers, as overlayfs's copy-up would; otherwise, or when it
    /// is `opaque` (replacing a whiteout), it is root's, mode 0755. The mode is
    /// applied last, so that a read-only directory can still be filled.
    func makeImplicitDirectory(parentFD: Int32, name: Path, path: Path, opaque: Bool) throws {
        let display = target + "/" + text(path)
        let lower = opaque ? nil : stackEntry(path).flatMap { ($0.stat.st_mode & S_IFMT) == S_IFDIR ? $0 : nil }
        try Sys.check("mkdir", display) { withCString(name) { mkdirat(parentFD, $0, 0o700) } }
        let fd = try Sys.check("open", display) {
            withCString(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
        defer { Sys.close(fd) }
        var st = stat()
        try Sys.check("stat", display) { fstat(fd, &st) }
        if options.privileged {
            try Sys.check("chown", display) { fchown(fd, lower?.stat.st_uid ?? options.plainArchive?.owner?.uid ?? 0, lower?.stat.st_gid ?? options.plainArchive?.owner?.gid ?? 0) }
        } else if let lower, options.userNamespace != nil {
            let (uid, gid) = containerOwner(lower.stat)
            noteOwner(Sys.descriptorPath(fd), uid: uid, gid: gid)
        }
        if let lower {
            try copyAttributes(from: lower.layerFD, path: path, to: fd, display: display)
            deferred[FileID(st)] = DirectoryMetadata(path: path, mode: lower.stat.st_mode & 0o7777, times: (lower.stat.st_atim, lower.stat.st_mtim))
        } else {
            deferred[FileID(st)] = DirectoryMetadata(path: path, mode: 0o755, times: nil)
        }
        if opaque { try setOpaque(fd, display: text(path)) }
    }

    /// Copies the carried extended attributes of `path` in a lower layer.
    func copyAttributes(from layerFD: Int32, path: Path, to fd: Int32, display: String) throws {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        let source = withCString(path) { gantry_openat2(layerFD, $0, UInt64(O_RDONLY | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
        guard source >= 0 else { return }
        defer { Sys.close(source) }
        var value = [UInt8](repeating: 0, count: 65536)
        for name in attributeNames(source) where ExtendedAttributes.isCarried(name) {
            guard options.privileged || !ExtendedAttributes.needsPrivilege(name) else { continue }
            let size = gantry_fgetxattr(source, name, &value, value.count)
            guard size >= 0 else { continue }
            if gantry_fsetxattr(fd, name, value, size, 0) != 0 && Sys.errno != .notSupported {
                throw SystemCallError("setxattr \(name) on", display, Sys.errno)
            }
        }
    }

    enum CopyUp {
        case copied, missing
        case refused(String)
    }

    /// Copies a file from the lower layers into this one, with its owner,
    /// mode, times and attributes (and its holes, if sparse).
    func copyUp(_ components: [Path], display: String) throws -> CopyUp {
        let path = join(components)
        guard let name = components.last, let (layerFD, st) = stackEntry(path) else { return .missing }
        let kind = st.st_mode & S_IFMT
        guard kind != S_IFDIR else { return .refused("it is a directory") }
        guard case .found(let parentFD) = try directory(components.dropLast(), create: true, display: display) else {
            return .refused("its directory cannot be made")
        }
        let destination = target + "/" + text(path)
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | GANTRY_RESOLVE_NO_SYMLINKS)
        switch kind {
        case S_IFREG:
            let source = try Sys.check("open", destination) {
                withCString(path) { gantry_openat2(layerFD, $0, UInt64(O_RDONLY | O_NOFOLLOW | O_CLOEXEC), 0, resolve) }
            }
            defer { Sys.close(source) }
            let fd = try Sys.check("create", destination) {
                withCString(name) { openat(parentFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
            }
            defer { Sys.close(fd) }
            try Sys.copyFile(from: source, to: fd, size: Int64(st.st_size), display: destination)
            if options.privileged { try Sys.check("chown", destination) { fchown(fd, st.st_uid, st.st_gid) } }
            let (uid, gid) = containerOwner(st)
            if !options.privileged, options.userNamespace != nil {
                noteOwner(Sys.descriptorPath(fd), uid: uid, gid: gid,
                          mode: st.st_mode & (S_ISUID | S_ISGID) != 0 ? st.st_mode : nil)
            }
            try copyAttributes(from: layerFD, path: path, to: fd, display: destination)
            try Sys.check("chmod", destination) { fchmod(fd, st.st_mode & 0o7777) }
        case S_IFLNK:
            guard let linkTarget = readLink(layerFD, path) else { return .refused("its symlink cannot be read") }
            try withCString(linkTarget) { cTarget in
                try withCString(name) { cName in try Sys.check("symlink", destination) { symlinkat(cTarget, parentFD, cName) } }
            }
        case S_IFIFO, S_IFCHR, S_IFBLK:
            guard kind == S_IFIFO || options.privileged else { return .refused("device nodes can only be created with root privileges") }
            try withCString(name) { cName in
                try Sys.check("mknod", destination) { mknodat(parentFD, cName, kind | 0o600, st.st_rdev) }
                try Sys.check("chmod", destination) { fchmodat(parentFD, cName, st.st_mode & 0o7777, 0) }
            }
        default:
            return .refused("it cannot be copied")
        }
        try withCString(name) { cName in
            if options.privileged && kind != S_IFREG {
                try Sys.check("chown", destination) { fchownat(parentFD, cName, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) }
            } else if kind != S_IFREG {
                let (uid, gid) = containerOwner(st)
                noteOwner(parentFD: parentFD, name: name, uid: uid, gid: gid)
            }
            var times = (st.st_atim, st.st_mtim)
            try Sys.check("utimens", destination) {
                withUnsafePointer(to: &times) { $0.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(parentFD, cName, $0, AT_SYMLINK_NOFOLLOW) } }
            }
        }
        return .copied
    }
}
