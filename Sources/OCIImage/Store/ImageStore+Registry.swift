#if Registry
import Foundation
import Synchronization
import Tracing

/// What a pull did.
public struct PullReport: Hashable, Sendable, Codable {
    /// The name the image was stored under.
    public var reference: ImageReference
    /// The digest the registry served for the reference (a manifest or an index).
    public var digest: Digest
    /// The platform manifest that was pulled.
    public var manifestDigest: Digest
    /// Blobs downloaded.
    public var downloaded: Int
    /// Blobs the store had already.
    public var present: Int
    /// Bytes downloaded.
    public var bytes: Int64
}

/// What a push did.
public struct PushReport: Hashable, Sendable, Codable {
    /// Where the image went.
    public var reference: ImageReference
    /// The digest of what the reference now points to.
    public var digest: Digest
    /// What happened to each blob (configuration and layers), by digest.
    public var blobs: [String: BlobPushOutcome]
    /// Bytes uploaded.
    public var bytes: Int64
}

extension ImageStore {
    /// Pulls an image from its registry into the store and names it.
    ///
    /// For an index, only the manifest for `platform` (default: the host's)
    /// and its blobs are fetched; the name points at the index, so that
    /// ``inspect(_:platform:)`` shows the digest the registry served. Blobs
    /// already here are not fetched again; the rest are fetched concurrently
    /// (``RegistryOptions/maximumConcurrentTransfers``), each verified
    /// before it is stored.
    ///
    /// - Parameters:
    ///   - reference: `registry/repository[:tag][@digest]`; a digest is verified.
    ///   - platform: The platform to pull from an index.
    ///   - client: The client to use instead of ``registry``.
    ///   - progress: Receives byte counts per blob.
    /// - Throws: ``OCIImageError``; the store then has no new name (blobs
    ///   already complete stay until the next ``prune()``), and no partial blob.
    @discardableResult
    public func pull(_ reference: String, platform: Platform? = nil, client: RegistryClient? = nil,
                     progress: ImageProgressHandler? = nil) async throws -> PullReport {
        let reference = try ImageReference(parsing: reference)
        let client = client ?? registry
        return try await withSpan("pull") { span in
            span.attributes["gantry.image"] = reference.description
            let report = try await lock.withLock(.shared) { () async throws -> PullReport in
                try await performPull(reference, platform: platform, client: client, progress: progress)
            }
            span.attributes["gantry.bytes"] = Int(report.bytes)
            ImageTelemetry.pulled(bytes: report.bytes)
            return report
        }
    }

    private func performPull(_ reference: ImageReference, platform: Platform?, client: RegistryClient,
                             progress: ImageProgressHandler?) async throws -> PullReport {
        let registry = reference.registry
        let repository = reference.repository
        let top = try await client.manifest(registry: registry, repository: repository,
                                            reference: reference.digest?.description ?? reference.tag ?? ImageReference.defaultTag)
        _ = try await offload { _ in try self.content.ingest(top.data, expected: top.digest) }
        var manifestDescriptor = top.descriptor
        var manifestData = top.data
        if top.kind == .index {
            let index = try ImageIndex.decode(top.data, mediaType: top.mediaType)
            let wanted = platform ?? .host
            let chosen: Descriptor
            do {
                chosen = try index.manifest(for: wanted)
            } catch let error as OCIImageError where error.code == .platformNotFound {
                throw OCIImageError(.platformNotFound, "image \(reference): \(error.message)")
            }
            let fetched = try await client.manifest(registry: registry, repository: repository, reference: chosen.digest.description)
            guard fetched.kind == .manifest else {
                throw OCIImageError(.invalidManifest, "image \(reference): nested indexes are not supported")
            }
            _ = try await offload { _ in try self.content.ingest(fetched.data, expected: fetched.digest) }
            manifestDescriptor = fetched.descriptor
            manifestData = fetched.data
        }
        let manifest = try Manifest.decode(manifestData, mediaType: manifestDescriptor.mediaType)
        try Self.validateImageManifest(manifest, digest: manifestDescriptor.digest)

        let blobs = [manifest.config] + manifest.layers
        let present = blobs.filter { self.content.size(of: $0.digest) == $0.size }.count
        let content = self.content
        let bytes = try await transfer(blobs, limit: client.options.maximumConcurrentTransfers) { index, blob in
            let reporter = ImageProgress.reporter(.downloading, blob, index: index, count: blobs.count, handler: progress)
            return try await client.download(blob, registry: registry, repository: repository, into: content, progress: reporter)
        }
        let configuration = try ImageConfiguration.decode(try self.content.document(manifest.config))
        guard configuration.rootfs.diffIDs.count == manifest.layers.count else {
            throw OCIImageError(.invalidConfiguration, "image \(reference) has \(manifest.layers.count) layers but \(configuration.rootfs.diffIDs.count) DiffIDs")
        }
        let sources = blobs.map(\.digest) + [manifestDescriptor.digest, top.digest]
        try await offload { _ in
            try self.database.addBlobSources(sources, registry: registry, repository: repository)
            try self.database.setImage(reference, to: top.descriptor)
        }
        return PullReport(reference: reference, digest: top.digest, manifestDigest: manifestDescriptor.digest,
                          downloaded: blobs.count - present, present: present, bytes: bytes.reduce(0, +))
    }

