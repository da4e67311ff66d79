import CArchive
import Foundation

/// What to do with a layer's whiteouts (`.wh.NAME`, `.wh..wh..opq`).
public enum WhiteoutMode: Hashable, Sendable {
    /// The target holds the layers below; whiteouts delete what they name
    /// there. Used to produce a merged root filesystem.
    case apply
    /// The target is a fresh directory for this layer alone, to be stacked
    /// with overlayfs; whiteouts become overlay whiteouts (character device
    /// 0/0, `overlay.opaque` extended attribute). `lowerLayers` are the
    /// directories of the layers below, top-most first: they supply the
    /// metadata of parent directories the layer leaves implicit and the
    /// targets of hard links into lower layers.
    case overlay(lowerLayers: [String])
}

/// Options for ``LayerUnpacker/unpack(layerAt:into:options:)``.
public struct LayerUnpackOptions: Sendable {
    /// How whiteouts are handled.
    public var whiteouts: WhiteoutMode
    /// Whether to set owners, create device nodes and write `trusted.*` and
    /// `security.capability` attributes. Defaults to whether the process has
    /// CAP_CHOWN and CAP_MKNOD. Without it, files belong to the caller and
    /// device nodes are refused.
    public var privileged: Bool
    /// The digest the uncompressed stream must have (the layer's DiffID).
    public var expectedDiffID: Digest?
    /// The size the layer blob must have (its descriptor's), checked
    /// before and while it is read.
    public var expectedSize: Int64?
    /// How far the layer may expand when it is decompressed.
    public var expansionLimit: LayerExpansionLimit
    /// Whether files keep their set-user-ID and set-group-ID bits (true
    /// for a container's layers; a tree unpacked onto the host would give
    /// any local user a set-user-ID-root program).
    public var keepsSetIDBits: Bool
    /// Whether device nodes are created (with privileges); when false they
    /// are skipped and counted in ``LayerUnpackReport/skippedDeviceNodes``.
    public var createsDeviceNodes: Bool
    /// Called now and then with the number of compressed bytes read.
    public var progress: (@Sendable (Int64) -> Void)?
    /// Polled between entries; when it returns true, unpacking stops with
    /// ``OCIImageError/Code/cancelled``.
    public var isCancelled: (@Sendable () -> Bool)?
    /// Set for an archive that is not an image layer (one copied into or
    /// out of a container): its names are taken as they are, `.wh.` ones too.
    package var plainArchive: PlainArchivePolicy?
    /// Without privileges: the user namespace the files are for. Files are
    /// created as the caller (the namespace's root); the owners and file
    /// capabilities the namespace's root must give them are reported in
    /// ``LayerUnpackReport/owners``, by path.
    package var userNamespace: UserNamespaceMapping?

    /// Creates options.
    public init(
        whiteouts: WhiteoutMode = .apply, privileged: Bool? = nil, expectedDiffID: Digest? = nil, expectedSize: Int64? = nil,
        expansionLimit: LayerExpansionLimit = .default, keepsSetIDBits: Bool = true, createsDeviceNodes: Bool = true,
        progress: (@Sendable (Int64) -> Void)? = nil, isCancelled: (@Sendable () -> Bool)? = nil
    ) {
        self.whiteouts = whiteouts
        self.privileged = privileged ?? Sys.isPrivileged
        self.expectedDiffID = expectedDiffID
        self.expectedSize = expectedSize
        self.expansionLimit = expansionLimit
        self.keepsSetIDBits = keepsSetIDBits
        self.createsDeviceNodes = createsDeviceNodes
        self.progress = progress
        self.isCancelled = isCancelled
    }
}

/// How many bytes a compressed layer may expand to. A gzip stream can
/// expand a thousandfold, so a small hostile layer could fill the disk; the
/// limit stops the unpacking with ``OCIImageError/Code/layerTooLarge``
/// naming the layer. An uncompressed stream is never limited: it is as large
/// as it is.
///
/// The default allows 200 times the compressed size, and never less than
/// 1 GiB: ordinary layers (text, binaries, even large zero-filled files of
/// a few hundred megabytes) are far below it, and a bomb is stopped after
/// writing at most that much.
public struct LayerExpansionLimit: Hashable, Sendable {
    /// The most uncompressed bytes whatever the compressed size, or nil.
    public var maximumBytes: Int64?
    /// The most uncompressed bytes per compressed byte, or nil.
    public var maximumRatio: Int64?
    /// The ratio never limits a layer to less than this.
    public var minimumAllowance: Int64

