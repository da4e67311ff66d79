import GantryCore
import SystemPackage

/// An error raised by the OCIImage module.
///
/// Every error carries a ``Code`` that callers can switch over, a message that
/// names the thing that is wrong (an image, a digest, a path), and the
/// underlying system error where there is one. New codes may be added in
/// later versions without breaking existing code.
public struct OCIImageError: GantryError, Sendable {
    /// What went wrong, as a value that can grow without breaking the API.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case invalidDigest, invalidReference, invalidPlatform, invalidMediaType
            case unsupportedSchemaVersion, invalidManifest, invalidConfiguration
            case platformNotFound, blobNotFound, digestMismatch, sizeMismatch
            case invalidLayout, imageNotFound, tagNotFound, ambiguousImage
            case unsafeLayerEntries, corruptLayer, invalidArgument, systemCall
            case cancelled, unauthorized, notFound, registryError, network, insecureConnection, layerTooLarge, damagedState
            case unmappedOwner
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// A digest string is malformed or uses an unsupported algorithm.
        public static let invalidDigest = Code(.invalidDigest)
        /// An image reference does not follow the distribution reference grammar.
        public static let invalidReference = Code(.invalidReference)
        /// A platform string (`os/arch[/variant]`) is malformed.
        public static let invalidPlatform = Code(.invalidPlatform)
        /// A media type is unknown or not allowed where it appears.
        public static let invalidMediaType = Code(.invalidMediaType)
        /// The document uses a schema Gantry refuses, such as Docker schema 1.
        public static let unsupportedSchemaVersion = Code(.unsupportedSchemaVersion)
        /// A manifest or index cannot be decoded or breaks the specification.
        public static let invalidManifest = Code(.invalidManifest)
        /// An image configuration cannot be decoded or breaks the specification.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// No manifest in an index matches the requested platform.
        public static let platformNotFound = Code(.platformNotFound)
        /// A blob is not in the content store or layout.
        public static let blobNotFound = Code(.blobNotFound)
        /// Content does not hash to the digest it was promised to have.
        public static let digestMismatch = Code(.digestMismatch)
        /// Content does not have the size it was promised to have.
        public static let sizeMismatch = Code(.sizeMismatch)
        /// A directory is not a valid OCI image layout.
        public static let invalidLayout = Code(.invalidLayout)
        /// No image with the given name exists in the store.
        public static let imageNotFound = Code(.imageNotFound)
        /// No manifest in a layout carries the requested tag.
        public static let tagNotFound = Code(.tagNotFound)
        /// A name or digest prefix matches more than one image.
        public static let ambiguousImage = Code(.ambiguousImage)
        /// A layer holds entries that would escape the target or that may not
        /// be created; ``OCIImageError/refusedEntries`` lists every one.
        public static let unsafeLayerEntries = Code(.unsafeLayerEntries)
        /// A layer archive is truncated or malformed.
        public static let corruptLayer = Code(.corruptLayer)
        /// A layer expands to more than ``LayerExpansionLimit`` allows (a
        /// decompression bomb, or a limit set too low for the image).
        public static let layerTooLarge = Code(.layerTooLarge)
        /// The store's own state (its database) is damaged; nothing was
        /// changed or deleted because of it.
        public static let damagedState = Code(.damagedState)
        /// A layer has a file whose owner the user namespace of a process
        /// that is not root does not map (it has too few subordinate IDs).
        public static let unmappedOwner = Code(.unmappedOwner)
        /// An argument is out of range or malformed.
        public static let invalidArgument = Code(.invalidArgument)
        /// A system call failed; ``OCIImageError/underlying`` holds the failure.
        public static let systemCall = Code(.systemCall)
        /// The operation was cancelled.
        public static let cancelled = Code(.cancelled)
        /// A registry refused the credentials, or asked for some and none were given.
        public static let unauthorized = Code(.unauthorized)
        /// A registry has no such repository, tag, manifest or blob.
        public static let notFound = Code(.notFound)
        /// A registry answered with an error or with something that breaks the protocol.
        public static let registryError = Code(.registryError)
        /// A registry could not be reached, even after retries.
        public static let network = Code(.network)
        /// Credentials would have gone over plain HTTP to a registry not marked insecure.
        public static let insecureConnection = Code(.insecureConnection)

        public var description: String { "\(storage)" }
    }

    /// A layer entry that was refused, and why.
    public struct RefusedEntry: Hashable, Sendable, CustomStringConvertible {
        /// The entry's path as written in the layer archive.
        public var path: String
        /// Why the entry was refused.
        public var reason: String

        /// Creates a refused-entry record.
        public init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }

        public var description: String { "\(path) (\(reason))" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The error behind this one: the errno of a failed system call, a
    /// `SystemCallError`, or a lower layer's error; `nil` when there is none.
    public var underlying: (any Error)?
    /// For ``Code/unsafeLayerEntries``: every entry that was refused.
    public var refusedEntries: [RefusedEntry]

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil, refusedEntries: [RefusedEntry] = []) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.refusedEntries = refusedEntries
    }

    public var description: String {
        var text = message
        if let underlying { text += ": \(underlying)" }
        return text
    }

}
