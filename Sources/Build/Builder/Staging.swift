import Foundation
import GantryCore
import OCIImage
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// A step's scratch space in the state root's `build-staging` directory,
/// named with this process's mark so that what a killed build left is
/// removed by the next one: `files` holds the files to place, laid out as
/// they go, beside other areas (`tree`, here-documents, copies from stages).
struct Staging: Sendable {
    /// The step's own directory, made when first asked for.
    let base: String

    /// Where the files to place are laid out (made now if need be).
    func files() throws -> String { try area("files") }

    /// Names the step's scratch space; nothing is made until an area is asked for.
    init(root: StateRoot) {
        var generator = SystemRandomNumberGenerator()
        base = root.buildStaging + "/" + String(generator.next() as UInt64, radix: 16) + "-" + ProcessMark.current
    }

    /// Removes what builds whose process has ended left in `root`'s
    /// staging directory.
    static func removeLeftovers(in root: StateRoot) {
        let directory = root.buildStaging
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where ProcessMark.hasEnded(name) != false {
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }

    /// Another area of the step's scratch space, the space made first if need be.
    func area(_ name: String) throws -> String {
        let directory = (base as NSString).deletingLastPathComponent
        if access(base, F_OK) != 0 {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            guard mkdir(base, 0o700) == 0 || errno == EEXIST else {
                throw BuildError(.context, "cannot make a staging directory in \(directory)", underlying: Errno(rawValue: errno))
            }
        }
        let path = base + "/" + name
        if name == "files", mkdir(path, 0o755) == 0 { chmod(path, 0o755) }
        return path
    }

    /// Removes the step's scratch space.
    func remove() {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Copies one entry (a directory is made empty; a symlink stays a symlink).
    static func copyEntry(_ source: String, to destination: String) throws {
        var status = stat()
        guard lstat(source, &status) == 0 else {
            throw BuildError(.context, "cannot read \(source)", underlying: Errno(rawValue: errno))
        }
        switch status.st_mode & S_IFMT {
        case S_IFDIR:
            if mkdir(destination, 0o700) != 0, errno != EEXIST {
                throw BuildError(.context, "cannot make \(destination)", underlying: Errno(rawValue: errno))
            }
            chmod(destination, status.st_mode & 0o7777)
        case S_IFLNK:
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: source)
            guard symlink(target, destination) == 0 else {
                throw BuildError(.context, "cannot make the symlink \(destination)", underlying: Errno(rawValue: errno))
            }
            copyTimes(source, destination)
        case S_IFREG:
            try copyFile(source, to: destination)
        default:
            break  // FIFOs, sockets and devices are not copied.
        }
    }

    /// Copies a regular file (following a symlink), with its mode and times.
    static func copyFile(_ source: String, to destination: String) throws {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw BuildError(.context, "cannot read \(source)", underlying: Errno(rawValue: errno)) }
        defer { close(input) }
        var status = stat()
        fstat(input, &status)
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw BuildError(.context, "cannot write \(destination)", underlying: Errno(rawValue: errno)) }
        defer { close(output) }
        var remaining = Int(status.st_size)
        while remaining > 0 {
            let copied = sendfile(output, input, nil, remaining)
            if copied <= 0 {
                if copied < 0, errno == EINTR { continue }
                if copied == 0 { break }
                // Across file systems that refuse it: read and write.
                try copyByReading(input, output, destination)
                break
            }
            remaining -= copied
        }
        fchmod(output, status.st_mode & 0o7777)
        var times = [status.st_atim, status.st_mtim]
        futimens(output, &times)
    }

    private static func copyByReading(_ input: Int32, _ output: Int32, _ destination: String) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(input, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw BuildError(.context, "cannot read for \(destination)", underlying: Errno(rawValue: errno)) }
            if count == 0 { return }
            do {
                try Sys.writeAll(output, UnsafeRawBufferPointer(rebasing: buffer[..<count]), path: destination)
            } catch {
                throw BuildError(.context, "cannot write \(destination)", underlying: error)
            }
        }
    }

    static func copyTimes(_ source: String, _ destination: String) {
        var status = stat()
        guard lstat(source, &status) == 0 else { return }
        var times = [status.st_atim, status.st_mtim]
        utimensat(AT_FDCWD, destination, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// Copies what `listing` names into `root` (parents made as needed,
    /// modes and times kept, directories' times last), then gives it to
    /// `owner` and `mode` (when given); an ordinary user's files stay
    /// theirs, which the container sees as its root's.
    static func place(_ listing: [CopyEntry], into root: String, owner: (uid: UInt32, gid: UInt32), mode: UInt32?) throws {
        var directories: [(String, String)] = []
        for entry in listing {
            let target = root + "/" + entry.target
            let parent = (target as NSString).deletingLastPathComponent
            if access(parent, F_OK) != 0 { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
            var status = stat()
            let found = entry.followsLink ? stat(entry.source, &status) : lstat(entry.source, &status)
            guard found == 0 else { throw BuildError(.context, "cannot read \(entry.source)", underlying: Errno(rawValue: errno)) }
            if status.st_mode & S_IFMT == S_IFDIR {
                if mkdir(target, 0o700) != 0, errno != EEXIST {
                    throw BuildError(.context, "cannot make \(target)", underlying: Errno(rawValue: errno))
                }
                chmod(target, status.st_mode & 0o7777)
                directories.append((entry.source, target))
            } else if entry.followsLink {
                try copyFile(entry.source, to: target)
            } else {
                try copyEntry(entry.source, to: target)
            }
        }
        for (from, to) in directories.reversed() { copyTimes(from, to) }
        for entry in listing {
            let path = root + "/" + entry.target
            var status = stat()
            guard lstat(path, &status) == 0 else { continue }
            if geteuid() == 0, lchown(path, owner.uid, owner.gid) != 0 {
                throw BuildError(.context, "cannot give \(path) to \(owner.uid):\(owner.gid)", underlying: Errno(rawValue: errno))
            }
            if let mode, status.st_mode & S_IFMT != S_IFLNK {
                chmod(path, mode_t(mode))
            }
        }
    }

    /// The cache key's view of what `listing` places: each entry's path,
    /// kind and mode (`mode` applied), owner, link target and content
    /// digest, in path order, read from the sources.
    static func fingerprint(_ listing: [CopyEntry], owner: (uid: UInt32, gid: UInt32)?, mode: UInt32?) throws -> [String] {
        try listing.sorted { $0.target < $1.target }.map { entry in
            var status = stat()
            let found = entry.followsLink ? stat(entry.source, &status) : lstat(entry.source, &status)
            guard found == 0 else { throw BuildError(.context, "cannot read \(entry.source)", underlying: Errno(rawValue: errno)) }
            let kind = status.st_mode & S_IFMT
            let permissions = (mode.map { mode_t($0) } ?? status.st_mode & 0o7777)
            let shownOwner = owner.map { "\($0.uid):\($0.gid)" } ?? "\(status.st_uid):\(status.st_gid)"
            var line = "\(entry.target) \(String(kind, radix: 8)) \(String(kind == S_IFLNK ? 0o777 : permissions, radix: 8)) \(shownOwner)"
            switch kind {
            case S_IFLNK: line += " -> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: entry.source)) ?? "")
            case S_IFREG: line += " " + (try digest(entry.source)).description
            default: break
            }
            return line
        }
    }

    private static func digest(_ path: String) throws -> Digest {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BuildError(.context, "cannot read \(path)", underlying: Errno(rawValue: errno)) }
        defer { close(fd) }
        var hasher = DigestHasher()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw BuildError(.context, "cannot read \(path)", underlying: Errno(rawValue: errno)) }
            if count == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
        return hasher.finalize()
    }

    /// Whether `ADD` extracts the file: a tar archive, plain or compressed
    /// with gzip, bzip2, xz or zstd.
    static func isArchive(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = [UInt8]((try? handle.read(upToCount: 512)) ?? Data())
        let magics: [[UInt8]] = [[0x1f, 0x8b], [0x42, 0x5a, 0x68], [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], [0x28, 0xb5, 0x2f, 0xfd]]
        if magics.contains(where: { head.starts(with: $0) }) { return true }
        return head.count >= 262 && Array(head[257..<262]) == Array("ustar".utf8)
    }

    /// Extracts an archive into a host directory with GNU tar (owners
    /// kept when root), for a stage that has no file system yet.
    static func extract(_ archive: String, into directory: String) throws {
        do {
            _ = try runTool("/bin/tar", ["-xf", archive, "-C", directory])
        } catch let error as BuildError {
            throw BuildError(.context, "cannot extract \(archive): \(error.message)")
        }
    }

    /// Runs a program of the host and returns its standard output.
    ///
    /// - Throws: ``BuildError`` (`context`) with what it wrote to its
    ///   standard error, unless it exits 0.
    static func runTool(_ program: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let environment { process.environment = environment }
        // Its complaints go to an unnamed file, read at its end, so that
        // neither of two pipes can fill while the other is read.
        // O_TMPFILE, which the C headers define as a macro Swift cannot import.
        let errorFile = open("/tmp", 0o20000000 | O_DIRECTORY | O_RDWR | O_CLOEXEC, 0o600)
        guard errorFile >= 0 else { throw BuildError(.context, "cannot run \(program)", underlying: Errno(rawValue: errno)) }
        let errors = FileHandle(fileDescriptor: errorFile, closeOnDealloc: true)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        lseek(errorFile, 0, SEEK_SET)
        let errorText = errors.readDataToEndOfFile()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errorText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw BuildError(.context, message.isEmpty ? "\((program as NSString).lastPathComponent) exited with \(process.terminationStatus)" : message)
        }
        return String(decoding: text, as: UTF8.self)
    }
}
