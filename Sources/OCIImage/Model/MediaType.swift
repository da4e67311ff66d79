/// A media type naming the format of a blob, such as
/// `application/vnd.oci.image.manifest.v1+json`.
public struct MediaType: RawRepresentable, Hashable, Sendable, Codable, ExpressibleByStringLiteral, CustomStringConvertible {
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    // MARK: OCI

    /// An OCI image index.
    public static let ociIndex: MediaType = "application/vnd.oci.image.index.v1+json"
    /// An OCI image manifest.
    public static let ociManifest: MediaType = "application/vnd.oci.image.manifest.v1+json"
    /// An OCI image configuration.
    public static let ociConfig: MediaType = "application/vnd.oci.image.config.v1+json"
    /// An OCI layout's `oci-layout` file.
    public static let ociLayoutHeader: MediaType = "application/vnd.oci.layout.header.v1+json"
    /// An uncompressed OCI layer.
    public static let ociLayer: MediaType = "application/vnd.oci.image.layer.v1.tar"
    /// A gzip-compressed OCI layer.
    public static let ociLayerGzip: MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
    /// A zstd-compressed OCI layer.
    public static let ociLayerZstd: MediaType = "application/vnd.oci.image.layer.v1.tar+zstd"
    /// An uncompressed non-distributable OCI layer (deprecated by the specification).
    public static let ociLayerNondistributable: MediaType = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    /// A gzip-compressed non-distributable OCI layer (deprecated by the specification).
    public static let ociLayerNondistributableGzip: MediaType = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    /// A zstd-compressed non-distributable OCI layer (deprecated by the specification).
    public static let ociLayerNondistributableZstd: MediaType = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    /// The empty descriptor's media type, used by artifacts.
    public static let ociEmpty: MediaType = "application/vnd.oci.empty.v1+json"

    // MARK: Docker

    /// A Docker schema 2 manifest list.
    public static let dockerManifestList: MediaType = "application/vnd.docker.distribution.manifest.list.v2+json"
    /// A Docker schema 2 manifest.
    public static let dockerManifest: MediaType = "application/vnd.docker.distribution.manifest.v2+json"
    /// A Docker container configuration.
    public static let dockerConfig: MediaType = "application/vnd.docker.container.image.v1+json"
    /// A gzip-compressed Docker layer.
    public static let dockerLayerGzip: MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    /// A zstd-compressed Docker layer (as written by recent Docker releases).
    public static let dockerLayerZstd: MediaType = "application/vnd.docker.image.rootfs.diff.tar.zstd"
    /// An uncompressed Docker layer.
    public static let dockerLayer: MediaType = "application/vnd.docker.image.rootfs.diff.tar"
    /// A Docker foreign (non-distributable) gzip layer.
    public static let dockerForeignLayerGzip: MediaType = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    /// A Docker schema 1 manifest, which Gantry refuses.
    public static let dockerManifestV1: MediaType = "application/vnd.docker.distribution.manifest.v1+json"
    /// A signed Docker schema 1 manifest, which Gantry refuses.
    public static let dockerManifestV1Signed: MediaType = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    // MARK: Classification

    /// Whether this names an image index or a Docker manifest list.
    public var isIndex: Bool { self == .ociIndex || self == .dockerManifestList }

    /// Whether this names an image manifest (OCI or Docker schema 2).
    public var isManifest: Bool { self == .ociManifest || self == .dockerManifest }

    /// Whether this names Docker schema 1, which Gantry refuses.
    public var isSchema1: Bool { self == .dockerManifestV1 || self == .dockerManifestV1Signed }

    /// The compression of a layer of this media type, or `nil` if this is not
    /// a layer media type Gantry can unpack.
    public var layerCompression: LayerCompression? {
        switch self {
        case .ociLayer, .ociLayerNondistributable, .dockerLayer: LayerCompression.none
        case .ociLayerGzip, .ociLayerNondistributableGzip, .dockerLayerGzip, .dockerForeignLayerGzip: .gzip
        case .ociLayerZstd, .ociLayerNondistributableZstd, .dockerLayerZstd: .zstd
        default: nil
        }
    }

    /// The OCI layer media type for a compression.
    public static func ociLayer(_ compression: LayerCompression) -> MediaType {
        switch compression {
        case .none: .ociLayer
        case .gzip: .ociLayerGzip
        case .zstd: .ociLayerZstd
        }
    }
}

/// How a layer archive is compressed.
public enum LayerCompression: String, Hashable, Sendable, CaseIterable {
    /// A plain tar stream.
    case none
    /// gzip (RFC 1952).
    case gzip
    /// Zstandard (RFC 8878).
    case zstd
}
