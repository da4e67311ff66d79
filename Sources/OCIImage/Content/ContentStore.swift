import CGantrySystem
public import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Content-addressed blob storage: `blobs/<algorithm>/<hex>` under the state
/// root.
///
/// A blob becomes visible only once its digest and size are verified: it is
/// written to a temporary file in `ingest/`, flushed with `fsync`, and renamed
/// into place. Concurrent ingests of the same digest are safe: the first
/// rename wins and later ones discard their copy.
public struct ContentStore: Sendable {
    /// The directory holding blobs.
    public let blobsDirectory: String
    /// The directory holding blobs being written.
    public let ingestDirectory: String

    /// The largest document (manifest, index, configuration) read into memory.
    public static let maximumDocumentSize: Int64 = 8 << 20

    /// Opens (creating if needed) a content store in `root`.
    public init(root: String) throws {
        blobsDirectory = root + "/blobs"
        ingestDirectory = root + "/ingest"
        for algorithm in Digest.Algorithm.allCases {
            try Sys.makeDirectories(blobsDirectory + "/" + algorithm.rawValue)
        }
        try Sys.makeDirectories(ingestDirectory, mode: 0o700)
    }

    /// The path of a blob's file (which may not exist).
    public func path(for digest: Digest) -> String {
        "\(blobsDirectory)/\(digest.algorithm.rawValue)/\(digest.encoded)"
    }

    /// The size of a blob, or `nil` if the store does not have it.
    public func size(of digest: Digest) -> Int64? {
        guard let st = Sys.lstat(path(for: digest)), (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(st.st_size)
    }

    /// Whether the store has a blob.
    public func contains(_ digest: Digest) -> Bool { size(of: digest) != nil }

    /// Reads a small blob (a manifest, an index or a configuration) and
    /// checks its digest again, so that a blob damaged on disk is noticed.
    public func document(_ descriptor: Descriptor) throws -> Data {
        guard descriptor.size <= Self.maximumDocumentSize else {
            throw OCIImageError(.invalidManifest, "\(descriptor.mediaType) \(descriptor.digest) is \(descriptor.size) bytes; documents larger than \(Self.maximumDocumentSize) bytes are refused")
        }
        let file = path(for: descriptor.digest)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw OCIImageError(.blobNotFound, "blob \(descriptor.digest) (\(descriptor.mediaType)) is not in the content store")
        }
        guard Int64(data.count) == descriptor.size else {
            throw OCIImageError(.sizeMismatch, "blob \(descriptor.digest) has \(data.count) bytes but its descriptor says \(descriptor.size)")
        }
        let actual = Digest.compute(data, algorithm: descriptor.digest.algorithm)
        guard actual == descriptor.digest else {
            throw OCIImageError(.digestMismatch, "blob \(descriptor.digest) in the content store hashes to \(actual); the store is damaged")
        }
        return data
    }

    /// Starts writing a blob. Call ``BlobWriter/commit()`` to make it visible.
    ///
    /// - Parameters:
    ///   - expected: The digest the content must have; `nil` accepts any
    ///     content and names it by its SHA-256.
    ///   - expectedSize: The size the content must have, if known.
    public func writer(expected: Digest? = nil, expectedSize: Int64? = nil) throws -> BlobWriter {
        try BlobWriter(store: self, expected: expected, expectedSize: expectedSize)
    }

    /// Stores bytes held in memory.
    @discardableResult
    public func ingest(_ data: Data, expected: Digest? = nil) throws -> (digest: Digest, size: Int64) {
        let writer = try writer(expected: expected, expectedSize: expected == nil ? nil : Int64(data.count))
        try data.withUnsafeBytes { try writer.write($0) }
        return try writer.commit()
    }

    /// Copies a file into the store, verifying it against `expected` and
    /// `expectedSize` when given. Skips the copy when the blob is present.
    @discardableResult
    public func ingest(fileAt source: String, expected: Digest? = nil, expectedSize: Int64? = nil) throws -> (digest: Digest, size: Int64) {
        if let expected, let size = size(of: expected), expectedSize == nil || expectedSize == size {
            return (expected, size)
        }
        let fd = try OwnedDescriptor.open(source, O_RDONLY)
        let writer = try writer(expected: expected, expectedSize: expectedSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = try Sys.read(fd.raw, into: buffer, path: source)
            if count == 0 { break }
            try writer.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
        return try writer.commit()
    }

    /// Removes a blob. Removing a missing blob is not an error.
    public func delete(_ digest: Digest) throws {
        let file = path(for: digest)
        if unlink(file) != 0 && Sys.errno != .noSuchFileOrDirectory {
            throw SystemCallError("unlink", file, Sys.errno)
        }
    }

    /// Every blob in the store with its size.
    public func list() throws -> [(digest: Digest, size: Int64)] {
        var result: [(Digest, Int64)] = []
        for algorithm in Digest.Algorithm.allCases {
            let directory = blobsDirectory + "/" + algorithm.rawValue
            let fd = try OwnedDescriptor.open(directory, O_RDONLY | O_DIRECTORY)
            for name in try Sys.listDirectoryNames(fd.raw, display: directory) {
                guard let digest = try? Digest(algorithm: algorithm, encoded: name), let size = size(of: digest) else { continue }
                result.append((digest, size))
            }
        }
        return result
    }
}

/// Writes one blob into a ``ContentStore``. Not thread-safe: a writer
/// belongs to one task at a time (it may be handed to another, as to a
/// thread that commits it). A writer that is neither committed nor
/// cancelled removes its temporary file when released.
public final class BlobWriter: @unchecked Sendable {
    private let store: ContentStore
    private let expected: Digest?
    private let expectedSize: Int64?
    private var hasher: DigestHasher
    private var fd: Int32
    private let temporaryPath: String
    private var finished = false
    /// Small writes (network reads are tens of kilobytes) are gathered here
    /// and written a mebibyte at a time.
    private let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    private var staged = 0

