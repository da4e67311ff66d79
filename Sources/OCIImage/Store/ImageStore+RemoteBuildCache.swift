#if Registry
import Foundation

/// A build cache kept in a registry: an OCI image index whose manifests
/// are the images of build steps, each annotated with its step's cache key.
///
/// ``ImageStore/pushBuildCache(_:to:client:)`` writes one;
/// ``ImageStore/readBuildCache(from:client:)`` reads its list, and
/// ``ImageStore/fetchBuildStep(_:from:client:)`` brings one step's image
/// into the store when a build needs it.
public struct RemoteBuildCache: Hashable, Sendable {
    /// The annotation of an index entry that holds its step's cache key.
    public static let keyAnnotation = "dev.gantry.build.cache-key"
    /// The annotation of the index that marks it as a build cache.
    public static let kindAnnotation = "dev.gantry.build.cache"

    /// Where the cache is.
    public var reference: ImageReference
    /// The steps' image manifests, by cache key.
    public var steps: [String: Descriptor]

    /// A cache read from `reference`.
    public init(reference: ImageReference, steps: [String: Descriptor]) {
        self.reference = reference
        self.steps = steps
    }
}

extension ImageStore {
    /// Pushes the images of the build steps with these cache keys, and one
    /// index listing them by key, to `destination` (`registry/repository[:tag]`;
    /// `:latest` by default), as `--cache-to type=registry` does. Blobs the
    /// registry has already are not sent again. Keys this store has no
    /// image for (forgotten, or never built here) are skipped.
    ///
    /// - Returns: What the push did, for the index.
    @discardableResult
    public func pushBuildCache(_ keys: [String], to destination: String, client: RegistryClient? = nil) async throws -> PushReport {
        var parsed = try ImageReference(parsing: destination)
        guard parsed.digest == nil else {
            throw OCIImageError(.invalidReference, "a build cache is pushed to a tag, not to a digest: \(destination)")
        }
        parsed.tag = parsed.tag ?? ImageReference.defaultTag
        let target = parsed
        let client = client ?? registry
        return try await lock.withLock(.shared) { () async throws -> PushReport in
            // The steps still here, with everything they reach.
            let (entries, graph) = try await offload { _ in
                var entries: [Descriptor] = []
                var graph: [Descriptor] = []
                var seen: Set<Digest> = []
                for key in Set(keys).sorted() {
                    guard let manifest = try self.database.buildCacheEntry(key),
                          let blobs = try? self.reachableBlobs(from: manifest), blobs.count == (try? self.reachableCount(manifest)) else { continue }
                    var entry = manifest
                    entry.annotations = [RemoteBuildCache.keyAnnotation: key]
                    entries.append(entry)
                    for blob in blobs.reversed() where seen.insert(blob.digest).inserted { graph.append(blob) }
                }
                return (entries, graph)
            }
            let (outcomes, bytes) = try await send(graph, to: target, client: client)
            let index = ImageIndex(manifests: entries, annotations: [RemoteBuildCache.kindAnnotation: "v1"])
            let data = try JSONEncoder.canonical.encode(index)
            try await client.putManifest(data, mediaType: .ociIndex, registry: target.registry, repository: target.repository,
                                         reference: target.tag ?? ImageReference.defaultTag)
            try await offload { _ in try self.database.addBlobSources(graph.map(\.digest), registry: target.registry, repository: target.repository) }
            return PushReport(reference: target, digest: Digest.compute(data), blobs: outcomes, bytes: bytes)
        }
    }

    /// Reads the list of a build cache that ``pushBuildCache(_:to:client:)``
    /// wrote at `source`.
    ///
    /// - Throws: ``OCIImageError``: `notFound` when there is none there,
    ///   `invalidManifest` when what is there is not a build cache.
    public func readBuildCache(from source: String, client: RegistryClient? = nil) async throws -> RemoteBuildCache {
        let reference = try ImageReference(parsing: source)
        let client = client ?? registry
        let fetched = try await client.manifest(registry: reference.registry, repository: reference.repository,
                                                reference: reference.digest?.description ?? reference.tag ?? ImageReference.defaultTag)
        guard fetched.kind == .index, let index = try? ImageIndex.decode(fetched.data, mediaType: fetched.mediaType),
              index.annotations?[RemoteBuildCache.kindAnnotation] != nil else {
            throw OCIImageError(.invalidManifest, "\(source) is not a build cache (an index that a build pushed with --cache-to)")
        }
        var steps: [String: Descriptor] = [:]
        for entry in index.manifests where entry.mediaType.isManifest {
            guard let key = entry.annotations?[RemoteBuildCache.keyAnnotation] else { continue }
            var descriptor = entry
            descriptor.annotations = nil
            steps[key] = descriptor
        }
        return RemoteBuildCache(reference: reference, steps: steps)
    }

    /// Brings the image of the step with cache key `key` from `cache` into
    /// the store (its manifest, configuration and layers, each verified)
    /// and records it under the key, as if it had been built here.
    ///
    /// - Returns: The step's image, or nil when the cache has no such step.
    public func fetchBuildStep(_ key: String, from cache: RemoteBuildCache, client: RegistryClient? = nil) async throws -> ResolvedImage? {
        guard let descriptor = cache.steps[key] else { return nil }
        let client = client ?? registry
        let (registry, repository) = (cache.reference.registry, cache.reference.repository)
        return try await lock.withLock(.shared) { () async throws -> ResolvedImage? in
            let fetched = try await client.manifest(registry: registry, repository: repository, reference: descriptor.digest.description)
            _ = try await offload { _ in try self.content.ingest(fetched.data, expected: descriptor.digest) }
            let manifest = try Manifest.decode(fetched.data, mediaType: fetched.descriptor.mediaType)
            try Self.validateImageManifest(manifest, digest: descriptor.digest)
            let blobs = [manifest.config] + manifest.layers
            let content = self.content
            _ = try await transfer(blobs, limit: client.options.maximumConcurrentTransfers) { _, blob in
                try await client.download(blob, registry: registry, repository: repository, into: content)
            }
            return try await offload { _ in
                try self.database.addBlobSources(blobs.map(\.digest) + [descriptor.digest], registry: registry, repository: repository)
                try self.database.setBuildCacheEntry(key, to: fetched.descriptor)
                return try self.resolve(try Self.unnamedRecord(fetched.descriptor), platform: nil)
            }
        }
    }
}
#endif
