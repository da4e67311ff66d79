import Crypto

/// A content digest in the OCI form `algorithm:encoded`, such as
/// `sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae`.
///
/// Only `sha256` and `sha512` are accepted, and the encoded part must be
/// lowercase hexadecimal of the algorithm's exact length.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible, Codable {
    /// A hash algorithm registered by the OCI image specification.
    public enum Algorithm: String, Hashable, Sendable, CaseIterable {
        /// SHA-256, the default everywhere.
        case sha256
        /// SHA-512.
        case sha512

        /// The number of hexadecimal characters of an encoded digest.
        public var encodedLength: Int {
            switch self {
            case .sha256: 64
            case .sha512: 128
            }
        }
    }

    /// The hash algorithm.
    public let algorithm: Algorithm
    /// The lowercase hexadecimal hash value.
    public let encoded: String

    /// Parses and validates a digest string.
    ///
    /// - Throws: ``OCIImageError`` with code ``OCIImageError/Code/invalidDigest``
    ///   that says which part is wrong.
    public init(parsing string: String) throws {
        guard let colon = string.firstIndex(of: ":") else {
            throw OCIImageError(.invalidDigest, "invalid digest \"\(string)\": expected algorithm:hex")
        }
        let name = String(string[..<colon])
        let encoded = String(string[string.index(after: colon)...])
        guard let algorithm = Algorithm(rawValue: name) else {
            throw OCIImageError(.invalidDigest, "invalid digest \"\(string)\": unsupported algorithm \"\(name)\" (sha256 and sha512 are supported)")
        }
        try self.init(algorithm: algorithm, encoded: encoded)
    }

    /// Creates a digest from an algorithm and its hexadecimal value.
    public init(algorithm: Algorithm, encoded: String) throws {
        guard encoded.utf8.count == algorithm.encodedLength else {
            throw OCIImageError(.invalidDigest, "invalid digest \"\(algorithm):\(encoded)\": a \(algorithm) value has \(algorithm.encodedLength) hex characters, not \(encoded.utf8.count)")
        }
        guard encoded.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw OCIImageError(.invalidDigest, "invalid digest \"\(algorithm):\(encoded)\": the value must be lowercase hexadecimal")
        }
        self.algorithm = algorithm
        self.encoded = encoded
    }

    public init?(_ description: String) {
        guard let digest = try? Digest(parsing: description) else { return nil }
        self = digest
    }

    /// The digest of a byte sequence.
    public static func compute(_ bytes: some Sequence<UInt8>, algorithm: Algorithm = .sha256) -> Digest {
        var hasher = DigestHasher(algorithm: algorithm)
        let array = Array(bytes)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finalize()
    }

    /// `algorithm:encoded`.
    public var description: String { "\(algorithm.rawValue):\(encoded)" }

    /// The first 12 hexadecimal characters, as container tools show image IDs.
    public var shortForm: String { String(encoded.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        try self.init(parsing: try container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Computes a ``Digest`` over data that arrives in pieces.
public struct DigestHasher: Sendable {
    private enum State: Sendable {
        case sha256(SHA256)
        case sha512(SHA512)
    }

    private var state: State
    /// The algorithm in use.
    public let algorithm: Digest.Algorithm
    /// The number of bytes hashed so far.
    public private(set) var count: Int64 = 0

    /// Starts a hash.
    public init(algorithm: Digest.Algorithm = .sha256) {
        self.algorithm = algorithm
        switch algorithm {
        case .sha256: state = .sha256(SHA256())
        case .sha512: state = .sha512(SHA512())
        }
    }

    /// Adds bytes to the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        count += Int64(bytes.count)
        switch state {
        case .sha256(var hash):
            hash.update(bufferPointer: bytes)
            state = .sha256(hash)
        case .sha512(var hash):
            hash.update(bufferPointer: bytes)
            state = .sha512(hash)
        }
    }

    /// The digest of everything added so far.
    public func finalize() -> Digest {
        let bytes: [UInt8]
        switch state {
        case .sha256(let hash): bytes = Array(hash.finalize())
        case .sha512(let hash): bytes = Array(hash.finalize())
        }
        // The encoding is valid by construction, so this cannot fail.
        return Digest(unchecked: algorithm, encoded: hexString(bytes))
    }
}

extension Digest {
    init(unchecked algorithm: Algorithm, encoded: String) {
        self.algorithm = algorithm
        self.encoded = encoded
    }
}
