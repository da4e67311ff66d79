import Foundation
import CGantrySystem
import GantryCore
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Small, allocation-light file helpers for kernel interfaces (cgroup files,
/// `/proc`) and state files, each error naming the path.
enum FileIO {
    /// Writes `value` to an existing file (a cgroup or proc file) in one `write`.
    static func write(_ value: String, to path: String, code: RuntimeError.Code = .cgroup) throws {
        guard let fd = OwnedDescriptor(opening: path, O_WRONLY | O_CLOEXEC) else { throw RuntimeError(code, "cannot open \(path)", underlying: Sys.errno) }
        let bytes = Array(value.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd.raw, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw RuntimeError(code, "cannot write \"\(value)\" to \(path)", underlying: Sys.errno)
        }
    }

    /// Reads a small file (up to 64 KiB) as text.
    static func read(_ path: String, code: RuntimeError.Code = .cgroup) throws -> String {
        guard let fd = OwnedDescriptor(opening: path, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(code, "cannot open \(path)", underlying: Sys.errno) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var total = 0
        while total < buffer.count {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd.raw, $0.baseAddress! + total, $0.count - total) }
            if count < 0 && Glibc.errno == EINTR { continue }
            guard count >= 0 else { throw RuntimeError(code, "cannot read \(path)", underlying: Sys.errno) }
            if count == 0 { break }
            total += count
        }
        return String(decoding: buffer[..<total], as: UTF8.self)
    }

    /// Reads a file holding one integer (or `max`, returned as `nil`).
    static func readNumber(_ path: String) throws -> Int64? {
        let text = try read(path).trimmingCharacters(in: .whitespacesAndNewlines)
        if text == "max" { return nil }
        guard let value = Int64(text) else {
            throw RuntimeError(.cgroup, "\(path) holds \"\(text)\", not a number")
        }
        return value
    }

    /// The value of `key` in a flat keyed file (`key value` per line), as
    /// `memory.stat`, `cpu.stat` and `memory.events` are.
    static func keyedValue(_ key: String, in text: String) -> Int64? {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 1)
            if fields.count == 2, fields[0] == key { return Int64(fields[1].trimmingCharacters(in: .whitespaces)) }
        }
        return nil
    }

    /// Replaces the state file at `path` with `data`. The caller holds the
    /// lock of the file's directory (or the directory is new).
    ///
    /// The new content goes to `path.next` in full first. Then the old file
    /// is unlinked and the new one renamed into place: renaming over an
    /// existing file would be atomic for readers that take no lock, but on
    /// ext4 it also forces the new file's blocks to be allocated at once
    /// (`auto_da_alloc`), which costs about four times as much. A reader
    /// that finds no file reads again under the lock (``readStateFile(_:lock:)``),
    /// and a writer that died between the two steps left a complete
    /// `path.next`.
    ///
    /// With `exchanging`, for a file written many times in a directory that
    /// is removed whole, `path.next` changes places with `path` in one step
    /// instead (`renameat2` with `RENAME_EXCHANGE`), and keeps the previous
    /// content, its inode written over the next time: readers always find
    /// `path` whole, and no inode is allocated or freed for a replacement
    /// (on ext4 without a journal each allocation scans the inodes freed in
    /// the last 30 seconds, which many short-lived containers make costly).
    /// So that `auto_da_alloc` forces nothing either, `path.next` is written
    /// over and then cut to its new length, never truncated to nothing.
    ///
    /// Runtime state describes processes, which a machine crash ends anyway,
    /// so it is not flushed to disk (runc keeps its state on tmpfs).
    static func replaceStateFile(_ path: String, with data: Data, exchanging: Bool = false) throws {
        let next = path + ".next"
        let fd = open(next, O_WRONLY | O_CREAT | O_CLOEXEC | (exchanging ? 0 : O_TRUNC), 0o600)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot create \(next)", underlying: Sys.errno) }
        let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        let writeError = Sys.errno
        let cut = written == data.count && (!exchanging || ftruncate(fd, off_t(data.count)) == 0)
        let cutError = Sys.errno
        close(fd)
        guard written == data.count, cut else {
            unlink(next)
            throw RuntimeError(.systemCall, "cannot write \(next)", underlying: written == data.count ? cutError : writeError)
        }
        if exchanging {
            if gantry_renameat2(AT_FDCWD, next, AT_FDCWD, path, UInt32(GANTRY_RENAME_EXCHANGE)) == 0 { return }
            // No `path` yet (ENOENT), or a file system without exchange (EINVAL).
            guard Glibc.errno == ENOENT || Glibc.errno == EINVAL else {
                throw RuntimeError(.systemCall, "cannot exchange \(next) with \(path)", underlying: Sys.errno)
            }
        } else {
            guard unlink(path) == 0 || Glibc.errno == ENOENT else {
                let error = Sys.errno
                unlink(next)
                throw RuntimeError(.systemCall, "cannot replace \(path)", underlying: error)
            }
        }
        guard rename(next, path) == 0 else {
            throw RuntimeError(.systemCall, "cannot rename \(next) to \(path)", underlying: Sys.errno)
        }
    }

    /// Makes the directory `name` in `directory` whole or not at all: `fill`
    /// builds it under a staging name (`.new-NAME-RANDOM-PID-START`, which readers
    /// of records skip), and it is renamed into place without replacing
    /// anything, so a process killed on the way leaves no named directory
    /// without its record. Staging directories of processes that ended are
    /// removed first. Returns false, having made nothing, when `name`
    /// exists already.
    static func createRecordDirectory(_ name: String, in directory: String, mode: mode_t, _ fill: (_ staging: String) throws -> Void) throws -> Bool {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where entry.hasPrefix(".new-") {
            guard ProcessMark.hasEnded(entry) == true else { continue }
            try? Sys.removeTree(directory + "/" + entry)
        }
        // Random, so that two creations of one name at once in this process
        // do not share it (the rename decides which one makes the name).
        var generator = SystemRandomNumberGenerator()
        let staging = directory + "/.new-\(name)-\(String(generator.next() as UInt64, radix: 16))-\(ProcessMark.current)"
        guard mkdir(staging, mode) == 0 else { throw RuntimeError(.systemCall, "cannot create \(staging)", underlying: Sys.errno) }
        do {
            try fill(staging)
            chmod(staging, mode)
            guard gantry_renameat2(AT_FDCWD, staging, AT_FDCWD, directory + "/" + name, UInt32(GANTRY_RENAME_NOREPLACE)) == 0 else {
                if Glibc.errno == EEXIST || Glibc.errno == ENOTEMPTY {
                    try? Sys.removeTree(staging)
                    return false
                }
                throw RuntimeError(.systemCall, "cannot move \(staging) to \(directory)/\(name)", underlying: Sys.errno)
            }
        } catch {
            try? Sys.removeTree(staging)
            throw error
        }
        return true
    }

    /// Reads a state file written by ``replaceStateFile(_:with:)`` and
    /// decodes it with `decode`. When the file is missing or cannot be
    /// decoded (a writer is between its steps), it reads again holding the
    /// directory `lock` shared, falling back to the complete `path.next`
    /// that a writer which died between its steps left. Returns `nil` when
    /// there is no state (the directory is being created or removed).
    ///
    /// With `holdingLock`, the caller holds the directory's lock already
    /// (exclusively): taking it again, from another descriptor, would wait
    /// for the caller itself.
    static func readStateFile<T>(_ path: String, lock directory: String, holdingLock: Bool = false, _ decode: (Data) throws -> T) throws -> T? {
        if let data = FileManager.default.contents(atPath: path), let value = try? decode(data) { return value }
        let lock = holdingLock ? -1 : open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard holdingLock || lock >= 0 else { return nil }
        defer { if lock >= 0 { close(lock) } }
        if lock >= 0 { flock(lock, LOCK_SH) }
        // An empty next file is one made ahead of need, not a state.
        guard let data = FileManager.default.contents(atPath: path) ?? FileManager.default.contents(atPath: path + ".next"), !data.isEmpty else {
            return nil
        }
        return try decode(data)
    }

    /// The state file `file` of the entry `name` of `directory` (a network,
    /// a volume, a pod), decoded; nil when there is none, or when `name` is
    /// not a plain entry name.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` when the file
    ///   cannot be decoded.
    static func readNamedRecord<T: Decodable>(_ type: T.Type, in directory: String, named name: String, file: String) throws -> T? {
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else { return nil }
        let path = directory + "/" + name
        do {
            return try readStateFile(path + "/" + file, lock: path) { try ContainerRuntime.decoder.decode(T.self, from: $0) }
        } catch {
            throw RuntimeError(.invalidState, "\(path)/\(file) cannot be read: \(error)")
        }
    }

    /// The record `file` of the entry `name` of `directory`, a `kind`
    /// (network, volume) whose damaged records `damaged` lists.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound` when there is no such
    ///   entry, `invalidState` naming the file when its record is damaged.
    static func readRecord<T: Decodable>(_ type: T.Type, kind: String, named name: String, in directory: String, file: String,
                                         damaged: () -> [DamagedRecord]) throws -> T {
        var failure: (any Error)?
        do {
            if let record = try readNamedRecord(T.self, in: directory, named: name, file: file) { return record }
        } catch {
            failure = error
        }
        if let damaged = damaged().first(where: { $0.name == name }) {
            throw RuntimeError(.invalidState, "the record of \(kind) \(name), \(damaged.file), cannot be read (\(damaged.reason)); \(damaged.advice(kind: kind))")
        }
        if let failure { throw failure }
        throw RuntimeError(.notFound, "no \(kind) is named \(name)")
    }

    /// Why the state file at `path` cannot be read as a `T`, or nil when it can.
    static func damage<T: Decodable>(of type: T.Type, at path: String, lock directory: String) -> String? {
        do {
            return try readStateFile(path, lock: directory) { try ContainerRuntime.decoder.decode(T.self, from: $0) } == nil ? "it is missing" : nil
        } catch let error as DecodingError {
            switch error {
            case .dataCorrupted(let context): return context.debugDescription
            case .keyNotFound(let key, _): return "it lacks \"\(key.stringValue)\""
            case .typeMismatch(_, let context), .valueNotFound(_, let context):
                return "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
            @unknown default: return "\(error)"
            }
        } catch {
            return "\(error)"
        }
    }

    /// Every entry of `directory` whose state file `file` can be read.
    static func readNamedRecords<T: Decodable>(_ type: T.Type, in directory: String, file: String) -> [T] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { try? readNamedRecord(T.self, in: directory, named: $0, file: file) }
    }

    /// Copies the tree under the directory `source` into the directory
    /// `destination` (both descriptors): directories, regular files,
    /// symlinks (as symlinks, never followed) and FIFOs, with their owners
    /// and modes; device nodes and sockets are skipped, hard links stay
    /// links (a tree of many links to one big file must not grow). Every
    /// entry is opened relative to its parent's descriptor with O_NOFOLLOW,
    /// so no link in the source can lead the copy out. `path` names the
    /// copy in errors.
    static func copyTree(from source: Int32, to destination: Int32, path: String) throws {
        var links: [HardLink: String] = [:]
        try copyTree(from: source, to: destination, root: destination, relative: "", path: path, links: &links, depth: 0)
    }

    private struct HardLink: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private static func copyTree(from source: Int32, to destination: Int32, root: Int32, relative: String, path: String,
                                 links: inout [HardLink: String], depth: Int) throws {
        guard depth < 512 else { throw RuntimeError(.systemCall, "\(path) is nested too deeply to copy") }
        let listing = dup(source)
        guard listing >= 0, let stream = fdopendir(listing) else {
            throw RuntimeError(.systemCall, "cannot list \(path)", underlying: Sys.errno)
        }
        defer { closedir(stream) }
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            var info = stat()
            guard fstatat(source, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw RuntimeError(.systemCall, "cannot inspect \(path)/\(name)", underlying: Sys.errno)
            }
            let mode = info.st_mode & 0o7777
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                guard mkdirat(destination, name, 0o700) == 0 || Glibc.errno == EEXIST else {
                    throw RuntimeError(.systemCall, "cannot create \(path)/\(name)", underlying: Sys.errno)
                }
                let from = openat(source, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                let to = openat(destination, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                defer {
                    if from >= 0 { close(from) }
                    if to >= 0 { close(to) }
                }
                guard from >= 0, to >= 0 else { throw RuntimeError(.systemCall, "cannot open \(path)/\(name)", underlying: Sys.errno) }
                try copyTree(from: from, to: to, root: root, relative: relative + name + "/", path: path + "/" + name, links: &links, depth: depth + 1)
                fchown(to, info.st_uid, info.st_gid)
                fchmod(to, mode)
            case S_IFREG:
                let identity = HardLink(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
                if info.st_nlink > 1 {
                    if let first = links[identity] {
                        guard linkat(root, first, destination, name, 0) == 0 else {
                            throw RuntimeError(.systemCall, "cannot link \(path)/\(name)", underlying: Sys.errno)
                        }
                        continue
                    }
                    links[identity] = relative + name
                }
                let from = openat(source, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                let to = openat(destination, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                defer {
                    if from >= 0 { close(from) }
                    if to >= 0 { close(to) }
                }
                guard from >= 0, to >= 0 else { throw RuntimeError(.systemCall, "cannot copy \(path)/\(name)", underlying: Sys.errno) }
                try Sys.copyFile(from: from, to: to, size: Int64(info.st_size), display: path + "/" + name)
                // Owner first: chown clears the set-ID bits.
                fchown(to, info.st_uid, info.st_gid)
                fchmod(to, mode)
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlinkat(source, name, &buffer, buffer.count - 1)
                guard length >= 0 else { throw RuntimeError(.systemCall, "cannot read link \(path)/\(name)", underlying: Sys.errno) }
                buffer[length] = 0
                guard symlinkat(buffer, destination, name) == 0 else {
                    throw RuntimeError(.systemCall, "cannot create link \(path)/\(name)", underlying: Sys.errno)
                }
                fchownat(destination, name, info.st_uid, info.st_gid, AT_SYMLINK_NOFOLLOW)
            case S_IFIFO:
                guard mkfifoat(destination, name, mode) == 0 else {
                    throw RuntimeError(.systemCall, "cannot create \(path)/\(name)", underlying: Sys.errno)
                }
                fchownat(destination, name, info.st_uid, info.st_gid, AT_SYMLINK_NOFOLLOW)
            default:
                continue
            }
        }
    }
}
