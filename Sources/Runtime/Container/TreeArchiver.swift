import CArchive
import CGantrySystem
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes a tree as a PAX tar stream to a descriptor, never following a
/// symlink: each file is reached by name from its directory's descriptor
/// (opened `O_PATH | O_NOFOLLOW`, so that nothing is opened before its type
/// is known), symlinks are stored as symlinks, hard links as links, sockets
/// are skipped, and directories on other file systems are stored but not
/// entered. Extended attributes are not carried.
final class TreeArchiver {
    /// The reader went away before the archive was written.
    struct OutputClosed: Error {}

    private let output: Int32
    private let display: String
    private let tar: OpaquePointer
    private let links: OpaquePointer
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    private var failure: (any Error)?
    private var isSocket = true
    private var rootDevice: dev_t = 0

    init(output: Int32, display: String) throws {
        self.output = output
        self.display = display
        guard let tar = archive_write_new(), let links = archive_entry_linkresolver_new() else {
            throw RuntimeError(.systemCall, "cannot archive \(display): libarchive could not allocate a writer")
        }
        self.tar = tar
        self.links = links
        archive_write_set_format_pax_restricted(tar)
        archive_write_set_bytes_in_last_block(tar, 1)
        archive_entry_linkresolver_set_strategy(links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED)
        let context = Unmanaged.passUnretained(self).toOpaque()
        try check(archive_write_open(tar, context, nil, { _, context, bytes, count in
            guard let context, let bytes else { return -1 }
            return Unmanaged<TreeArchiver>.fromOpaque(context).takeUnretainedValue().write(bytes, count)
        }, nil))
    }

    deinit {
        archive_write_free(tar)
        archive_entry_linkresolver_free(links)
        buffer.deallocate()
    }

