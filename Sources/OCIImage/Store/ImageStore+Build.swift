public import Foundation
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

/// A layer a build wrote into the store: its blob and the digest of its
/// uncompressed archive.
public struct BuiltLayer: Hashable, Sendable {
    /// The compressed layer blob.
    public var descriptor: Descriptor
    /// The DiffID: the digest of the uncompressed archive.
    public var diffID: Digest
    /// The number of entries in the archive, when the layer was just
    /// written (0: nothing changed); nil for a layer taken from an image.
    public var entries: Int?
    /// The size of the uncompressed archive, when the layer was just written.
    public var uncompressedSize: Int64?

    /// A layer.
    public init(descriptor: Descriptor, diffID: Digest, entries: Int? = nil, uncompressedSize: Int64? = nil) {
        self.descriptor = descriptor
        self.diffID = diffID
        self.entries = entries
        self.uncompressedSize = uncompressedSize
    }
}

/// What pruning the build cache did.
public struct BuildCachePruneReport: Hashable, Sendable {
    /// The cached steps forgotten.
    public var entries: Int
    /// What garbage collection freed afterwards.
    public var freed: PruneReport
}

extension ImageStore {
    /// Packs a directory into a gzip-compressed layer blob.
    ///
    /// - Parameters:
    ///   - directory: The tree to pack; its paths become the layer's paths.
    ///   - overlayUpper: Whether `directory` is an overlay upper directory,
    ///     whose whiteouts (character devices 0/0) and opaque directories
    ///     become OCI whiteouts.
    ///   - latestModification: Modification times after this are written as
    ///     it, so that the layer is reproducible (`SOURCE_DATE_EPOCH`).
    public func writeLayer(from directory: String, overlayUpper: Bool = false, latestModification: Date? = nil) async throws -> BuiltLayer {
        try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let blob = try self.content.writer()
                let writer = try LayerWriter(source: absolutePath(directory), into: blob, userNamespace: self.userNamespace,
                                             overlayUpper: overlayUpper,
                                             latestModification: latestModification.map { Int64($0.timeIntervalSince1970.rounded(.down)) })
                let diffID: Digest
                let uncompressed: Int64
                do {
                    (diffID, uncompressed) = try writer.write()
                } catch {
                    blob.cancel()
                    throw error
                }
                if isCancelled() {
                    blob.cancel()
                    throw OCIImageError(.cancelled, "packing \(directory) was cancelled")
                }
                let (digest, size) = try blob.commit()
                return BuiltLayer(descriptor: Descriptor(mediaType: .ociLayerGzip, digest: digest, size: size), diffID: diffID,
                                  entries: writer.entries, uncompressedSize: uncompressed)
            }
        }
    }

    /// Writes an image made of `layers` (base first) with `configuration`,
    /// whose DiffIDs are set from the layers, and returns its manifest.
    ///
    /// Layers of Docker's media types are listed under the OCI ones (the
    /// bytes are the same). The image is kept by the name and the cache key
    /// given; with neither, the next prune removes it.
    ///
    /// - Parameters:
    ///   - configuration: The image's configuration.
    ///   - layers: Every layer of the image, base first.
    ///   - annotations: The manifest's annotations.
    ///   - cacheKey: Records the image as the result of a build step, for
    ///     ``cachedBuildStep(_:)``.
    ///   - name: A name to give the image.
    /// - Throws: ``OCIImageError``, `blobNotFound` when a layer's blob was
    ///   removed (by a prune) since it was written.
    @discardableResult
    public func writeImage(_ configuration: ImageConfiguration, layers: [BuiltLayer], annotations: [String: String]? = nil,
                           cacheKey: String? = nil, name: String? = nil) async throws -> ResolvedImage {
        let reference = try name.map(Self.namingReference)
        return try await offload { _ in
            try self.lock.withLock(.shared) {
                for layer in layers where !self.content.contains(layer.descriptor.digest) {
                    throw OCIImageError(.blobNotFound, "layer \(layer.descriptor.digest) is no longer in the store (removed by a prune while the image was made); build it again")
                }
                var configuration = configuration
                configuration.rootfs = ImageConfiguration.RootFS(diffIDs: layers.map(\.diffID))
                let configData = try JSONEncoder.canonical.encode(configuration)
                let (configDigest, configSize) = try self.content.ingest(configData)
                let manifest = Manifest(
                    config: Descriptor(mediaType: .ociConfig, digest: configDigest, size: configSize),
                    layers: layers.map { layer in
                        var descriptor = layer.descriptor
                        if let compression = descriptor.mediaType.layerCompression, descriptor.mediaType != .dockerForeignLayerGzip {
                            descriptor.mediaType = .ociLayer(compression)
                        }
                        return descriptor
                    },
                    annotations: annotations)
                let manifestData = try JSONEncoder.canonical.encode(manifest)
                let (manifestDigest, manifestSize) = try self.content.ingest(manifestData)
                let descriptor = Descriptor(mediaType: .ociManifest, digest: manifestDigest, size: manifestSize)
                if let cacheKey { try self.database.setBuildCacheEntry(cacheKey, to: descriptor) }
                let record: ImageRecord
                if let reference {
                    try self.database.setImage(reference, to: descriptor)
                    record = try self.lookup(reference.description)
                } else {
                    record = try Self.unnamedRecord(descriptor)
                }
                return ResolvedImage(record: record, manifestDescriptor: descriptor, manifest: manifest, configuration: configuration, platforms: nil)
            }
        }
    }

    /// Makes `directory` the snapshot of the top layer of `layers`, moving
    /// it into the store, so that containers of an image with these layers
    /// need not unpack that layer. `directory` must hold exactly that
    /// layer's files in overlay's format (whiteouts as character devices
    /// 0/0, opaque directories marked, owners as the store keeps them):
    /// the upper directory of a container of the layers below, or a tree
    /// without removals. When the snapshot exists already, `directory` is
    /// removed instead.
    public func adoptSnapshot(_ directory: String, layers: [BuiltLayer]) async throws {
        guard let layer = layers.last else { return }
        try await offload { _ in
            try self.lock.withLock(.shared) {
                let chainIDs = Snapshotter.chainIDs(layers.map(\.diffID))
                let chainID = chainIDs[chainIDs.count - 1]
                let target = Snapshotter.directory(for: chainID, in: self.root)
                if Sys.lstat(target) == nil, rename(directory, target) != 0 {
                    let error = Sys.errno
                    guard error == .directoryNotEmpty || error == .fileExists else { throw SystemCallError("rename", target, error) }
                }
                if Sys.lstat(directory) != nil { try removeTree(directory, mapping: self.userNamespace) }
                try self.database.addSnapshot(chainID: chainID, parent: chainIDs.count > 1 ? chainIDs[chainIDs.count - 2] : nil,
                                              diffID: layer.diffID, size: layer.uncompressedSize ?? 0)
            }
        }
    }

    /// The image a build step with this cache key made before, if its
    /// content is still here.
    public func cachedBuildStep(_ key: String) async throws -> ResolvedImage? {
        try await offload { _ in
            try self.lock.withLock(.shared) {
                guard let descriptor = try self.database.buildCacheEntry(key) else { return nil }
                guard try self.reachableBlobs(from: descriptor).count == self.reachableCount(descriptor) else { return nil }
                return try self.resolve(try Self.unnamedRecord(descriptor), platform: nil)
            }
        }
    }

    /// Forgets the build steps last used before `date` (every one, when
    /// nil, and the directories of `RUN --mount=type=cache` too), then
    /// removes what nothing else keeps, as ``prune()`` does.
    @discardableResult
    public func pruneBuildCache(usedBefore date: Date? = nil) async throws -> BuildCachePruneReport {
        try await offload { _ in
            let entries = try self.database.removeBuildCacheEntries(usedBefore: date)
            if date == nil, access(self.root.buildCacheMounts, F_OK) == 0 { try Sys.removeTree(self.root.buildCacheMounts) }
            return BuildCachePruneReport(entries: entries, freed: try self.collectGarbage())
        }
    }

    /// Forgets the build cache entries with these keys (what they kept
    /// goes with the next prune unless something else keeps it).
    public func forgetBuildSteps(_ keys: [String]) async throws {
        guard !keys.isEmpty else { return }
        try await offload { _ in try self.database.removeBuildCacheEntries(keys: keys) }
    }

    /// The number of blobs an image has when all are present: the manifest,
    /// its configuration and its layers.
    func reachableCount(_ descriptor: Descriptor) throws -> Int {
        guard content.contains(descriptor.digest) else { return -1 }
        let manifest = try Manifest.decode(try content.document(descriptor), mediaType: descriptor.mediaType)
        return 2 + Set(manifest.layers.map(\.digest)).count
    }

    /// A record for an image that has no name: a build step's.
    static func unnamedRecord(_ descriptor: Descriptor) throws -> ImageRecord {
        let now = Date()
        return ImageRecord(reference: try ImageReference(parsing: "localhost/gantry-build@\(descriptor.digest)"), descriptor: descriptor,
                           created: now, updated: now)
    }
}