    /// A limit of `maximumBytes` in all, and `maximumRatio` times the
    /// compressed size but not below `minimumAllowance`.
    public init(maximumBytes: Int64? = nil, maximumRatio: Int64? = 200, minimumAllowance: Int64 = 1 << 30) {
        self.maximumBytes = maximumBytes
        self.maximumRatio = maximumRatio
        self.minimumAllowance = minimumAllowance
    }

    /// 200 times the compressed size, at least 1 GiB.
    public static let `default` = LayerExpansionLimit()

    /// No limit.
    public static let unlimited = LayerExpansionLimit(maximumBytes: nil, maximumRatio: nil)

    /// The most bytes a stream of `compressedSize` bytes may expand to, or nil.
    func allowance(compressedSize: Int64) -> Int64? {
        let byRatio = maximumRatio.map { ratio in
            let (product, overflow) = compressedSize.multipliedReportingOverflow(by: ratio)
            return max(minimumAllowance, overflow ? Int64.max : product)
        }
        switch (maximumBytes, byRatio) {
        case (nil, nil): return nil
        case (let bytes?, nil): return bytes
        case (nil, let ratio?): return ratio
        case (let bytes?, let ratio?): return min(bytes, ratio)
        }
    }
}

/// How a plain archive (not an image layer) is extracted: names are never
/// whiteouts, and what its entries may set on the target is restricted.
package struct PlainArchivePolicy: Sendable {
    /// The owner every entry gets, instead of the one it names (applied only
    /// with privileges).
    package var owner: (uid: UInt32, gid: UInt32)?
    /// Whether device nodes are created (still only with privileges).
    package var allowsDevices: Bool
    /// Whether files keep their set-user-ID and set-group-ID bits.
    package var keepsSetIDBits: Bool

    package init(owner: (uid: UInt32, gid: UInt32)?, allowsDevices: Bool, keepsSetIDBits: Bool) {
        self.owner = owner
        self.allowsDevices = allowsDevices
        self.keepsSetIDBits = keepsSetIDBits
    }
}

/// What unpacking a layer did.
public struct LayerUnpackReport: Hashable, Sendable {
    /// The digest of the uncompressed stream (SHA-256, or the algorithm of
    /// the expected DiffID).
    public var diffID: Digest
    /// The size of the uncompressed stream.
    public var uncompressedSize: Int64
    /// The number of archive entries processed.
    public var entries: Int
    /// Extended attributes that were not applied (not allowed, or not
    /// supported by the file system), by name.
    public var skippedAttributes: Set<String>
    /// Device nodes that were not created (``LayerUnpackOptions/createsDeviceNodes``).
    public var skippedDeviceNodes: Int
    /// With a user namespace: the owners files are to get as its root.
    package var owners: [FileOwner] = []
}

/// Unpacks layer archives (tar, gzip or zstd) into directories, streaming,
/// with every path resolved inside the target.
///
/// No entry can create or change anything outside the target: absolute
/// paths and `..` components are refused, parent directories are opened with
/// `openat2(RESOLVE_BENEATH)` so that a symlink (even one planted by an
/// earlier layer) cannot lead out, final components are never followed, and
/// hard links may only point inside. Refused entries are skipped while the
/// rest of the layer is read, then reported together in one
/// ``OCIImageError/Code/unsafeLayerEntries`` error.
public enum LayerUnpacker {
    /// Unpacks one layer blob into `target`, which must exist.
    ///
    /// - Throws: ``OCIImageError`` — `unsafeLayerEntries` listing every refused
    ///   entry, `corruptLayer`, `digestMismatch` when `expectedDiffID` does
    ///   not match, `cancelled`, or `systemCall`. After an error the target
    ///   may hold part of the layer; callers unpack into a scratch directory.
    @discardableResult
    public static func unpack(layerAt path: String, into target: String, options: LayerUnpackOptions = LayerUnpackOptions()) throws -> LayerUnpackReport {
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        let rootFD = try OwnedDescriptor.open(target, O_RDONLY | O_DIRECTORY)
        var lowerFDs: [Int32] = []
        defer { lowerFDs.forEach(Sys.close) }
        if case .overlay(let lowers) = options.whiteouts {
            for lower in lowers { lowerFDs.append(try Sys.open(lower, O_RDONLY | O_DIRECTORY)) }
        }
        return try unpack(fd: fd.raw, path: path, rootFD: rootFD.raw, target: target, lowerFDs: lowerFDs, options: options)
    }