    private func write(_ bytes: UnsafeRawPointer, _ count: Int) -> Int {
        var offset = 0
        while offset < count {
            // A socket is written without SIGPIPE; anything else plainly.
            var written = isSocket ? send(output, bytes + offset, count - offset, Int32(MSG_NOSIGNAL)) : -1
            if isSocket && written < 0 && errno == ENOTSOCK { isSocket = false }
            if !isSocket { written = withoutSIGPIPE { Glibc.write(output, bytes + offset, count - offset) } }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                failure = errno == EPIPE || errno == ECONNRESET ? OutputClosed()
                    : RuntimeError(.systemCall, "cannot write the archive of \(display)", underlying: Sys.errno)
                return -1
            }
            offset += written
        }
        return count
    }

    private func check(_ status: Int32) throws {
        if let failure { throw failure }
        guard status >= ARCHIVE_WARN else {
            let message = archive_error_string(tar).map { String(cString: $0) } ?? "unknown libarchive error"
            throw RuntimeError(.systemCall, "cannot archive \(display): \(message)")
        }
    }

    /// Adds `source` under `name`, or its contents (a directory's entries
    /// at the top of the archive) when `name` is nil.
    func add(_ source: CopySource, as name: [UInt8]?) throws {
        let st = try inspect(source.fd, display: display)
        rootDevice = st.st_dev
        if let name {
            try add(source.fd, st, path: name)
        } else {
            try walk(source.fd, path: [])
        }
    }

    /// Ends the archive.
    func finish() throws {
        try check(archive_write_close(tar))
    }

    private func inspect(_ fd: Int32, display: String) throws -> stat {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw RuntimeError(.systemCall, "cannot inspect \(display)", underlying: Sys.errno) }
        return st
    }

    private func describe(_ path: [UInt8]) -> String {
        path.isEmpty ? display : display + "/" + String(decoding: path, as: UTF8.self)
    }

    /// Opens what an O_PATH descriptor designates for reading. Its type is
    /// known (a directory or a regular file), and it is the same file whatever
    /// was renamed meanwhile.
    private func reopen(_ fd: Int32, directory: Bool, path: [UInt8]) throws -> Int32 {
        let opened = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC | O_NOCTTY | (directory ? O_DIRECTORY : 0))
        guard opened >= 0 else { throw RuntimeError(.systemCall, "cannot open \(describe(path))", underlying: Sys.errno) }
        return opened
    }

    /// Adds the entries of the directory `fd` (an O_PATH descriptor) below `path`.
    private func walk(_ fd: Int32, path: [UInt8]) throws {
        let directory = try reopen(fd, directory: true, path: path)
        guard let stream = fdopendir(directory) else {
            close(directory)
            throw RuntimeError(.systemCall, "cannot list \(describe(path))", underlying: Sys.errno)
        }
        defer { closedir(stream) }
        var names: [[UInt8]] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != [0x2e] && name != [0x2e, 0x2e] { names.append(name) }
        }
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let childPath = path.isEmpty ? name : path + [0x2f] + name
            let child = withCString(name) { openat(dirfd(stream), $0, GANTRY_O_PATH | O_NOFOLLOW | O_CLOEXEC) }
            // Removed meanwhile: what is gone is not copied.
            if child < 0 && errno == ENOENT { continue }
            guard child >= 0 else { throw RuntimeError(.systemCall, "cannot open \(describe(childPath))", underlying: Sys.errno) }
            defer { close(child) }
            try add(child, try inspect(child, display: describe(childPath)), path: childPath)
        }
    }

    private func add(_ fd: Int32, _ st: stat, path: [UInt8]) throws {
        var st = st
        let kind = st.st_mode & S_IFMT
        if kind == S_IFSOCK { return }
        guard var entry = archive_entry_new() else {
            throw RuntimeError(.systemCall, "cannot archive \(display): libarchive could not allocate an entry")
        }
        archive_entry_copy_stat(entry, &st)
        withCString(path + (kind == S_IFDIR ? [0x2f] : [])) { archive_entry_copy_pathname(entry, $0) }
        archive_entry_unset_atime(entry)
        archive_entry_unset_ctime(entry)
        archive_entry_unset_birthtime(entry)
        if kind != S_IFREG { archive_entry_set_size(entry, 0) }
        if kind == S_IFLNK {
            var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlinkat(fd, "", &target, target.count - 1)
            guard count >= 0 else {
                archive_entry_free(entry)
                throw RuntimeError(.systemCall, "cannot read the symlink \(describe(path))", underlying: Sys.errno)
            }
            target[count] = 0
            archive_entry_copy_symlink(entry, target)
        }
        var spare: OpaquePointer?
        var linked: OpaquePointer? = entry
        archive_entry_linkify(links, &linked, &spare)
        if let spare { archive_entry_free(spare) }
        guard let resolved = linked else { return }
        entry = resolved
        defer { archive_entry_free(entry) }
        // A hard link to a file already archived carries no data.
        let hasData = kind == S_IFREG && archive_entry_hardlink(entry) == nil && st.st_size > 0
        let data = hasData ? try reopen(fd, directory: false, path: path) : -1
        defer { if data >= 0 { close(data) } }
        try check(archive_write_header(tar, entry))
        if hasData {
            // A file that shrinks meanwhile is padded with zeros by libarchive.
            var remaining = Int64(st.st_size)
            while remaining > 0 {
                let count = read(data, buffer.baseAddress, Int(min(Int64(buffer.count), remaining)))
                if count < 0 && errno == EINTR { continue }
                guard count >= 0 else { throw RuntimeError(.systemCall, "cannot read \(describe(path))", underlying: Sys.errno) }
                if count == 0 { break }
                let written = archive_write_data(tar, buffer.baseAddress, count)
                if written < 0 { try check(Int32(written)) }
                remaining -= Int64(count)
            }
        }
        if kind == S_IFDIR && st.st_dev == rootDevice {
            try walk(fd, path: path)
        }
    }
}

/// The first error of work done on another thread.

private func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    try (bytes + [0]).withUnsafeBufferPointer { buffer in
        try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress.unsafelyUnwrapped) }
    }
}
