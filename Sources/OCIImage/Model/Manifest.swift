public import Foundation

/// An image manifest (OCI, or Docker schema 2): a configuration and an
/// ordered list of layers.
public struct Manifest: Hashable, Sendable, Codable, PreservesUnknownFields {
    /// Always 2.
    public var schemaVersion: Int
    /// The manifest's media type, when it declares one.
    public var mediaType: MediaType?
    /// For artifacts: the artifact type.
    public var artifactType: String?
    /// The image configuration blob.
    public var config: Descriptor
    /// The layers, base first.
    public var layers: [Descriptor]
    /// A manifest this one refers to (for signatures and attestations).
    public var subject: Descriptor?
    /// Arbitrary metadata.
    public var annotations: [String: String]?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, DocumentCodingKey, CaseIterable {
        case schemaVersion, mediaType, artifactType, config, layers, subject, annotations
    }

    /// Creates an OCI image manifest.
    public init(config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil, mediaType: MediaType = .ociManifest) {
        schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        (schemaVersion, mediaType, artifactType, subject, annotations) = try DocumentHeader.decode(from: container)
        config = try container.decode(Descriptor.self, forKey: .config)
        layers = try container.decodeIfPresent([Descriptor].self, forKey: .layers) ?? []
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try DocumentHeader.encode((schemaVersion, mediaType, artifactType, subject, annotations), to: &container)
        try container.encode(config, forKey: .config)
        try container.encode(layers, forKey: .layers)
        try encodeUnknownFields(to: encoder)
    }

    /// Decodes and validates a manifest.
    ///
    /// - Parameters:
    ///   - data: The manifest's bytes.
    ///   - mediaType: The media type the manifest was announced with, if known.
    /// - Throws: ``OCIImageError`` with ``OCIImageError/Code/unsupportedSchemaVersion``
    ///   for Docker schema 1, or ``OCIImageError/Code/invalidManifest``.
    public static func decode(_ data: Data, mediaType: MediaType? = nil) throws -> Manifest {
        try DocumentKind.manifest.decode(Manifest.self, from: data, announced: mediaType, schemaVersion: \.schemaVersion)
    }
}

/// An image index (OCI) or manifest list (Docker): manifests for several
/// platforms.
public struct ImageIndex: Hashable, Sendable, Codable, PreservesUnknownFields {
    /// Always 2.
    public var schemaVersion: Int
    /// The index's media type, when it declares one.
    public var mediaType: MediaType?
    /// For artifacts: the artifact type.
    public var artifactType: String?
    /// The manifests (or nested indexes).
    public var manifests: [Descriptor]
    /// A manifest this one refers to.
    public var subject: Descriptor?
    /// Arbitrary metadata.
    public var annotations: [String: String]?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, DocumentCodingKey, CaseIterable {
        case schemaVersion, mediaType, artifactType, manifests, subject, annotations
    }

    /// Creates an OCI image index.
    public init(manifests: [Descriptor], annotations: [String: String]? = nil, mediaType: MediaType? = .ociIndex) {
        schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        (schemaVersion, mediaType, artifactType, subject, annotations) = try DocumentHeader.decode(from: container)
        manifests = try container.decodeIfPresent([Descriptor].self, forKey: .manifests) ?? []
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try DocumentHeader.encode((schemaVersion, mediaType, artifactType, subject, annotations), to: &container)
        try container.encode(manifests, forKey: .manifests)
        try encodeUnknownFields(to: encoder)
    }

    /// Decodes and validates an index.
    public static func decode(_ data: Data, mediaType: MediaType? = nil) throws -> ImageIndex {
        try DocumentKind.index.decode(ImageIndex.self, from: data, announced: mediaType, schemaVersion: \.schemaVersion)
    }

    /// The manifest for `platform`: an exact match if there is one, else the
    /// closest one the platform can run (see ``Platform/canRun(_:)``).
    ///
    /// - Throws: ``OCIImageError/Code/platformNotFound`` listing the platforms on offer.
    public func manifest(for platform: Platform) throws -> Descriptor {
        let candidates = manifests.enumerated().compactMap { offset, descriptor -> (rank: Int, offset: Int, Descriptor)? in
            guard descriptor.mediaType.isManifest || descriptor.mediaType.isIndex,
                  let candidate = descriptor.platform,
                  let rank = platform.compatibilityRank(of: candidate)
            else { return nil }
            return (rank, offset, descriptor)
        }
        if let best = candidates.min(by: { ($0.rank, $0.offset) < ($1.rank, $1.offset) }) {
            return best.2
        }
        let offered = manifests.compactMap { $0.platform?.description }
        throw OCIImageError(.platformNotFound, "no manifest for platform \(platform) (the index offers: \(offered.isEmpty ? "none" : offered.joined(separator: ", ")))")
    }
}

/// What kind of document a manifest-like JSON blob is.
public enum DocumentKind: Hashable, Sendable, CustomStringConvertible {
    /// An image manifest.
    case manifest
    /// An image index or manifest list.
    case index

