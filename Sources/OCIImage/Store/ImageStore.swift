import Foundation
public import Logging
import Synchronization

/// The local image store: content-addressed blobs, image names, and layer
/// snapshots under one `StateRoot`.
///
/// All methods are safe to call concurrently, from several tasks and from
/// several processes sharing the root. Blocking file-system work runs outside
/// Swift's cooperative thread pool.
public final class ImageStore: Sendable {
    /// The state root.
    public let root: StateRoot
    /// The blob store.
    public let content: ContentStore
    #if Registry
    /// The client for pulls and pushes that name none.
    public let registry: RegistryClient
    #endif
    let database: MetadataDatabase
    let lock: StoreLock
    let logger: Logger
    /// How far a layer may expand when it is unpacked.
    public let layerExpansionLimit: LayerExpansionLimit
    /// For a process that is not root: the user namespace that layers are
    /// unpacked for (files keep the image's owners as that namespace sees
    /// them) and that containers run in. `nil` for root.
    public let userNamespace: UserNamespaceMapping?
    /// Manifests and configurations already decoded, by manifest digest and
    /// platform: content is immutable, so they never go stale.
    let resolvedManifests = Mutex<[String: ResolvedImage]>([:])

    #if Registry
    /// Opens (creating if needed) the image store in `root`.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - registry: The client for pulls and pushes; by default one with
    ///     default options and the standard credential files.
    ///   - layerExpansionLimit: How far a layer may expand when it is
    ///     unpacked (a bound against decompression bombs).
    ///   - logger: Where the store logs.
    public init(root: StateRoot = .default, registry: RegistryClient? = nil, layerExpansionLimit: LayerExpansionLimit = .default,
                logger: Logger = Logger(label: "gantry.images")) throws {
        self.registry = try registry ?? RegistryClient(logger: logger)
        (self.root, content, database, lock) = try Self.open(root)
        self.layerExpansionLimit = layerExpansionLimit
        self.logger = logger
        userNamespace = Self.defaultUserNamespace
        try Self.checkRecordedUserNamespace(root, userNamespace)
    }
    #else
    /// Opens (creating if needed) the image store in `root`.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - layerExpansionLimit: How far a layer may expand when it is
    ///     unpacked (a bound against decompression bombs).
    ///   - logger: Where the store logs.
    public init(root: StateRoot = .default, layerExpansionLimit: LayerExpansionLimit = .default,
                logger: Logger = Logger(label: "gantry.images")) throws {
        (self.root, content, database, lock) = try Self.open(root)
        self.layerExpansionLimit = layerExpansionLimit
        self.logger = logger
        userNamespace = Self.defaultUserNamespace
        try Self.checkRecordedUserNamespace(root, userNamespace)
    }
    #endif

    /// Creates the root if needed and opens its blobs, database and lock.
    private static func open(_ root: StateRoot) throws -> (StateRoot, ContentStore, MetadataDatabase, StoreLock) {
        try root.create()
        let content = try ContentStore(root: root.path)
        try refuseEmptiedDatabase(root, content: content)
        return (root, content, try MetadataDatabase(path: root.database), StoreLock(path: root.lockFile))
    }

    /// Refuses to open a metadata database that was emptied (truncated to
    /// nothing) while the store holds blobs: SQLite would take the empty
    /// file for a new database, every image would vanish without a word,
    /// and the next prune would delete their content.
    private static func refuseEmptiedDatabase(_ root: StateRoot, content: ContentStore) throws {
        var info = stat()
        guard stat(root.database, &info) == 0, info.st_size == 0 else { return }
        var wal = stat()
        if stat(root.database + "-wal", &wal) == 0, wal.st_size > 0 { return }
        guard let blobs = try? content.list(), !blobs.isEmpty else { return }
        throw OCIImageError(.damagedState, "the image database \(root.database) is empty while \(blobs.count) blobs are stored: it was truncated or damaged, and opening it would lose every image's name. Move it aside and re-import or pull the images (their content is kept), or restore it from a backup")
    }

    var snapshotter: Snapshotter {
        Snapshotter(root: root, content: content, database: database, expansionLimit: layerExpansionLimit, userNamespace: userNamespace,
                    logger: logger)
    }

    /// The file in `snapshots/` naming the mapping its layers are for.
    static let userNamespaceRecord = ".user-namespace"

