public import Foundation
import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// Settings for an image made from a directory.
public struct RootfsImportOptions: Sendable {
    /// The run configuration of the new image (command, environment, …).
    public var config: RunConfiguration
    /// The platform to record; defaults to the host's.
    public var platform: Platform
    /// The creation time to record; defaults to now. A fixed value makes the
    /// image's digests reproducible.
    public var created: Date?
    /// The `created_by` text of the image's single history entry.
    public var history: String

    /// Creates options.
    public init(config: RunConfiguration = RunConfiguration(), platform: Platform = .host, created: Date? = nil,
                history: String = "gantry image import-rootfs") {
        self.config = config
        self.platform = platform
        self.created = created
        self.history = history
    }
}

/// What unpacking an image into a directory did.
public struct RootfsUnpackReport: Hashable, Sendable, Codable {
    /// The manifest that was unpacked.
    public var manifest: Digest
    /// The number of layers applied.
    public var layers: Int
    /// The number of archive entries processed.
    public var entries: Int
    /// The uncompressed size of all layers.
    public var bytes: Int64
    /// Device nodes that were skipped (unpacked without `keepingPrivileges`).
    public var skippedDeviceNodes: Int = 0
}

extension ImageStore {
    /// Makes a single-layer image from a directory, like `docker import`.
    ///
    /// - Parameters:
    ///   - directory: The root filesystem to pack.
    ///   - name: The name to give the image.
    ///   - options: The configuration, platform and time to record.
    ///   - progress: Receives a report when packing starts.
    @discardableResult
    public func importRootfs(at directory: String, name: String, options: RootfsImportOptions = RootfsImportOptions(),
                             progress: ImageProgressHandler? = nil) async throws -> ImageRecord {
        let reference = try Self.namingReference(name)
        return try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let source = absolutePath(directory)
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw OCIImageError(.invalidArgument, "\(directory) is not a directory")
                }
                progress?(ImageProgress(phase: .packing, digest: nil, index: 0, count: 1, completed: 0, total: nil))
                let blob = try self.content.writer()
                let layer = try LayerWriter(source: source, into: blob, userNamespace: self.userNamespace)
                let (diffID, _) = try layer.write()
                if isCancelled() {
                    blob.cancel()
                    throw OCIImageError(.cancelled, "importing \(directory) was cancelled")
                }
                let (layerDigest, layerSize) = try blob.commit()

