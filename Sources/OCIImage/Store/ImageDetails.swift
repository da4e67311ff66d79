public import Foundation

/// Everything about one image, as `gantry image inspect` shows it.
public struct ImageDetails: Hashable, Sendable, Codable {
    /// The full name (`docker.io/library/busybox:latest`).
    public var name: String
    /// The short name Docker shows (`busybox:latest`).
    public var familiarName: String
    /// The digest the name points to (a manifest or an index).
    public var digest: Digest
    /// The media type of what the name points to.
    public var mediaType: MediaType
    /// The platform manifest chosen for this host.
    public var manifestDigest: Digest
    /// The configuration's digest (Docker's image ID).
    public var configDigest: Digest
    /// The image's platform.
    public var platform: Platform
    /// For an index: the platforms it lists.
    public var platforms: [Platform]?
    /// The creation time from the configuration (RFC 3339).
    public var created: String?
    /// When the name was given.
    public var added: Date
    /// Bytes of the manifest, configuration and layers as stored.
    public var size: Int64
    /// The layers, base first.
    public var layers: [Descriptor]
    /// The configuration.
    public var config: ImageConfiguration
}

extension ImageStore {
    /// Details of an image for `platform` (default: the host's).
    public func inspect(_ name: String, platform: Platform? = nil) async throws -> ImageDetails {
        try await offload { _ in try self.details(try self.lookup(name), platform: platform) }
    }

    func details(_ record: ImageRecord, platform: Platform?) throws -> ImageDetails {
        let image = try resolve(record, platform: platform)
        var size = image.manifestDescriptor.size + image.manifest.config.size + image.manifest.layers.reduce(0) { $0 + $1.size }
        if record.descriptor.digest != image.manifestDescriptor.digest { size += record.descriptor.size }
        return ImageDetails(
            name: record.reference.description, familiarName: record.reference.familiarDescription,
            digest: record.descriptor.digest, mediaType: record.descriptor.mediaType,
            manifestDigest: image.manifestDescriptor.digest, configDigest: image.manifest.config.digest,
            platform: image.configuration.platform, platforms: image.platforms,
            created: image.configuration.created, added: record.created, size: size,
            layers: image.manifest.layers, config: image.configuration)
    }
}
