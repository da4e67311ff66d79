import CArchive
import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a directory tree as a gzip-compressed tar layer (PAX where
/// needed) into a ``BlobWriter``, computing the DiffID on the way.
///
/// Entries are written in byte order of their paths with numeric owners
/// only, no access or change times, and a gzip header without a timestamp,
/// so the same tree always yields the same digests. Hard links are kept,
/// sockets are skipped, and other file systems mounted inside the tree are
/// not entered (like `tar --one-file-system`). Extended attributes are
/// carried for `user.*`, `trusted.*` and `security.capability`.
final class LayerWriter {
    private let source: String
    private let blob: BlobWriter
    private var diffHasher = DigestHasher(algorithm: .sha256)
    private var failure: (any Error)?
    private let compressed: OpaquePointer
    private let tar: OpaquePointer
    private let disk: OpaquePointer
    private let links: OpaquePointer
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    private var rootDevice: dev_t = 0
    private(set) var entries = 0
    /// Owners are written as this user namespace sees them (the caller is
    /// its root); an owner it does not map becomes its overflow ID, 65534
    /// (or its root, when it maps only that).
    private let userNamespace: UserNamespaceMapping?
    /// Whether `source` is an overlay upper directory, whose whiteouts
    /// (character devices 0/0) and opaque directories become OCI whiteouts
    /// (`.wh.NAME`, `.wh..wh..opq`).
    private let overlayUpper: Bool
    /// Modification times later than this (seconds since the epoch) are
    /// written as it, for reproducible layers.
    private let latestModification: Int64?

    init(source: String, into blob: BlobWriter, userNamespace: UserNamespaceMapping? = nil, overlayUpper: Bool = false,
         latestModification: Int64? = nil) throws {
        self.source = source
        self.blob = blob
        self.userNamespace = userNamespace
        self.overlayUpper = overlayUpper
        self.latestModification = latestModification
        guard let compressed = archive_write_new(), let tar = archive_write_new(), let disk = archive_read_disk_new(),
              let links = archive_entry_linkresolver_new()
        else { throw OCIImageError(.systemCall, "libarchive could not allocate a writer") }
        self.compressed = compressed
        self.tar = tar
        self.disk = disk
        self.links = links
    }

    deinit {
        archive_write_free(tar)
        archive_write_free(compressed)
        archive_read_free(disk)
        archive_entry_linkresolver_free(links)
        buffer.deallocate()
    }

    /// Set when writing failed: the blob is no longer written to.
    private var abandoned = false

    /// Writes the layer. Returns its DiffID and uncompressed size.
    func write() throws -> (diffID: Digest, size: Int64) {
        do {
            return try writeLayer()
        } catch {
            abandoned = true
            throw error
        }
    }

    private func writeLayer() throws -> (diffID: Digest, size: Int64) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        archive_write_add_filter_gzip(compressed)
        archive_write_set_filter_option(compressed, "gzip", "timestamp", nil)
        archive_write_set_format_raw(compressed)
        archive_write_set_bytes_per_block(compressed, 0)
        try check(compressed, archive_write_open(compressed, context, nil, { _, context, bytes, count in
            guard let context, let bytes else { return -1 }
            let writer = Unmanaged<LayerWriter>.fromOpaque(context).takeUnretainedValue()
            // After a failure, the blob may be cancelled before libarchive's
            // last flush (when the writer is freed): nothing more goes to it.
            guard !writer.abandoned else { return -1 }
            do {
                try writer.blob.write(UnsafeRawBufferPointer(start: bytes, count: count))
                return count
            } catch {
                writer.failure = error
                return -1
            }
        }, nil))
        guard let raw = archive_entry_new() else { throw OCIImageError(.systemCall, "libarchive could not allocate an entry") }
        defer { archive_entry_free(raw) }
        archive_entry_set_pathname(raw, "layer.tar")
        archive_entry_set_filetype(raw, GANTRY_AE_IFREG)
        archive_entry_set_perm(raw, 0o644)
        try check(compressed, archive_write_header(compressed, raw))

        archive_write_set_format_pax_restricted(tar)
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_ACL | ARCHIVE_READDISK_NO_FFLAGS)
        try check(tar, archive_write_open(tar, context, nil, { _, context, bytes, count in
            guard let context, let bytes else { return -1 }
            let writer = Unmanaged<LayerWriter>.fromOpaque(context).takeUnretainedValue()
            writer.diffHasher.update(UnsafeRawBufferPointer(start: bytes, count: count))
            let written = archive_write_data(writer.compressed, bytes, count)
            if written < 0 {
                writer.failure = OCIImageError(.corruptLayer, "compressing the layer failed: \(archiveMessage(writer.compressed))")
                return -1
            }
            return written
        }, nil))
        archive_entry_linkresolver_set_strategy(links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED)

        let rootFD = try OwnedDescriptor.open(source, O_RDONLY | O_DIRECTORY)
        rootDevice = try Sys.fstat(rootFD.raw, path: source).st_dev
        try walk(rootFD.raw, relative: [])
        try check(tar, archive_write_close(tar))
        try check(compressed, archive_write_close(compressed))
        return (diffHasher.finalize(), diffHasher.count)
    }

    private func check(_ archive: OpaquePointer, _ status: Int32) throws {
        if let failure { throw failure }
        guard status >= ARCHIVE_WARN else {
            throw OCIImageError(.corruptLayer, "writing the layer for \(source) failed: \(archiveMessage(archive))")
        }
    }

    private func walk(_ directoryFD: Int32, relative: [UInt8]) throws {
        let display = source + "/" + String(decoding: relative, as: UTF8.self)
        for name in try Sys.listDirectory(directoryFD, display: display).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let path = relative.isEmpty ? name : relative + [0x2f] + name
            var st = stat()
            try Sys.check("stat", source + "/" + String(decoding: path, as: UTF8.self)) {
                withCString(name) { fstatat(directoryFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
            }
            let kind = st.st_mode & S_IFMT
            if kind == S_IFSOCK { continue }
            if overlayUpper && kind == S_IFCHR && st.st_rdev == 0 {
                try addWhiteout(relative.isEmpty ? Array(".wh.".utf8) + name : relative + Array("/.wh.".utf8) + name, like: st)
                continue
            }
            var fd: Int32 = -1
            if kind == S_IFREG || kind == S_IFDIR {
                fd = try Sys.check("open", source + "/" + String(decoding: path, as: UTF8.self)) {
                    withCString(name) { openat(directoryFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
                }
            }
            defer { if fd >= 0 { Sys.close(fd) } }
            try add(path: path, stat: st, fd: fd, parentFD: directoryFD, name: name)
            if overlayUpper && kind == S_IFDIR && Self.isOpaque(fd) {
                try addWhiteout(path + Array("/.wh..wh..opq".utf8), like: st)
            }
            if kind == S_IFDIR && st.st_dev == rootDevice {
                try walk(fd, relative: path)
            }
        }
    }

    private func add(path: [UInt8], stat st: stat, fd: Int32, parentFD: Int32, name: [UInt8]) throws {
        guard var entry = archive_entry_new() else { throw OCIImageError(.systemCall, "libarchive could not allocate an entry") }
        var st = st
        let kind = st.st_mode & S_IFMT
        // Symlinks are read through /proc so that their attributes are of the link itself.
        let sourcePath = source + "/" + String(decoding: path, as: UTF8.self)
        archive_entry_copy_sourcepath(entry, sourcePath)
        withCString(path + (kind == S_IFDIR ? [0x2f] : [])) { archive_entry_copy_pathname(entry, $0) }
        let status = archive_read_disk_entry_from_file(disk, entry, fd, &st)
        guard status >= ARCHIVE_WARN else {
            archive_entry_free(entry)
            throw OCIImageError(.systemCall, "reading \(sourcePath) failed: \(archiveMessage(disk))")
        }
        archive_entry_unset_atime(entry)
        archive_entry_unset_ctime(entry)
        archive_entry_unset_birthtime(entry)
        if let latestModification, archive_entry_mtime(entry) > latestModification {
            archive_entry_set_mtime(entry, time_t(latestModification), 0)
        }
        archive_entry_set_uname(entry, nil)
        archive_entry_set_gname(entry, nil)
        if let userNamespace {
            // An owner the namespace does not map (root's files, say) is its
            // overflow ID where it has one, else its root.
            let uid = UserNamespaceMapping.containerID(st.st_uid, in: userNamespace.uids)
                ?? (UserNamespaceMapping.hostID(65534, in: userNamespace.uids) != nil ? 65534 : 0)
            let gid = UserNamespaceMapping.containerID(st.st_gid, in: userNamespace.gids)
                ?? (UserNamespaceMapping.hostID(65534, in: userNamespace.gids) != nil ? 65534 : 0)
            archive_entry_set_uid(entry, la_int64_t(uid))
            archive_entry_set_gid(entry, la_int64_t(gid))
        }
        filterAttributes(entry)

        var spare: OpaquePointer?
        var linked: OpaquePointer? = entry
        archive_entry_linkify(links, &linked, &spare)
        if let spare { archive_entry_free(spare) }
        guard let resolved = linked else { return }
        entry = resolved
        defer { archive_entry_free(entry) }
        try check(tar, archive_write_header(tar, entry))
        entries += 1
        if kind == S_IFREG && archive_entry_size(entry) > 0 {
            while true {
                let count = try Sys.read(fd, into: buffer, path: sourcePath)
                if count == 0 { break }
                let written = archive_write_data(tar, buffer.baseAddress, count)
                if written < 0 { try check(tar, Int32(written)) }
            }
        }
    }

    /// Whether an overlay directory hides what lies below it: root's
    /// overlays mark it with `trusted.overlay.opaque`, those mounted in a
    /// user namespace with `user.overlay.opaque`.
    private static func isOpaque(_ fd: Int32) -> Bool {
        ["trusted.overlay.opaque", "user.overlay.opaque"].contains { name in
            var value: UInt8 = 0
            return gantry_fgetxattr(fd, name, &value, 1) == 1 && value == UInt8(ascii: "y")
        }
    }

    /// Writes an empty OCI whiteout file at `path`, dated like the overlay
    /// entry it stands for.
    private func addWhiteout(_ path: [UInt8], like st: stat) throws {
        guard let entry = archive_entry_new() else { throw OCIImageError(.systemCall, "libarchive could not allocate an entry") }
        defer { archive_entry_free(entry) }
        withCString(path) { archive_entry_copy_pathname(entry, $0) }
        archive_entry_set_filetype(entry, GANTRY_AE_IFREG)
        archive_entry_set_perm(entry, 0)
        archive_entry_set_size(entry, 0)
        archive_entry_set_mtime(entry, time_t(clamped(Int64(st.st_mtim.tv_sec))), 0)
        try check(tar, archive_write_header(tar, entry))
        entries += 1
    }

    private func clamped(_ seconds: Int64) -> Int64 {
        guard let latestModification else { return seconds }
        return min(seconds, latestModification)
    }

    private func filterAttributes(_ entry: OpaquePointer) {
        var kept: [(String, [UInt8])] = []
        ExtendedAttributes.forEach(in: entry) { name, value in
            let key = String(cString: name)
            if ExtendedAttributes.isCarried(key) { kept.append((key, Array(value))) }
        }
        guard archive_entry_xattr_count(entry) > 0 else { return }
        archive_entry_xattr_clear(entry)
        for (key, value) in kept.sorted(by: { $0.0 < $1.0 }) {
            value.withUnsafeBytes { archive_entry_xattr_add_entry(entry, key, $0.baseAddress, $0.count) }
        }
    }
}
