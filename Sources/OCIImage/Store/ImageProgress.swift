/// Progress of a long image operation, reported to an ``ImageProgressHandler``.
public struct ImageProgress: Hashable, Sendable {
    /// What is being done.
    public enum Phase: String, Hashable, Sendable {
        /// Copying blobs into the content store.
        case importing
        /// Copying blobs out of the content store.
        case exporting
        /// Unpacking a layer.
        case unpacking
        /// Packing a directory into a layer.
        case packing
        /// Downloading a blob from a registry.
        case downloading
        /// Uploading a blob to a registry.
        case uploading
    }

    /// What is being done.
    public var phase: Phase
    /// The blob being worked on.
    public var digest: Digest?
    /// The blob's position among those of the operation (from 0).
    public var index: Int
    /// The number of blobs in the operation.
    public var count: Int
    /// Bytes of the blob done so far.
    public var completed: Int64
    /// The blob's size, when known.
    public var total: Int64?

    /// Creates a progress report.
    public init(phase: Phase, digest: Digest?, index: Int, count: Int, completed: Int64, total: Int64?) {
        self.phase = phase
        self.digest = digest
        self.index = index
        self.count = count
        self.completed = completed
        self.total = total
    }
}

/// Receives progress reports; called from a background thread.
public typealias ImageProgressHandler = @Sendable (ImageProgress) -> Void

extension ImageProgress {
    /// A byte-count callback for unpacking `layer` that reports to `handler`.
    static func unpacking(_ layer: Descriptor, index: Int, count: Int, handler: ImageProgressHandler?) -> (@Sendable (Int64) -> Void)? {
        reporter(.unpacking, layer, index: index, count: count, handler: handler)
    }

    /// A byte-count callback for work on `blob` that reports to `handler`.
    static func reporter(_ phase: Phase, _ blob: Descriptor, index: Int, count: Int, handler: ImageProgressHandler?) -> (@Sendable (Int64) -> Void)? {
        guard let handler else { return nil }
        return { bytes in
            handler(ImageProgress(phase: phase, digest: blob.digest, index: index, count: count, completed: bytes, total: blob.size))
        }
    }
}