    /// Extracts a tar stream (uncompressed, gzip or zstd) read from `fd`
    /// into the directory open at `directoryFD`, with the guarantees of
    /// ``unpack(layerAt:into:options:)``: nothing outside that directory is
    /// created or changed, whatever the entries and whatever symlinks the
    /// directory holds. Reads the stream to its end; closes neither descriptor.
    ///
    /// - Parameters:
    ///   - source: names the stream in errors.
    ///   - target: names the directory in errors.
    @discardableResult
    package static func extract(tarFrom fd: Int32, named source: String, into directoryFD: Int32, named target: String,
                                options: LayerUnpackOptions) throws -> LayerUnpackReport {
        try unpack(fd: fd, path: source, rootFD: directoryFD, target: target, lowerFDs: [], options: options)
    }

    private static func unpack(fd: Int32, path: String, rootFD: Int32, target: String, lowerFDs: [Int32],
                               options: LayerUnpackOptions) throws -> LayerUnpackReport {
        let stream = LayerStream(fd: fd, path: path, algorithm: options.expectedDiffID?.algorithm ?? .sha256,
                                 expectedSize: options.expectedSize, limit: options.expansionLimit)
        stream.start()
        defer { stream.stop() }

        guard let reader = archive_read_new() else {
            throw OCIImageError(.systemCall, "libarchive could not allocate a reader")
        }
        defer { archive_read_free(reader) }
        archive_read_support_format_tar(reader)
        archive_read_support_format_empty(reader)
        let context = Unmanaged.passUnretained(stream).toOpaque()
        let opened = archive_read_open(reader, context, nil, { _, context, buffer in
            guard let context, let buffer else { return -1 }
            let stream = Unmanaged<LayerStream>.fromOpaque(context).takeUnretainedValue()
            guard let block = try? stream.next() else { return -1 }
            buffer.pointee = block.baseAddress
            return block.count
        }, nil)
        guard opened == ARCHIVE_OK else {
            throw stream.consumerError ?? OCIImageError(.corruptLayer, "layer \(path) cannot be read: \(archiveMessage(reader))")
        }

        let applier = LayerApplier(rootFD: rootFD, target: target, layer: path, options: options, lowerFDs: lowerFDs, stream: stream)
        defer { applier.closeCachedDirectories() }
        let entries = try applier.applyAll(reader)
        try stream.drain()
        let diffID = stream.hasher.finalize()
        if let expected = options.expectedDiffID, expected != diffID {
            throw OCIImageError(.digestMismatch, "layer \(path) unpacks to content with DiffID \(diffID), but the image configuration says \(expected)")
        }
        if !applier.refused.isEmpty {
            let shown = applier.refused.prefix(20).map(\.description).joined(separator: "; ")
            let more = applier.refused.count > 20 ? " and \(applier.refused.count - 20) more" : ""
            throw OCIImageError(.unsafeLayerEntries, "layer \(path) has \(applier.refused.count) refused entries: \(shown)\(more)",
                                refusedEntries: applier.refused)
        }
        var report = LayerUnpackReport(diffID: diffID, uncompressedSize: stream.hasher.count, entries: entries,
                                       skippedAttributes: applier.skippedAttributes, skippedDeviceNodes: applier.skippedDeviceNodes)
        report.owners = applier.owners.values.sorted { $0.path.lexicographicallyPrecedes($1.path) }
        return report
    }
}
