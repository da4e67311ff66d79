import CGantryLauncher
import CGantrySystem
public import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Which output stream a chunk came from.
public enum StandardStream: String, Hashable, Sendable, Codable {
    /// Standard output.
    case stdout
    /// Standard error.
    case stderr
}

/// A piece of a container's output, as written to its log.
public struct OutputChunk: Hashable, Sendable {
    /// The stream it came from.
    public var stream: StandardStream
    /// When Gantry read it.
    public var time: Date
    /// The bytes: a line with its newline, or a partial line.
    public var bytes: [UInt8]

    /// The bytes as UTF-8 text (invalid sequences replaced).
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A container's output log: JSON lines in Docker's `json-file` format
/// (`{"log":"…","stream":"stdout","time":"…"}`, plus `"bytes"` in base64
/// when the output is not UTF-8), rotated at a size limit.
final class ContainerLogWriter: @unchecked Sendable {
    // Used by the supervisor thread only, after creation.
    private let path: String
    private let options: ContainerSpec.LogOptions
    private var fd: Int32
    private var size: Int64
    private var partial: [StandardStream: Bool] = [:]

    init(path: String, options: ContainerSpec.LogOptions) throws {
        self.path = path
        self.options = options
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot open the log \(path)", underlying: Sys.errno) }
        var info = stat()
        fstat(fd, &info)
        size = Int64(info.st_size)
    }

    deinit { close(fd) }