    /// Pushes a local image (however it came here) to a registry: blobs
    /// first (skipping those the registry has, mounting those another of
    /// its repositories has), then manifests by digest, then the tag.
    ///
    /// - Parameters:
    ///   - name: The local image.
    ///   - destination: `registry/repository[:tag]`.
    ///   - client: The client to use instead of ``registry``.
    ///   - progress: Receives byte counts per blob.
    @discardableResult
    public func push(_ name: String, to destination: String, client: RegistryClient? = nil,
                     progress: ImageProgressHandler? = nil) async throws -> PushReport {
        let target = try ImageReference(parsing: destination)
        let client = client ?? registry
        return try await lock.withLock(.shared) { () async throws -> PushReport in
            try await performPush(name, to: target, client: client, progress: progress)
        }
    }

    private func performPush(_ name: String, to target: ImageReference, client: RegistryClient,
                             progress: ImageProgressHandler?) async throws -> PushReport {
        let (top, graph) = try await offload { _ in try self.completeGraph(try self.lookup(name)) }
        let (outcomes, bytes) = try await send(graph, to: target, client: client, progress: progress)
        if let tag = target.tag {
            let data = try await offload { _ in try self.content.document(top) }
            try await client.putManifest(data, mediaType: top.mediaType, registry: target.registry, repository: target.repository, reference: tag)
        }
        try await offload { _ in try self.database.addBlobSources(graph.map(\.digest), registry: target.registry, repository: target.repository) }
        return PushReport(reference: target, digest: top.digest, blobs: outcomes, bytes: bytes)
    }

    /// Sends `graph` to `target`'s repository as the store holds it: the
    /// blobs first, concurrently (skipping those the registry has, mounting
    /// those another of its repositories has), then each manifest and
    /// index by digest. Returns what happened to each blob and the bytes
    /// uploaded.
    func send(_ graph: [Descriptor], to target: ImageReference, client: RegistryClient,
              progress: ImageProgressHandler? = nil) async throws -> (outcomes: [String: BlobPushOutcome], bytes: Int64) {
        let blobs = graph.filter { !$0.mediaType.isIndex && !$0.mediaType.isManifest }
        let manifests = graph.filter { $0.mediaType.isIndex || $0.mediaType.isManifest }
        let outcomes = Outcomes()
        let database = self.database
        let content = self.content
        let bytes = try await transfer(blobs, limit: client.options.maximumConcurrentTransfers) { index, blob in
            let sources = try database.blobSources(blob.digest, registry: target.registry).filter { $0 != target.repository }
            let reporter = ImageProgress.reporter(.uploading, blob, index: index, count: blobs.count, handler: progress)
            let outcome = try await client.upload(blob, from: content.path(for: blob.digest), registry: target.registry,
                                                  repository: target.repository, mountFrom: sources.first, progress: reporter)
            outcomes.set(blob.digest, outcome)
            return outcome == .uploaded ? blob.size : 0
        }
        for manifest in manifests {
            let data = try await offload { _ in try self.content.document(manifest) }
            try await client.putManifest(data, mediaType: manifest.mediaType, registry: target.registry, repository: target.repository,
                                         reference: manifest.digest.description)
        }
        return (outcomes.all, bytes.reduce(0, +))
    }

    /// Runs `work` for each blob, at most `limit` at once; returns the
    /// results in the blobs' order. The first error cancels the rest.
    func transfer<Result: Sendable>(_ blobs: [Descriptor], limit: Int,
                                            _ work: @escaping @Sendable (Int, Descriptor) async throws -> Result) async throws -> [Result] {
        try await withThrowingTaskGroup(of: (Int, Result).self) { group in
            var results = [Result?](repeating: nil, count: blobs.count)
            var next = 0
            while next < min(limit, blobs.count) {
                let index = next
                group.addTask { (index, try await work(index, blobs[index])) }
                next += 1
            }
            while let (index, result) = try await group.next() {
                results[index] = result
                if next < blobs.count {
                    let index = next
                    group.addTask { (index, try await work(index, blobs[index])) }
                    next += 1
                }
            }
            return results.compactMap { $0 }
        }
    }

    /// The tags of a repository (`registry/repository`), following pagination.
    public func tags(_ repository: String, client: RegistryClient? = nil) async throws -> [String] {
        let reference = try ImageReference(parsing: repository)
        return try await (client ?? registry).tags(registry: reference.registry, repository: reference.repository)
    }
}

/// Push outcomes gathered from concurrent uploads.
private final class Outcomes: Sendable {
    private let state = Mutex<[String: BlobPushOutcome]>([:])
    func set(_ digest: Digest, _ outcome: BlobPushOutcome) { state.withLock { $0[digest.description] = outcome } }
    var all: [String: BlobPushOutcome] { state.withLock { $0 } }
}
#endif
