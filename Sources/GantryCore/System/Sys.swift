import CGantrySystem
package import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Gantry's one system-call layer: thin wrappers that retry `EINTR` and
/// throw a ``SystemCallError`` naming the call and the path.
package enum Sys {
    package static var errno: Errno { Errno(rawValue: gantry_errno()) }

    @discardableResult
    package static func check(_ call: String, _ path: @autoclosure () -> String, _ body: () -> Int32) throws -> Int32 {
        while true {
            let result = body()
            if result >= 0 { return result }
            let error = Sys.errno
            if error == .interrupted { continue }
            throw SystemCallError(call, path(), error)
        }
    }

    /// Like ``check(_:_:_:)`` but returns the errno instead of throwing.
    package static func attempt(_ body: () -> Int32) -> Result<Int32, Errno> {
        while true {
            let result = body()
            if result >= 0 { return .success(result) }
            let error = Sys.errno
            if error != .interrupted { return .failure(error) }
        }
    }

    package static func open(_ path: String, _ flags: Int32, _ mode: UInt32 = 0) throws -> Int32 {
        try check("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    package static func openat(_ dirfd: Int32, _ path: String, _ flags: Int32, _ mode: UInt32 = 0, display: String? = nil) throws -> Int32 {
        try check("open", display ?? path) { Glibc.openat(dirfd, path, flags | O_CLOEXEC, mode) }
    }

    package static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    package static func fstat(_ fd: Int32, path: String) throws -> stat {
        var st = stat()
        try check("stat", path) { Glibc.fstat(fd, &st) }
        return st
    }

    package static func lstat(_ path: String) -> stat? {
        var st = stat()
        return Glibc.lstat(path, &st) == 0 ? st : nil
    }

    package static func fsync(_ fd: Int32, path: String) throws {
        try check("fsync", path) { Glibc.fsync(fd) }
    }

    /// Writes every byte, retrying short writes.
    package static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        guard var base = buffer.baseAddress else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let written = Glibc.write(fd, base, remaining)
            if written < 0 {
                if Sys.errno == .interrupted { continue }
                throw SystemCallError("write", path, Sys.errno)
            }
            remaining -= written
            base += written
        }
    }

    /// Reads up to `buffer.count` bytes; 0 means end of file.
    package static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        while true {
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if count >= 0 { return count }
            if Sys.errno == .interrupted { continue }
            throw SystemCallError("read", path, Sys.errno)
        }
    }

    /// Creates a directory and any missing parents.
    package static func makeDirectories(_ path: String, mode: UInt32 = 0o755) throws {
        // Usually only the last directory is missing (or none is): one call.
        if Glibc.mkdir(path, mode) == 0 || Sys.errno == .fileExists { return }
        guard Sys.errno == .noSuchFileOrDirectory else { throw SystemCallError("mkdir", path, Sys.errno) }
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if Glibc.mkdir(current, mode) != 0 && Sys.errno != .fileExists {
                throw SystemCallError("mkdir", current, Sys.errno)
            }
        }
    }

    /// Removes a file or directory tree if it exists. Never follows symlinks.
    package static func removeTree(_ path: String) throws {
        let fd = Glibc.open(parentDirectory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            if Sys.errno == .noSuchFileOrDirectory { return }
            throw SystemCallError("open", parentDirectory(of: path), Sys.errno)
        }
        defer { Sys.close(fd) }
        try removeTree(at: fd, name: Array(lastComponent(of: path).utf8), display: path)
    }

    /// Removes `name` inside `dirfd`, with everything below it if it is a
    /// directory. Never follows symlinks.
    package static func removeTree(at dirfd: Int32, name: [UInt8], display: String) throws {
        if withCString(name, { unlinkat(dirfd, $0, 0) }) == 0 { return }
        switch Sys.errno {
        case .noSuchFileOrDirectory: return
        case .isDirectory, .notPermitted: break
        case let error: throw SystemCallError("unlink", display, error)
        }
        try removeContents(at: dirfd, name: name, display: display)
        if withCString(name, { unlinkat(dirfd, $0, AT_REMOVEDIR) }) != 0 && Sys.errno != .noSuchFileOrDirectory {
            throw SystemCallError("rmdir", display, Sys.errno)
        }
    }

    /// Removes everything inside the directory `name` of `dirfd`, but not the
    /// directory. However deep the tree, one descriptor is open at a time:
    /// the walk goes down by name and back up through `..`.
    package static func removeContents(at dirfd: Int32, name: [UInt8], display: String) throws {
        var fd = try openForRemoval(dirfd, name, display: display)
        defer { Sys.close(fd) }
        var stack: [[UInt8]] = []
        while true {
            var descended = false
            for entry in try listDirectory(fd, display: display) {
                if withCString(entry, { unlinkat(fd, $0, 0) }) == 0 { continue }
                switch Sys.errno {
                case .noSuchFileOrDirectory: continue
                case .isDirectory, .notPermitted: break
                case let error: throw SystemCallError("unlink", display + "/…/" + String(decoding: entry, as: UTF8.self), error)
                }
                let child = try openForRemoval(fd, entry, display: display)
                Sys.close(fd)
                fd = child
                stack.append(entry)
                descended = true
                break
            }
            if descended { continue }
            // This directory is empty: go up and remove it.
            guard let emptied = stack.popLast() else { return }
            let parent = try check("open", display + "/…/..") { Glibc.openat(fd, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            Sys.close(fd)
            fd = parent
            if withCString(emptied, { unlinkat(fd, $0, AT_REMOVEDIR) }) != 0 && Sys.errno != .noSuchFileOrDirectory {
                throw SystemCallError("rmdir", display + "/…/" + String(decoding: emptied, as: UTF8.self), Sys.errno)
            }
        }
    }

    /// Opens a directory to empty it, making it writable first if its mode
    /// keeps its owner out (a read-only directory from an image).
    private static func openForRemoval(_ dirfd: Int32, _ name: [UInt8], display: String) throws -> Int32 {
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        var fd = withCString(name) { Glibc.openat(dirfd, $0, flags) }
        if fd < 0 && Sys.errno == .permissionDenied {
            _ = withCString(name) { fchmodat(dirfd, $0, 0o700, AT_SYMLINK_NOFOLLOW) }
            fd = withCString(name) { Glibc.openat(dirfd, $0, flags) }
        }
        guard fd >= 0 else { throw SystemCallError("open", display, Sys.errno) }
        // Unlinking needs write and search permission on the directory itself.
        var st = stat()
        if Glibc.fstat(fd, &st) == 0 && st.st_mode & 0o300 != 0o300 && st.st_uid == geteuid() {
            _ = fchmod(fd, 0o700)
        }
        return fd
    }

    /// The names in a directory as raw bytes, without `.` and `..`. Does not close `fd`.
    package static func listDirectory(_ fd: Int32, display: String) throws -> [[UInt8]] {
        let copy = try check("dup", display) { Glibc.fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        guard let dir = fdopendir(copy) else {
            Sys.close(copy)
            throw SystemCallError("opendir", display, Sys.errno)
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name != [0x2e] && name != [0x2e, 0x2e] { names.append(name) }
        }
        return names
    }

    /// The names in a directory, without `.` and `..`. Does not close `fd`.
    package static func listDirectoryNames(_ fd: Int32, display: String) throws -> [String] {
        try listDirectory(fd, display: display).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Writes `data` to `path` atomically: a temporary file in the same
    /// directory, fsync, rename, then fsync of the directory. Without
    /// `durable`, the fsyncs are left out (for state a reboot voids anyway).
    package static func writeFileAtomically(_ path: String, _ data: Data, mode: UInt32 = 0o644, durable: Bool = true) throws {
        let directory = parentDirectory(of: path)
        let temporary = directory + "/.tmp-" + lastComponent(of: path) + "-" + randomSuffix()
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        do {
            defer { Sys.close(fd) }
            try data.withUnsafeBytes { try writeAll(fd, $0, path: temporary) }
            if durable { try fsync(fd, path: temporary) }
        } catch {
            _ = Glibc.unlink(temporary)
            throw error
        }
        do {
            try check("rename", path) { Glibc.rename(temporary, path) }
        } catch {
            _ = Glibc.unlink(temporary)
            throw error
        }
        if durable { try syncDirectory(directory) }
    }

    /// Copies a regular file's bytes from `source` to `destination` (both
    /// at offset 0), keeping holes: only the data regions are copied, and the
    /// destination gets `size` by truncation. Where the kernel cannot copy
    /// between the two file systems (an overlay to a disk, on some kernels),
    /// the data goes through memory.
    package static func copyFile(from source: Int32, to destination: Int32, size: Int64, display: String) throws {
        var buffer: [UInt8] = []
        var offset: off_t = 0
        while offset < size {
            let data = lseek(source, offset, GANTRY_SEEK_DATA)
            if data < 0 {
                if Sys.errno == .noSuchAddressOrDevice { break }
                throw SystemCallError("lseek", display, Sys.errno)
            }
            let hole = Swift.min(off_t(size), lseek(source, data, GANTRY_SEEK_HOLE))
            guard hole >= 0 else { throw SystemCallError("lseek", display, Sys.errno) }
            var from = Int64(data)
            var to = Int64(data)
            while from < Int64(hole) {
                let length = Int(Swift.min(Int64(hole) - from, Int64(1) << 30))
                var copied: Int
                if buffer.isEmpty {
                    copied = gantry_copy_file_range_at(source, &from, destination, &to, length)
                    if copied < 0, [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(Sys.errno.rawValue) {
                        buffer = [UInt8](repeating: 0, count: 1 << 20)
                        continue
                    }
                } else {
                    copied = pread(source, &buffer, Swift.min(length, buffer.count), off_t(from))
                    if copied > 0 { copied = pwrite(destination, buffer, copied, off_t(to)) }
                    if copied > 0 { from += Int64(copied); to += Int64(copied) }
                }
                if copied < 0 && Sys.errno == .interrupted { continue }
                guard copied > 0 else { throw SystemCallError("copy_file_range", display, copied == 0 ? .ioError : Sys.errno) }
            }
            offset = hole
        }
        try check("truncate", display) { ftruncate(destination, off_t(size)) }
    }

    package static func syncDirectory(_ path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { Sys.close(fd) }
        try fsync(fd, path: path)
    }

    package static func randomSuffix() -> String {
        hexString((0..<8).map { _ in UInt8.random(in: 0...255) })
    }

    package static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    package static func lastComponent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// An executable `program` where Debian installs programs, or on PATH.
    package static func findProgram(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] + path.split(separator: ":").map(String.init)
        return directories.map { $0 + "/" + program }.first { access($0, X_OK) == 0 }
    }

    /// The path the kernel gives the file open at `fd` (through
    /// `/proc/self/fd`), as bytes; nil when it has none.
    package static func descriptorPath(_ fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = buffer.withUnsafeMutableBufferPointer { pointer in
            pointer.withMemoryRebound(to: CChar.self) { readlink("/proc/self/fd/\(fd)", $0.baseAddress!, $0.count) }
        }
        guard length > 0, length < buffer.count, buffer[0] == 0x2f else { return nil }
        return Array(buffer[..<length])
    }

    /// A capability set of this process as `/proc/self/status` shows it
    /// (`CapEff`, `CapBnd`, …), or nil when it cannot be read.
    package static func capabilityMask(_ set: String) -> UInt64? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(set + ":") }) else { return nil }
        return UInt64(line.dropFirst(set.count + 1).trimmingCharacters(in: .whitespaces), radix: 16)
    }

    /// Whether the process may create device nodes and set any owner:
    /// it is root with CAP_MKNOD and CAP_CHOWN in its effective set.
    package static var isPrivileged: Bool {
        guard geteuid() == 0 else { return false }
        guard let mask = capabilityMask("CapEff") else { return true }
        let chown: UInt64 = 1 << 0
        let mknod: UInt64 = 1 << 27
        return mask & (chown | mknod) == (chown | mknod)
    }
}

/// Calls `body` with `bytes` as a NUL-terminated C string.
@inline(__always) @discardableResult
package func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    var terminated = bytes
    terminated.append(0)
    return try terminated.withUnsafeBufferPointer { buffer in
        try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress.unsafelyUnwrapped) }
    }
}

/// Absolute, standardised form of a path given on a command line or in the API.
package func absolutePath(_ path: String) -> String {
    let url = URL(fileURLWithPath: path)
    return url.standardizedFileURL.path
}