                let created = Self.timestamp(options.created ?? Date())
                let configuration = ImageConfiguration(
                    platform: options.platform, config: options.config, diffIDs: [diffID],
                    history: [ImageConfiguration.History(created: created, createdBy: options.history)], created: created)
                let configData = try JSONEncoder.canonical.encode(configuration)
                let (configDigest, configSize) = try self.content.ingest(configData)
                let manifest = Manifest(
                    config: Descriptor(mediaType: .ociConfig, digest: configDigest, size: configSize),
                    layers: [Descriptor(mediaType: .ociLayerGzip, digest: layerDigest, size: layerSize)],
                    annotations: [AnnotationKey.created: created])
                let manifestData = try JSONEncoder.canonical.encode(manifest)
                let (manifestDigest, manifestSize) = try self.content.ingest(manifestData)
                try self.database.setImage(reference, to: Descriptor(mediaType: .ociManifest, digest: manifestDigest, size: manifestSize))
                return try self.lookup(reference.description)
            }
        }
    }

    package static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// Writes an image's merged root filesystem into `directory`, applying
    /// its layers in order (whiteouts delete).
    ///
    /// The tree lands on the host, not in a container, so by default it is
    /// made safe for the host: files lose their set-user-ID and set-group-ID
    /// bits and device nodes are skipped (a set-user-ID-root program or a
    /// device node writable by all, lying in a host directory, would let any
    /// local user become root). Pass `keepingPrivileges` for a faithful copy,
    /// to hand to another runtime as a bundle, say.
    ///
    /// - Parameters:
    ///   - name: The image's name or digest.
    ///   - directory: A new or empty directory.
    ///   - platform: The platform to unpack for a multi-platform image.
    ///   - keepingPrivileges: Keep set-ID bits and create device nodes.
    ///   - progress: Receives the compressed bytes read of each layer.
    /// - Throws: ``OCIImageError``; then `directory` is left as it was
    ///   (removed if this call created it, emptied otherwise).
    @discardableResult
    public func unpack(_ name: String, into directory: String, platform: Platform? = nil, keepingPrivileges: Bool = false,
                       progress: ImageProgressHandler? = nil) async throws -> RootfsUnpackReport {
        try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let image = try self.resolve(try self.lookup(name), platform: platform)
                let target = absolutePath(directory)
                let created = try Self.prepareEmptyDirectory(target)
                do {
                    var report = RootfsUnpackReport(manifest: image.manifestDescriptor.digest, layers: 0, entries: 0, bytes: 0)
                    for (index, layer) in image.layers.enumerated() {
                        let options = LayerUnpackOptions(
                            whiteouts: .apply, expectedDiffID: layer.diffID, expectedSize: layer.descriptor.size,
                            expansionLimit: self.layerExpansionLimit, keepsSetIDBits: keepingPrivileges, createsDeviceNodes: keepingPrivileges,
                            progress: ImageProgress.unpacking(layer.descriptor, index: index, count: image.layers.count, handler: progress),
                            isCancelled: isCancelled)
                        let result = try withSpan("unpack") { span in
                            span.attributes["gantry.layer"] = layer.descriptor.digest.description
                            return try LayerUnpacker.unpack(layerAt: self.content.path(for: layer.descriptor.digest), into: target, options: options)
                        }
                        ImageTelemetry.unpacked(bytes: result.uncompressedSize)
                        report.layers += 1
                        report.entries += result.entries
                        report.bytes += result.uncompressedSize
                        report.skippedDeviceNodes += result.skippedDeviceNodes
                    }
                    return report
                } catch {
                    if created {
                        try? Sys.removeTree(target)
                    } else {
                        let fd = Glibc.open(Sys.parentDirectory(of: target), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                        if fd >= 0 {
                            try? Sys.removeContents(at: fd, name: Array(Sys.lastComponent(of: target).utf8), display: target)
                            Sys.close(fd)
                        }
                    }
                    throw error
                }
            }
        }
    }

    /// Creates `path` if missing; refuses a non-empty or non-directory path.
    /// Returns whether the directory was created.
    static func prepareEmptyDirectory(_ path: String) throws -> Bool {
        if let st = Sys.lstat(path) {
            guard (st.st_mode & S_IFMT) == S_IFDIR else {
                throw OCIImageError(.invalidArgument, "\(path) exists and is not a directory")
            }
            let fd = try OwnedDescriptor.open(path, O_RDONLY | O_DIRECTORY)
            guard try Sys.listDirectory(fd.raw, display: path).isEmpty else {
                throw OCIImageError(.invalidArgument, "\(path) is not empty; unpack into a new or empty directory")
            }
            return false
        }
        try Sys.makeDirectories(Sys.parentDirectory(of: path))
        try Sys.check("mkdir", path) { mkdir(path, 0o755) }
        return true
    }

    /// Unpacks each layer of an image once into a snapshot (reusing existing
    /// ones) and returns the snapshots base first, ready to be stacked as
    /// overlayfs lower directories (which take the top-most first).
    ///
    /// With a `holder` (a container ID, say), the snapshots are also held
    /// for it: garbage collection keeps them, even after the image is
    /// removed, until ``releaseSnapshots(holder:)``.
    public func prepareSnapshots(_ name: String, platform: Platform? = nil, privileged: Bool? = nil, holder: String? = nil,
                                 progress: ImageProgressHandler? = nil) async throws -> [Snapshot] {
        try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let image = try self.resolve(try self.lookup(name), platform: platform)
                if let holder { try self.hold(image, for: holder) }
                return try self.snapshotter.prepare(image.layers, privileged: privileged ?? Sys.isPrivileged, progress: progress,
                                                    isCancelled: isCancelled)
            }
        }
    }

    /// What a container's root is made of: the image, resolved for
    /// `platform`, and the directories of its layer snapshots (base first),
    /// prepared and held as ``prepareSnapshots(_:platform:privileged:holder:progress:)``
    /// does — in one pass over the store, and without reading the snapshot
    /// records when every snapshot is already there (a snapshot directory
    /// exists only once complete).
    public func prepareRoot(_ name: String, platform: Platform? = nil, privileged: Bool? = nil, holder: String? = nil,
                            progress: ImageProgressHandler? = nil) async throws -> (image: ResolvedImage, layers: [String]) {
        try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let image = try self.resolve(try self.lookup(name), platform: platform)
                if let holder { try self.hold(image, for: holder) }
                let directories = Snapshotter.chainIDs(image.layers.map(\.diffID)).map { Snapshotter.directory(for: $0, in: self.root) }
                if directories.allSatisfy({ Sys.lstat($0) != nil }) { return (image, directories) }
                let snapshots = try self.snapshotter.prepare(image.layers, privileged: privileged ?? Sys.isPrivileged, progress: progress,
                                                             isCancelled: isCancelled)
                return (image, snapshots.map(\.directory))
            }
        }
    }

    /// Records the chain IDs of `image` as held by `holder`. Called under the
    /// shared store lock, before the snapshots exist: no garbage collection
    /// (which takes the lock exclusively) can fall in between or see the
    /// file half written.
    private func hold(_ image: ResolvedImage, for holder: String) throws {
        let chainIDs = Snapshotter.chainIDs(image.layers.map(\.diffID))
        try Sys.makeDirectories(root.holds, mode: 0o700)
        let path = root.holds + "/" + (try Self.holdName(holder))
        let fd = try OwnedDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        let data = Data(chainIDs.map { $0.description + "\n" }.joined().utf8)
        try data.withUnsafeBytes { try Sys.writeAll(fd.raw, $0, path: path) }
    }

    /// Lets garbage collection remove the snapshots `holder` held.
    public func releaseSnapshots(holder: String) throws {
        let path = root.holds + "/" + (try Self.holdName(holder))
        guard unlink(path) == 0 || errno == ENOENT else {
            throw OCIImageError(.systemCall, "cannot remove the snapshot hold \(path)", underlying: Sys.errno)
        }
    }

    /// The chain IDs every holder keeps.
    func heldChainIDs() throws -> Set<Digest> {
        var held: Set<Digest> = []
        for name in try directoryNames(root.holds) {
            guard let data = FileManager.default.contents(atPath: root.holds + "/" + name) else { continue }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                if let digest = try? Digest(parsing: String(line)) { held.insert(digest) }
            }
        }
        return held
    }

    private static func holdName(_ holder: String) throws -> String {
        guard !holder.isEmpty, holder.count <= 128, holder.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }),
              holder.first != "."
        else { throw OCIImageError(.invalidArgument, "\"\(holder)\" cannot name a snapshot holder") }
        return holder
    }

    /// Every snapshot the store holds.
    public func snapshots() async throws -> [Snapshot] {
        try await offload { _ in try self.database.snapshots(root: self.root) }
    }
}
