/// A reference to content: its media type, digest and size, as defined by
/// the OCI image specification.
public struct Descriptor: Hashable, Sendable, Codable, PreservesUnknownFields {
    /// The media type of the referenced content.
    public var mediaType: MediaType
    /// The digest of the referenced content.
    public var digest: Digest
    /// The size of the referenced content in bytes.
    public var size: Int64
    /// Locations the content may also be downloaded from.
    public var urls: [String]?
    /// Arbitrary metadata.
    public var annotations: [String: String]?
    /// For manifests in an index: the platform the image runs on.
    public var platform: Platform?
    /// For artifacts: the type of the artifact.
    public var artifactType: String?
    /// The content itself, base64-encoded, when it is embedded.
    public var data: String?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mediaType, digest, size, urls, annotations, platform, artifactType, data
    }

    /// Creates a descriptor.
    public init(
        mediaType: MediaType, digest: Digest, size: Int64,
        urls: [String]? = nil, annotations: [String: String]? = nil, platform: Platform? = nil,
        artifactType: String? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.urls = urls
        self.annotations = annotations
        self.platform = platform
        self.artifactType = artifactType
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mediaType = try container.decode(MediaType.self, forKey: .mediaType)
        digest = try container.decode(Digest.self, forKey: .digest)
        size = try container.decode(Int64.self, forKey: .size)
        guard size >= 0 else {
            throw OCIImageError(.invalidManifest, "descriptor \(digest) has a negative size \(size)")
        }
        urls = try container.decodeIfPresent([String].self, forKey: .urls)
        annotations = try container.decodeIfPresent([String: String].self, forKey: .annotations)
        platform = try container.decodeIfPresent(Platform.self, forKey: .platform)
        artifactType = try container.decodeIfPresent(String.self, forKey: .artifactType)
        data = try container.decodeIfPresent(String.self, forKey: .data)
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mediaType, forKey: .mediaType)
        try container.encode(digest, forKey: .digest)
        try container.encode(size, forKey: .size)
        try container.encodeIfPresent(urls, forKey: .urls)
        try container.encodeIfPresent(annotations, forKey: .annotations)
        try container.encodeIfPresent(platform, forKey: .platform)
        try container.encodeIfPresent(artifactType, forKey: .artifactType)
        try container.encodeIfPresent(data, forKey: .data)
        try encodeUnknownFields(to: encoder)
    }
}

/// Well-known annotation keys.
public enum AnnotationKey {
    /// The tag of a manifest in an OCI layout's `index.json`.
    public static let refName = "org.opencontainers.image.ref.name"
    /// The creation time of an image (RFC 3339).
    public static let created = "org.opencontainers.image.created"
    /// The full image name, as containerd writes it in exported layouts.
    public static let containerdImageName = "io.containerd.image.name"
}
