import CArchive
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The uncompressed bytes of a layer blob, produced by a decompression thread
/// and consumed as a tar stream on the calling thread.
///
/// Decompression (gzip, zstd, or none, detected from the content whatever
/// the media type claims) runs on its own thread, at most `slotCount`
/// buffers ahead of extraction, so that the two overlap on machines with more
/// than one core while memory stays bounded. The consumer hashes what it reads, which yields the layer's
/// DiffID.
final class LayerStream: @unchecked Sendable {
    private enum Item {
        case data(slot: Int, count: Int)
        case end
    }

    // Shared between the two threads. Slot memory is owned by the producer
    // from `free.wait()` until it queues the slot, and by the consumer from
    // dequeuing it until its next call to `next()`. `lock` guards the rest.
    private let slotSize = 1 << 20
    private let slotCount = 4
    private let slots: UnsafeMutableRawPointer
    private let free: DispatchSemaphore
    private let filled = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var queue: [Item] = []
    private var producerError: OCIImageError?
    private var stopRequested = false
    private var compressedBytes: Int64 = 0

    // Consumer-only state.
    /// The error `next()` threw, kept for callers that see only a failed read.
    private(set) var consumerError: OCIImageError?
    private var heldSlot = false
    private var ended = false
    private(set) var hasher: DigestHasher

    private let fd: Int32
    private let path: String
    private let expectedSize: Int64?
    private let limit: LayerExpansionLimit

    /// Creates a stream over the layer blob open at `fd` (which the caller
    /// keeps open until ``stop()`` returns), hashing with `algorithm`. The
    /// blob must be `expectedSize` bytes when given, and may expand as far
    /// as `limit` allows.
    init(fd: Int32, path: String, algorithm: Digest.Algorithm, expectedSize: Int64? = nil, limit: LayerExpansionLimit = .default) {
        hasher = DigestHasher(algorithm: algorithm)
        self.fd = fd
        self.path = path
        self.expectedSize = expectedSize
        self.limit = limit
        slots = UnsafeMutableRawPointer.allocate(byteCount: slotSize * slotCount, alignment: 64)
        // Starting from zero and signalling up keeps the semaphore at or above
        // its initial value whenever it is released, as libdispatch requires.
        free = DispatchSemaphore(value: 0)
        for _ in 0..<slotCount { free.signal() }
    }

    deinit {
        slots.deallocate()
    }

    /// Starts the decompression thread.
    func start() {
        let thread = Thread { [self] in
            produce()
            finished.signal()
        }
        thread.name = "gantry-decompress"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Stops the producer if it still runs, and waits for it to exit.
    func stop() {
        lock.withLock { stopRequested = true }
        // Wake a producer that waits for a free slot.
        for _ in 0..<slotCount { free.signal() }
        finished.wait()
    }

    /// The compressed bytes read from the blob so far.
    var bytesRead: Int64 { lock.withLock { compressedBytes } }

    // MARK: Producer

    private func produce() {
        guard let archive = archive_read_new() else {
            finish(OCIImageError(.systemCall, "libarchive could not allocate a reader"))
            return
        }
        defer { archive_read_free(archive) }
        // Only the compressions layers use. Others would widen what untrusted
        // input can reach, and some (lrzip, lzop, grzip) run external programs.
        archive_read_support_filter_gzip(archive)
        archive_read_support_filter_zstd(archive)
        archive_read_support_format_raw(archive)
        archive_read_support_format_empty(archive)
        guard archive_read_open_fd(archive, fd, 1 << 20) == ARCHIVE_OK else {
            finish(OCIImageError(.corruptLayer, "layer \(path) cannot be read: \(archiveMessage(archive))"))
            return
        }
        var entry: OpaquePointer?
        let header = archive_read_next_header(archive, &entry)
        if header == ARCHIVE_EOF {
            finish(nil)
            return
        }
        guard header >= ARCHIVE_WARN else {
            finish(OCIImageError(.corruptLayer, "layer \(path) cannot be decompressed: \(archiveMessage(archive))"))
            return
        }
        // A regular file's size is known before reading; a stream's (a
        // pipe's) is checked as it is read.
        var info = stat()
        let fileSize: Int64? = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int64(info.st_size) : nil
        if let expectedSize, let fileSize, fileSize != expectedSize {
            finish(OCIImageError(.sizeMismatch, "layer \(path) is \(fileSize) bytes, but its descriptor says \(expectedSize)"))
            return
        }
        // Only a compressed stream can expand; the allowance of a stream of
        // unknown size grows with what was read of it.
        let compressed = archive_filter_count(archive) > 1
        var allowance = compressed ? limit.allowance(compressedSize: fileSize ?? 0) : nil
        var expanded: Int64 = 0
        var slot = 0
        var used = 0
        free.wait()
        while true {
            if lock.withLock({ stopRequested }) { return }
            let count = archive_read_data(archive, slots + slot * slotSize + used, slotSize - used)
            if count < 0 {
                let error = OCIImageError(.corruptLayer, "layer \(path) is corrupt or truncated: \(archiveMessage(archive))")
                if used > 0 { enqueue(.data(slot: slot, count: used)) }
                finish(error)
                return
            }
            used += count
            expanded += Int64(count)
            let position = archive_filter_bytes(archive, -1)
            lock.withLock { compressedBytes = position }
            if let expectedSize, position > expectedSize {
                finish(OCIImageError(.sizeMismatch, "layer \(path) is longer than the \(expectedSize) bytes its descriptor says"))
                return
            }
            if compressed, fileSize == nil { allowance = limit.allowance(compressedSize: position) }
            if let allowance, expanded > allowance {
                finish(OCIImageError(.layerTooLarge, "layer \(path) expands to more than \(allowance) bytes from \(position) compressed (a decompression bomb?); raise LayerUnpackOptions.expansionLimit if the image is genuine"))
                return
            }
            if count == 0 {
                if used > 0 { enqueue(.data(slot: slot, count: used)) }
                finish(nil)
                return
            }
            if used == slotSize {
                enqueue(.data(slot: slot, count: used))
                slot = (slot + 1) % slotCount
                used = 0
                free.wait()
            }
        }
    }

    private func enqueue(_ item: Item) {
        lock.withLock { queue.append(item) }
        filled.signal()
    }

    private func finish(_ error: OCIImageError?) {
        lock.withLock { producerError = error }
        enqueue(.end)
    }

    // MARK: Consumer

    /// The next block of uncompressed bytes; an empty buffer at the end.
    ///
    /// - Throws: The producer's error if decompression failed.
    func next() throws -> UnsafeRawBufferPointer {
        if ended { return UnsafeRawBufferPointer(start: nil, count: 0) }
        if heldSlot {
            heldSlot = false
            free.signal()
        }
        filled.wait()
        let item = lock.withLock { queue.removeFirst() }
        switch item {
        case .data(let slot, let count):
            heldSlot = true
            let buffer = UnsafeRawBufferPointer(start: slots + slot * slotSize, count: count)
            hasher.update(buffer)
            return buffer
        case .end:
            ended = true
            if let error = lock.withLock({ producerError }) {
                consumerError = error
                throw error
            }
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
    }

    /// Reads and hashes whatever follows the end of the tar archive, so that
    /// the digest covers the whole uncompressed stream.
    func drain() throws {
        while try next().count > 0 {}
    }
}

/// libarchive's message for the last error of `archive`.
func archiveMessage(_ archive: OpaquePointer?) -> String {
    guard let archive, let message = archive_error_string(archive) else { return "unknown libarchive error" }
    return String(cString: message)
}