    /// Appends output, one entry per line, rotating between entries.
    func append(_ bytes: UnsafeRawBufferPointer, stream: StandardStream) {
        var record: [UInt8] = []
        record.reserveCapacity(min(bytes.count, 1 << 16) + 96)
        let time = Self.timestamp()
        var start = 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: 0x0a).map { $0 + 1 } ?? bytes.count
            let before = record.count
            Self.encode(UnsafeRawBufferPointer(rebasing: bytes[start ..< end]), stream: stream, time: time, into: &record)
            if size + Int64(record.count) > options.maxSize && size + Int64(before) > 0 {
                // This entry goes to the next file.
                let entry = Array(record[before...])
                record.removeSubrange(before...)
                flush(record)
                rotate()
                record = entry
            }
            start = end
        }
        flush(record)
    }

    private func flush(_ record: [UInt8]) {
        guard !record.isEmpty else { return }
        let written = record.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written > 0 { size += Int64(written) }
    }

    /// Shifts `log` → `log.1` → `log.2` …, dropping the oldest.
    private func rotate() {
        guard options.maxFiles > 1 else {
            ftruncate(fd, 0)
            size = 0
            return
        }
        unlink("\(path).\(options.maxFiles - 1)")
        for index in stride(from: options.maxFiles - 2, through: 1, by: -1) {
            rename("\(path).\(index)", "\(path).\(index + 1)")
        }
        rename(path, path + ".1")
        let next = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        if next >= 0 {
            close(fd)
            fd = next
            size = 0
        }
    }

    private static func timestamp() -> [UInt8] {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let text = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                          parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec)
        return Array(text.utf8)
    }

    private static let hex = Array("0123456789abcdef".utf8)

    private static func encode(_ bytes: UnsafeRawBufferPointer, stream: StandardStream, time: [UInt8], into record: inout [UInt8]) {
        record += Array(#"{"log":""#.utf8)
        let valid = String(validating: bytes, as: UTF8.self) != nil
        if valid {
            for byte in bytes {
                switch byte {
                case 0x22: record += [0x5c, 0x22]
                case 0x5c: record += [0x5c, 0x5c]
                case 0x0a: record += [0x5c, 0x6e]
                case 0x0d: record += [0x5c, 0x72]
                case 0x09: record += [0x5c, 0x74]
                case 0 ..< 0x20, 0x7f:
                    record += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
                default: record.append(byte)
                }
            }
        }
        record += Array(#"","stream":""#.utf8) + Array(stream.rawValue.utf8) + Array(#"","time":""#.utf8) + time + [0x22]
        if !valid {
            record += Array(#","bytes":""#.utf8) + Array(Data(bytes).base64EncodedString().utf8) + [0x22]
        }
        record += [0x7d, 0x0a]
    }
}

/// Tells readers of a log that more has been written, or that nothing more will be.
final class OutputSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// The current generation and whether output has ended.
    var snapshot: (generation: UInt64, finished: Bool) {
        state.withLock { ($0.generation, $0.finished) }
    }

    func bump(finished: Bool = false) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.generation &+= 1
            if finished { state.finished = true }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once the generation differs from `generation` or output has ended.
    func wait(after generation: UInt64) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.generation != generation || state.finished { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}

/// Reads a container's log from the oldest kept entry on, following it
/// while the container runs.
struct LogFollower: AsyncSequence, Sendable {
    typealias Element = OutputChunk

    let path: String
    let maxFiles: Int
    let streams: Set<StandardStream>
    let follow: Bool
    /// In-process notification of new output; without it (another process
    /// writes the log) the follower polls.
    let signal: OutputSignal?
    /// Whether the writer has finished, for followers in other processes.
    let isFinished: @Sendable () -> Bool

    struct AsyncIterator: AsyncIteratorProtocol {
        let follower: LogFollower
        var pendingFiles: [String]
        /// The file being read; closed when the iterator goes away, however
        /// the iteration ends (a cancelled reader included).
        var file: OpenFile?
        var fd: Int32 { file?.fd ?? -1 }
        var inode: UInt64 = 0
        var buffer: [UInt8] = []
        var ready: [OutputChunk] = []
        var done = false

        init(_ follower: LogFollower) {
            self.follower = follower
            pendingFiles = stride(from: follower.maxFiles - 1, through: 1, by: -1).map { "\(follower.path).\($0)" } + [follower.path]
        }

        mutating func next() async throws -> OutputChunk? {
            while true {
                if !ready.isEmpty { return ready.removeFirst() }
                if done { closeFile(); return nil }
                let generation = follower.signal?.snapshot
                if readSome() { continue }
                // At the end of the current file: a newer one, or wait.
                if advanceFile() { continue }
                let finished = generation?.finished ?? follower.isFinished()
                if !follower.follow || finished {
                    // One last read: output written just before the end.
                    if readSome() || advanceFile() { continue }
                    done = true
                    continue
                }
                if let signal = follower.signal, let generation {
                    await signal.wait(after: generation.generation)
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
                try Task.checkCancellation()
            }
        }

        /// Reads what is there; returns whether any chunk was decoded.
        private mutating func readSome() -> Bool {
            if fd < 0 && !openNext() { return false }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { return false }
            buffer += chunk[..<count]
            while let newline = buffer.firstIndex(of: 0x0a) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if let chunk = Self.decode(line), follower.streams.contains(chunk.stream) { ready.append(chunk) }
            }
            return true
        }

        /// Opens the oldest file not read yet.
        private mutating func openNext() -> Bool {
            while !pendingFiles.isEmpty {
                let path = pendingFiles.removeFirst()
                let opened = open(path, O_RDONLY | O_CLOEXEC)
                if opened >= 0 {
                    file = OpenFile(opened)
                    var info = stat()
                    fstat(fd, &info)
                    inode = UInt64(info.st_ino)
                    return true
                }
            }
            return false
        }

        /// Moves on from a file read to its end: to the next older file
        /// kept, or, after a rotation, to the new current file.
        private mutating func advanceFile() -> Bool {
            if fd < 0 || !pendingFiles.isEmpty {
                closeFile()
                return openNext()
            }
            var info = stat()
            guard stat(follower.path, &info) == 0, UInt64(info.st_ino) != inode else { return false }
            // Rotated: what was written to the old file before is read first.
            if readSome() { return true }
            closeFile()
            pendingFiles = [follower.path]
            return openNext()
        }

        private mutating func closeFile() {
            file = nil
        }

        static func decode(_ line: [UInt8]) -> OutputChunk? {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                  let streamName = object["stream"] as? String, let stream = StandardStream(rawValue: streamName)
            else { return nil }
            let bytes: [UInt8]
            if let encoded = object["bytes"] as? String, let data = Data(base64Encoded: encoded) {
                bytes = Array(data)
            } else {
                bytes = Array(((object["log"] as? String) ?? "").utf8)
            }
            let time = (object["time"] as? String).flatMap(parseTimestamp) ?? Date()
            return OutputChunk(stream: stream, time: time, bytes: bytes)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(self) }
}

/// A descriptor closed with its last reference.
final class OpenFile: @unchecked Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// The output files of a container that outlives the process that started
/// it: per stream, `stdout.log` (the current one), then `stdout.log.1`,
/// `stdout.log.2`, … (older ones), raw (no timestamps). Its init copies the
/// program's output there and moves the files along at the spec's
/// `LogOptions.maxSize`, keeping `maxFiles` of them.
enum DetachedLog {
    /// How many files a stream keeps (the current one included).
    static func fileCount(_ options: ContainerSpec.LogOptions) -> Int {
        min(max(options.maxFiles, 1), Int(GANTRY_RELAY_FILES_MAX))
    }

    /// A stream's files, the current one first.
    static func paths(in directory: String, _ stream: StandardStream, options: ContainerSpec.LogOptions) -> [String] {
        let current = directory + "/\(stream.rawValue).log"
        return [current] + (1 ..< fileCount(options)).map { current + ".\($0)" }
    }

    /// Creates (empty) every file of both streams, for the init; the caller
    /// closes them once the launch is done.
    static func create(in directory: String, options: ContainerSpec.LogOptions) throws -> [[Int32]] {
        var opened: [[Int32]] = []
        do {
            for stream in [StandardStream.stdout, .stderr] {
                var files: [Int32] = []
                defer { opened.append(files) }
                for path in paths(in: directory, stream, options: options) {
                    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
                    guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot create \(path)", underlying: Sys.errno) }
                    files.append(fd)
                }
            }
        } catch {
            opened.joined().forEach { close($0) }
            throw error
        }
        return opened
    }
}

/// Reads the output files of a container that outlives the process that
/// started it (``DetachedLog``): standard output first, then standard
/// error, each from its oldest file to its current one, following the
/// current ones until the container ends. When the current file is moved
/// along while it is followed, the rest of what was read from it is taken
/// from the file it went to.
struct RawOutputFollower: AsyncSequence, Sendable {
    typealias Element = OutputChunk

    /// Per stream, its files, the current one first.
    let files: [(stream: StandardStream, paths: [String])]
    let follow: Bool
    let isFinished: @Sendable () -> Bool

    struct AsyncIterator: AsyncIteratorProtocol {
        let follower: RawOutputFollower
        /// Older files still to read: (stream index, path, offset).
        var backlog: [(stream: Int, path: String, offset: Int64)]
        /// How far each stream's current file was read.
        var offsets: [Int64]

        init(_ follower: RawOutputFollower) {
            self.follower = follower
            backlog = follower.files.enumerated().flatMap { index, file in file.paths.dropFirst().reversed().map { (index, $0, Int64(0)) } }
            offsets = follower.files.map { _ in 0 }
        }

        static func read(_ path: String, at offset: Int64) -> [UInt8]? {
            guard let fd = OwnedDescriptor(opening: path, O_RDONLY | O_CLOEXEC) else { return nil }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = buffer.withUnsafeMutableBytes { pread(fd.raw, $0.baseAddress, $0.count, off_t(offset)) }
            return count > 0 ? Array(buffer[..<count]) : nil
        }

        mutating func next() async throws -> OutputChunk? {
            following: while true {
                while let first = backlog.first {
                    let stream = follower.files[first.stream].stream
                    if let bytes = Self.read(first.path, at: first.offset) {
                        backlog[0].offset += Int64(bytes.count)
                        return OutputChunk(stream: stream, time: Date(), bytes: bytes)
                    }
                    backlog.removeFirst()
                }
                let finished = follower.isFinished()
                for (index, file) in follower.files.enumerated() {
                    var info = stat()
                    if stat(file.paths[0], &info) == 0, Int64(info.st_size) < offsets[index] {
                        // Moved along: the rest of it is now the second file.
                        if file.paths.count > 1 { backlog.append((index, file.paths[1], offsets[index])) }
                        offsets[index] = 0
                        continue following
                    }
                    if let bytes = Self.read(file.paths[0], at: offsets[index]) {
                        offsets[index] += Int64(bytes.count)
                        return OutputChunk(stream: file.stream, time: Date(), bytes: bytes)
                    }
                }
                if !follower.follow || finished { return nil }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(self) }
}

/// Parses `2026-01-02T03:04:05.123456789Z`.
func parseTimestamp(_ text: String) -> Date? {
    let numbers = text.split(whereSeparator: { !$0.isNumber }).map(String.init)
    guard numbers.count >= 6, let year = Int32(numbers[0]), let month = Int32(numbers[1]), let day = Int32(numbers[2]),
          let hour = Int32(numbers[3]), let minute = Int32(numbers[4]), let second = Int32(numbers[5])
    else { return nil }
    var fields = tm()
    fields.tm_year = year - 1900
    fields.tm_mon = month - 1
    fields.tm_mday = day
    fields.tm_hour = hour
    fields.tm_min = minute
    fields.tm_sec = second
    let seconds = timegm(&fields)
    let fraction = numbers.count > 6 ? (Double("0." + numbers[6]) ?? 0) : 0
    return Date(timeIntervalSince1970: Double(seconds) + fraction)
}

/// The pipes between Gantry and a process it starts: the child's ends
/// become its stdio; the parent keeps the others.
struct ProcessPipes {
    var childStdin: Int32
    var childStdout: Int32
    var childStderr: Int32
    /// -1 when the process reads /dev/null.
    var stdin: Int32
    var stdout: Int32
    var stderr: Int32
    /// For a terminal: the child's end of the socket its master comes over, and ours.
    var console: Int32 = -1
    var consoleReceiver: Int32 = -1

    /// Makes the pipes; with `openStdin`, one for input too.
    static func make(openStdin: Bool) throws -> ProcessPipes {
        var made: [Int32] = []
        func pipe() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [-1, -1]
            guard gantry_pipe(&fds) == 0 else {
                let error = Sys.errno
                made.forEach { close($0) }
                throw RuntimeError(.systemCall, "cannot create a pipe", underlying: error)
            }
            made += fds
            return (fds[0], fds[1])
        }
        let out = try pipe()
        let err = try pipe()
        if openStdin {
            let input = try pipe()
            return ProcessPipes(childStdin: input.read, childStdout: out.write, childStderr: err.write,
                                stdin: input.write, stdout: out.read, stderr: err.read)
        }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard null >= 0 else {
            let error = Sys.errno
            made.forEach { close($0) }
            throw RuntimeError(.systemCall, "cannot open /dev/null", underlying: error)
        }
        return ProcessPipes(childStdin: null, childStdout: out.write, childStderr: err.write, stdin: -1, stdout: out.read, stderr: err.read)
    }

    /// A pseudo-terminal: the child opens it in its own `/dev/pts`, makes
    /// the slave its stdio, and sends the master over a socket; after the
    /// launch ``receiveTerminal(rows:columns:)`` makes the master the
    /// parent's end for output and input (there is no separate stderr).
    static func terminal() throws -> ProcessPipes {
        var fds: [Int32] = [-1, -1]
        guard gantry_socketpair(&fds) == 0 else {
            throw RuntimeError(.systemCall, "cannot create a socket pair for a terminal", underlying: Sys.errno)
        }
        return ProcessPipes(childStdin: -1, childStdout: -1, childStderr: -1, stdin: -1, stdout: -1, stderr: -1,
                            console: fds[1], consoleReceiver: fds[0])
    }

    /// Takes the terminal's master the child sent, sized `rows` x `columns`.
    mutating func receiveTerminal(rows: UInt16 = 24, columns: UInt16 = 80) throws {
        guard consoleReceiver >= 0 else { return }
        defer {
            close(consoleReceiver)
            consoleReceiver = -1
        }
        let master = gantry_receive_fd(consoleReceiver)
        guard master >= 0 else { throw RuntimeError(.systemCall, "the container's terminal did not arrive", underlying: Sys.errno) }
        var size = winsize(ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(master, UInt(TIOCSWINSZ), &size)
        let input = fcntl(master, F_DUPFD_CLOEXEC, 3)
        guard input >= 0 else {
            let error = Sys.errno
            close(master)
            throw RuntimeError(.systemCall, "cannot duplicate the terminal", underlying: error)
        }
        stdout = master
        stdin = input
    }

    /// Closes the child's ends (once it has them, or when it failed to start).
    func closeChildEnds() {
        [childStdin, childStdout, childStderr, console].filter { $0 >= 0 }.forEach { close($0) }
    }

    /// Closes the parent's ends (when the process failed to start).
    func closeParentEnds() {
        [stdin, stdout, stderr, consoleReceiver].filter { $0 >= 0 }.forEach { close($0) }
    }
}