    init(store: ContentStore, expected: Digest?, expectedSize: Int64?) throws {
        if let expectedSize, expectedSize < 0 {
            throw OCIImageError(.invalidArgument, "a blob cannot have the negative size \(expectedSize)")
        }
        self.store = store
        self.expected = expected
        self.expectedSize = expectedSize
        hasher = DigestHasher(algorithm: expected?.algorithm ?? .sha256)
        temporaryPath = store.ingestDirectory + "/" + Sys.randomSuffix()
        do {
            fd = try Sys.open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL, 0o444)
        } catch {
            staging.deallocate()
            throw error
        }
    }

    deinit {
        if !finished { discard() }
        staging.deallocate()
    }

    /// The number of bytes written so far.
    public var count: Int64 { hasher.count }

    /// Appends bytes to the blob.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!finished, "BlobWriter used after commit or cancel")
        if let expectedSize, hasher.count + Int64(bytes.count) > expectedSize {
            let what = expected.map { "blob \($0)" } ?? "the blob"
            cancel()
            throw OCIImageError(.sizeMismatch, "\(what) is larger than the expected \(expectedSize) bytes")
        }
        hasher.update(bytes)
        do {
            if staged + bytes.count > staging.count { try flush() }
            if bytes.count >= staging.count {
                try Sys.writeAll(fd, bytes, path: temporaryPath)
            } else if let base = bytes.baseAddress {
                (staging.baseAddress.unsafelyUnwrapped + staged).copyMemory(from: base, byteCount: bytes.count)
                staged += bytes.count
            }
        } catch {
            cancel()
            throw error
        }
    }

    private func flush() throws {
        guard staged > 0 else { return }
        try Sys.writeAll(fd, UnsafeRawBufferPointer(rebasing: staging[..<staged]), path: temporaryPath)
        staged = 0
    }

    /// Verifies digest and size, then makes the blob visible.
    ///
    /// - Returns: The blob's digest and size.
    /// - Throws: ``OCIImageError/Code/digestMismatch`` or
    ///   ``OCIImageError/Code/sizeMismatch``; the store is then unchanged.
    @discardableResult
    public func commit() throws -> (digest: Digest, size: Int64) {
        precondition(!finished, "BlobWriter used after commit or cancel")
        let actual = hasher.finalize()
        let size = hasher.count
        if let expectedSize, size != expectedSize {
            cancel()
            throw OCIImageError(.sizeMismatch, "\(expected.map { "blob \($0)" } ?? "the blob") has \(size) bytes but \(expectedSize) were expected (truncated?)")
        }
        if let expected, actual != expected {
            cancel()
            throw OCIImageError(.digestMismatch, "the content expected as \(expected) hashes to \(actual) (corrupt or wrong blob)")
        }
        do {
            try flush()
            try Sys.fsync(fd, path: temporaryPath)
        } catch {
            cancel()
            throw error
        }
        Sys.close(fd)
        fd = -1
        finished = true
        let destination = store.path(for: actual)
        if gantry_renameat2(AT_FDCWD, temporaryPath, AT_FDCWD, destination, UInt32(GANTRY_RENAME_NOREPLACE)) != 0 {
            let error = Sys.errno
            unlink(temporaryPath)
            // Another writer stored the same content first: that copy is identical.
            guard error == .fileExists else { throw SystemCallError("rename", destination, error) }
        } else {
            try Sys.syncDirectory(Sys.parentDirectory(of: destination))
        }
        return (actual, size)
    }

    /// Abandons the blob and removes its temporary file.
    public func cancel() {
        guard !finished else { return }
        discard()
    }

    private func discard() {
        finished = true
        if fd >= 0 { Sys.close(fd) }
        fd = -1
        unlink(temporaryPath)
    }
}
