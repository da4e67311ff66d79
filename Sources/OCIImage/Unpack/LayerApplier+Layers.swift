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

    func existsInLayer(_ path: Path) -> Bool {
        var st = stat()
        return withCString(path) { fstatat(rootFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    }

    /// The topmost lower layer holding `path` and the metadata it has there,
    /// or `nil` when no lower layer has it or a whiteout hides it.
    func lowerStat(_ path: Path) -> (layerFD: Int32, stat: stat)? {
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

    enum UnionEntry {
        case directory, missing, other
        case symlink([UInt8])
    }

    /// What `path` is in the stack of this layer over the lower layers:
    /// this layer first, then each lower one until a whiteout hides it.
    /// Every prefix of `path` is known to be a directory or missing.
    func unionLookup(_ path: Path) -> UnionEntry {
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
    /// takes the metadata of the same directory in the lower layers, as
    /// overlayfs's copy-up would; otherwise it is root's, mode 0755.
    func makeImplicitDirectory(parentFD: Int32, name: Path, path: Path) throws {
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
    func copyUp(_ components: [Path], display: String) throws -> Bool {
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