    /// Records the mapping an ordinary user's layers are unpacked for
    /// (`snapshots/.user-namespace`), and refuses a store whose layers were
    /// unpacked for another: their files belong to IDs the user may no
    /// longer have, and would show the wrong owners.
    static func checkRecordedUserNamespace(_ root: StateRoot, _ mapping: UserNamespaceMapping?) throws {
        guard let mapping else { return }
        let path = root.snapshots + "/" + userNamespaceRecord
        let current = "\(mapping)\n"
        if let recorded = try? String(contentsOfFile: path, encoding: .utf8) {
            if recorded == current { return }
            let layers = ((try? FileManager.default.contentsOfDirectory(atPath: root.snapshots)) ?? []).filter { !$0.hasPrefix(".") }
            guard layers.isEmpty else {
                throw OCIImageError(.damagedState, "the layers in \(root.snapshots) were unpacked for \(recorded.trimmingCharacters(in: .whitespacesAndNewlines)), but this user's namespace is now \(mapping) (/etc/subuid or /etc/subgid changed): their files would show the wrong owners. Give the user its former ranges again, or have root remove \(root.snapshots) (the images' content stays; their layers are unpacked again)")
            }
        }
        try Data(current.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// The user namespace of a process that is not root: its subordinate IDs
    /// where it has them, else itself alone.
    static var defaultUserNamespace: UserNamespaceMapping? {
        geteuid() == 0 ? nil : UserNamespaceMapping.forCurrentUser()
    }

    // MARK: Names

    /// Every named image, sorted by name.
    public func list() async throws -> [ImageRecord] {
        try await offload { _ in try self.database.images() }
    }

    /// Finds an image by name (`busybox`, `busybox:1.36`,
    /// `127.0.0.1:5000/team/app:v2`), by digest (`sha256:…`), or by a unique
    /// prefix of at least four hexadecimal characters of its digest.
    ///
    /// - Throws: ``OCIImageError/Code/imageNotFound`` or
    ///   ``OCIImageError/Code/ambiguousImage``.
    public func image(_ name: String) async throws -> ImageRecord {
        try await offload { _ in try self.lookup(name) }
    }

    func lookup(_ name: String) throws -> ImageRecord {
        if let reference = try? ImageReference(parsing: name), let record = try database.image(named: reference.description) {
            return record
        }
        var hex = name
        if hex.hasPrefix("sha256:") { hex.removeFirst("sha256:".count) }
        if hex.count >= 4, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            let matches = try database.images().filter { $0.descriptor.digest.encoded.hasPrefix(hex) }
            if Set(matches.map(\.descriptor.digest)).count > 1 {
                throw OCIImageError(.ambiguousImage, "\"\(name)\" matches several images: \(matches.map(\.reference.familiarDescription).joined(separator: ", "))")
            }
            if let first = matches.first { return first }
        }
        if let reference = try? ImageReference(parsing: name), let digest = reference.digest,
           let match = try database.images().first(where: { $0.descriptor.digest == digest && $0.reference.name == reference.name }) {
            return match
        }
        // A build step's image, by its whole digest.
        if name.hasPrefix("sha256:"), let digest = try? Digest(parsing: name), let descriptor = try database.buildCacheEntry(digest: digest) {
            return try Self.unnamedRecord(descriptor)
        }
        throw OCIImageError(.imageNotFound, "no image named \"\(name)\" in \(root)")
    }

    /// Parses a name that is to be given to an image: a reference with a tag
    /// (`latest` when none is written) and no digest.
    static func namingReference(_ name: String) throws -> ImageReference {
        let reference = try ImageReference(parsing: name)
        guard reference.digest == nil else {
            throw OCIImageError(.invalidReference, "\"\(name)\" cannot name an image: a name has a tag, not a digest")
        }
        return reference
    }

    /// Gives the image `source` a further name.
    @discardableResult
    public func tag(_ source: String, as name: String) async throws -> ImageRecord {
        try await offload { _ in
            let record = try self.lookup(source)
            let reference = try Self.namingReference(name)
            try self.database.setImage(reference, to: record.descriptor)
            return try self.lookup(reference.description)
        }
    }

    /// Removes a name. With `prune`, content no longer referenced by any
    /// name is removed too, as ``prune()`` does.
    ///
    /// - Returns: The removed record and what garbage collection freed.
    @discardableResult
    public func remove(_ name: String, prune: Bool = true) async throws -> (removed: ImageRecord, freed: PruneReport?) {
        try await offload { _ in
            let record = try self.lookup(name)
            try self.database.removeImage(named: record.reference.description)
            let report = prune ? try self.collectGarbage() : nil
            return (record, report)
        }
    }

    // MARK: Reading images

    /// An image resolved to one platform's manifest and configuration.
    public struct ResolvedImage: Hashable, Sendable {
        /// The image's record.
        public var record: ImageRecord
        /// The descriptor of the platform manifest.
        public var manifestDescriptor: Descriptor
        /// The platform manifest.
        public var manifest: Manifest
        /// The configuration.
        public var configuration: ImageConfiguration
        /// The platforms of the index, when the record names an index.
        public var platforms: [Platform]?

        /// The layers with their DiffIDs, base first.
        var layers: [LayerSource] {
            zip(manifest.layers, configuration.rootfs.diffIDs).map { LayerSource(descriptor: $0, diffID: $1) }
        }
    }

    /// Resolves an image to the manifest for `platform` (default: the host's).
    public func resolve(_ name: String, platform: Platform? = nil) async throws -> ResolvedImage {
        try await offload { _ in try self.resolve(try self.lookup(name), platform: platform) }
    }

    func resolve(_ record: ImageRecord, platform: Platform?) throws -> ResolvedImage {
        // Only a plain manifest: what an index resolves to depends on which
        // of its manifests are present, which changes.
        let cacheKey = record.descriptor.mediaType.isManifest ? "\(record.descriptor.digest) \(platform?.description ?? "")" : nil
        if let cacheKey, var cached = resolvedManifests.withLock({ $0[cacheKey] }) {
            cached.record = record
            return cached
        }
        let resolved = try resolveDocuments(record, platform: platform)
        if let cacheKey {
            resolvedManifests.withLock { cache in
                if cache.count >= 64 { cache.removeAll() }
                cache[cacheKey] = resolved
            }
        }
        return resolved
    }

    private func resolveDocuments(_ record: ImageRecord, platform: Platform?) throws -> ResolvedImage {
        var descriptor = record.descriptor
        var platforms: [Platform]?
        for _ in 0..<4 where descriptor.mediaType.isIndex || !descriptor.mediaType.isManifest {
            let data = try content.document(descriptor)
            guard try DocumentKind.detect(data, announced: descriptor.mediaType) == .index else { break }
            let index = try ImageIndex.decode(data, mediaType: descriptor.mediaType)
            if platforms == nil { platforms = index.manifests.compactMap(\.platform) }
            let wanted = platform ?? .host
            // Only manifests whose blobs are here can be chosen.
            let available = ImageIndex(manifests: index.manifests.filter { content.contains($0.digest) })
            do {
                descriptor = try available.manifest(for: wanted)
            } catch let error as OCIImageError where error.code == .platformNotFound {
                throw OCIImageError(.platformNotFound, "image \(record.reference.familiarDescription): \(error.message)")
            }
        }
        let manifest = try Manifest.decode(try content.document(descriptor), mediaType: descriptor.mediaType)
        let configuration = try ImageConfiguration.decode(try content.document(manifest.config))
        guard configuration.rootfs.diffIDs.count == manifest.layers.count else {
            throw OCIImageError(.invalidConfiguration, "image \(record.reference.familiarDescription) has \(manifest.layers.count) layers but \(configuration.rootfs.diffIDs.count) DiffIDs in its configuration")
        }
        if let platform, !platform.canRun(configuration.platform) {
            throw OCIImageError(.platformNotFound, "image \(record.reference.familiarDescription) is for \(configuration.platform), not \(platform)")
        }
        return ResolvedImage(record: record, manifestDescriptor: descriptor, manifest: manifest, configuration: configuration, platforms: platforms)
    }

    /// Every blob an image's descriptor reaches that is in the store:
    /// index, manifests, configurations and layers.
    func reachableBlobs(from descriptor: Descriptor) throws -> [Descriptor] {
        var result: [Descriptor] = []
        var pending = [descriptor]
        var seen: Set<Digest> = []
        while let next = pending.popLast() {
            guard seen.insert(next.digest).inserted, content.contains(next.digest) else { continue }
            result.append(next)
            guard next.mediaType.isIndex || next.mediaType.isManifest || next == descriptor else { continue }
            let data = try content.document(next)
            switch try DocumentKind.detect(data, announced: next.mediaType) {
            case .index: pending.append(contentsOf: try ImageIndex.decode(data, mediaType: next.mediaType).manifests)
            case .manifest:
                let manifest = try Manifest.decode(data, mediaType: next.mediaType)
                pending.append(manifest.config)
                pending.append(contentsOf: manifest.layers)
            }
        }
        return result
    }
}