    public var description: String {
        switch self {
        case .manifest: "an image manifest"
        case .index: "an image index"
        }
    }

    private struct Probe: Decodable {
        var schemaVersion: Int?
        var mediaType: String?
        var manifests: JSONValue?
        var layers: JSONValue?
        var config: JSONValue?
        var fsLayers: JSONValue?
    }

    /// Decodes `data` as a document of this kind, checking that it is one
    /// and that its schema version is 2.
    func decode<Document: Decodable>(
        _ type: Document.Type, from data: Data, announced: MediaType?, schemaVersion: KeyPath<Document, Int>
    ) throws -> Document {
        let kind = try DocumentKind.detect(data, announced: announced)
        guard kind == self else {
            throw OCIImageError(.invalidManifest, "expected \(self) but found \(kind)")
        }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: data)
        } catch {
            throw OCIImageError(.invalidManifest, "\(self) cannot be decoded: \(describe(error))")
        }
        guard document[keyPath: schemaVersion] == 2 else {
            throw OCIImageError(.invalidManifest, "\(self) has schemaVersion \(document[keyPath: schemaVersion]), expected 2")
        }
        return document
    }

    /// Works out whether `data` is a manifest or an index from its declared
    /// media type, the announced one, and its fields.
    ///
    /// - Throws: ``OCIImageError/Code/unsupportedSchemaVersion`` for Docker
    ///   schema 1, ``OCIImageError/Code/invalidManifest`` when neither fits.
    public static func detect(_ data: Data, announced: MediaType? = nil) throws -> DocumentKind {
        let probe: Probe
        do {
            probe = try JSONDecoder().decode(Probe.self, from: data)
        } catch {
            throw OCIImageError(.invalidManifest, "the manifest is not a JSON object: \(describe(error))")
        }
        let declared = probe.mediaType.map(MediaType.init(rawValue:))
        if probe.schemaVersion == 1 || probe.fsLayers != nil || declared?.isSchema1 == true || announced?.isSchema1 == true {
            throw OCIImageError(.unsupportedSchemaVersion,
                                "Docker image manifest schema 1 is not supported; push the image again with a current tool to get schema 2 or OCI")
        }
        if let declared, let announced, declared != announced, (announced.isIndex || announced.isManifest) {
            throw OCIImageError(.invalidManifest, "the manifest declares media type \(declared) but was announced as \(announced)")
        }
        if let type = declared ?? announced {
            if type.isIndex { return .index }
            if type.isManifest { return .manifest }
        }
        if probe.manifests != nil && probe.layers == nil && probe.config == nil { return .index }
        if probe.config != nil { return .manifest }
        throw OCIImageError(.invalidManifest, "the document is neither an image manifest nor an image index (media type: \(declared?.rawValue ?? announced?.rawValue ?? "none"))")
    }
}

/// A short, single-line description of a decoding error.
func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, let context):
        return "missing field \(path(context.codingPath + [key]))"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
        return "wrong type at \(path(context.codingPath)): \(context.debugDescription)"
    case DecodingError.dataCorrupted(let context):
        if let underlying = context.underlyingError as? OCIImageError {
            return "\(path(context.codingPath)): \(underlying.message)"
        }
        return context.codingPath.isEmpty ? "malformed JSON" : "malformed value at \(path(context.codingPath))"
    case let error as OCIImageError:
        return error.message
    default:
        return "\(error)"
    }
}

private func path(_ codingPath: [any CodingKey]) -> String {
    codingPath.isEmpty ? "the top level" : codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

/// The keys a manifest and an index share; their cases satisfy it.
protocol DocumentCodingKey: CodingKey {
    static var schemaVersion: Self { get }
    static var mediaType: Self { get }
    static var artifactType: Self { get }
    static var subject: Self { get }
    static var annotations: Self { get }
}

/// The fields a manifest and an index share, coded once for both.
enum DocumentHeader {
    typealias Fields = (schemaVersion: Int, mediaType: MediaType?, artifactType: String?, subject: Descriptor?, annotations: [String: String]?)

    static func decode<Key: DocumentCodingKey>(from container: KeyedDecodingContainer<Key>) throws -> Fields {
        (try container.decode(Int.self, forKey: .schemaVersion),
         try container.decodeIfPresent(MediaType.self, forKey: .mediaType),
         try container.decodeIfPresent(String.self, forKey: .artifactType),
         try container.decodeIfPresent(Descriptor.self, forKey: .subject),
         try container.decodeIfPresent([String: String].self, forKey: .annotations))
    }

    static func encode<Key: DocumentCodingKey>(_ fields: Fields, to container: inout KeyedEncodingContainer<Key>) throws {
        try container.encode(fields.schemaVersion, forKey: .schemaVersion)
        try container.encodeIfPresent(fields.mediaType, forKey: .mediaType)
        try container.encodeIfPresent(fields.artifactType, forKey: .artifactType)
        try container.encodeIfPresent(fields.subject, forKey: .subject)
        try container.encodeIfPresent(fields.annotations, forKey: .annotations)
    }
}
