/// A normalised image reference such as `docker.io/library/busybox:1.36`,
/// parsed by the distribution reference grammar with Docker's defaults.
///
/// - A name without a registry host is on `docker.io`; a single-component
///   name on `docker.io` gets the `library/` prefix.
/// - The first component is a registry host when it contains `.` or `:`, is
///   `localhost`, or has upper-case letters.
/// - A reference with neither tag nor digest gets the tag `latest`.
public struct ImageReference: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The registry host, with port when there is one (`docker.io`, `127.0.0.1:5000`).
    public var registry: String
    /// The repository path within the registry (`library/busybox`).
    public var repository: String
    /// The tag, if any.
    public var tag: String?
    /// The digest, if any.
    public var digest: Digest?

    /// The registry Docker uses when a reference names none.
    public static let defaultRegistry = "docker.io"
    /// The tag a reference gets when it names neither tag nor digest.
    public static let defaultTag = "latest"
    /// The longest a name (registry and repository) may be.
    public static let maximumNameLength = 255
    /// The longest a tag may be.
    public static let maximumTagLength = 128

    /// Parses and normalises a reference.
    ///
    /// - Throws: ``OCIImageError/Code/invalidReference`` naming the part that is wrong.
    public init(parsing string: String) throws {
        func fail(_ why: String) -> OCIImageError {
            OCIImageError(.invalidReference, "invalid image reference \"\(string)\": \(why)")
        }
        guard !string.isEmpty else { throw fail("it is empty") }
        guard string.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw fail("it may contain only printable ASCII characters without spaces")
        }
        var rest = Substring(string)

        // The digest follows the first '@'.
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            let digestText = String(rest[rest.index(after: at)...])
            do {
                digest = try Digest(parsing: digestText)
            } catch let error as OCIImageError {
                throw fail("the digest is wrong: \(error.message)")
            }
            rest = rest[..<at]
        }

        // The tag follows the last ':' after the last '/'.
        var tag: String?
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let tagText = String(rest[rest.index(after: colon)...])
            try ImageReference.validateTag(tagText, fail: fail)
            tag = tagText
            rest = rest[..<colon]
        }

        guard !rest.isEmpty else { throw fail("the repository name is missing") }
        if rest.utf8.count == 64, rest.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) {
            throw fail("a 64-character hexadecimal string is an image ID, not a repository name")
        }

        // Split off the registry host.
        var registry = ImageReference.defaultRegistry
        var path = rest
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" || first.lowercased() != first {
                registry = String(first)
                path = rest[rest.index(after: slash)...]
                try ImageReference.validateRegistry(registry, fail: fail)
            }
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = ImageReference.defaultRegistry }
        if path.lowercased() != path {
            throw fail("the repository name \"\(path)\" must be lowercase")
        }
        var repository = String(path)
        if registry == ImageReference.defaultRegistry && !repository.contains("/") {
            repository = "library/" + repository
        }
        try ImageReference.validateRepository(repository, fail: fail)

        let nameLength = registry.utf8.count + 1 + repository.utf8.count
        guard nameLength <= ImageReference.maximumNameLength else {
            throw fail("the name is \(nameLength) characters long; at most \(ImageReference.maximumNameLength) are allowed")
        }
        if tag == nil && digest == nil { tag = ImageReference.defaultTag }
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Creates a reference from validated parts.
    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) throws {
        var text = registry + "/" + repository
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest.description }
        self = try ImageReference(parsing: text)
    }

    /// `registry/repository`.
    public var name: String { registry + "/" + repository }

    /// The full normalised form: `registry/repository[:tag][@digest]`.
    public var description: String {
        var text = name
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest.description }
        return text
    }

    /// The short form Docker shows: without `docker.io/` and `library/`.
    public var familiarName: String {
        guard registry == ImageReference.defaultRegistry else { return name }
        if repository.hasPrefix("library/") && repository.split(separator: "/").count == 2 {
            return String(repository.dropFirst("library/".count))
        }
        return repository
    }

    /// The familiar name with its tag and digest.
    public var familiarDescription: String {
        var text = familiarName
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest.description }
        return text
    }

    /// The same reference with another tag (and no digest).
    public func withTag(_ tag: String) throws -> ImageReference {
        try ImageReference(registry: registry, repository: repository, tag: tag)
    }

    public init(from decoder: any Decoder) throws {
        self = try ImageReference(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    // MARK: Grammar

    private static func isLowerAlphanumeric(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) }
    private static func isAlphanumeric(_ c: UInt8) -> Bool { isLowerAlphanumeric(c) || (c >= 0x41 && c <= 0x5a) }

    /// `[\w][\w.-]{0,127}`
    static func validateTag(_ tag: String, fail: (String) -> OCIImageError) throws {
        let bytes = Array(tag.utf8)
        guard !bytes.isEmpty else { throw fail("the tag after ':' is empty") }
        guard bytes.count <= maximumTagLength else {
            throw fail("the tag is \(bytes.count) characters long; at most \(maximumTagLength) are allowed")
        }
        func isWord(_ c: UInt8) -> Bool { isAlphanumeric(c) || c == 0x5f }
        guard isWord(bytes[0]) else { throw fail("the tag \"\(tag)\" must start with a letter, digit or '_'") }
        guard bytes.allSatisfy({ isWord($0) || $0 == 0x2e || $0 == 0x2d }) else {
            throw fail("the tag \"\(tag)\" may contain only letters, digits, '_', '.' and '-'")
        }
    }

    /// `host[:port]` where host is a domain name, an IPv4 address or `[IPv6]`.
    static func validateRegistry(_ registry: String, fail: (String) -> OCIImageError) throws {
        var host = Substring(registry)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw fail("the registry \"\(registry)\" has an unclosed IPv6 address") }
            let address = host[host.index(after: host.startIndex)..<close]
            let isHexOrColon: (UInt8) -> Bool = { ($0 >= 0x30 && $0 <= 0x3a) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }
            guard !address.isEmpty, address.utf8.allSatisfy(isHexOrColon) else {
                throw fail("the registry \"\(registry)\" has a malformed IPv6 address")
            }
            host = host[host.index(after: close)...]
            if !host.isEmpty {
                guard host.first == ":" else { throw fail("the registry \"\(registry)\" has text after its IPv6 address") }
                try validatePort(host.dropFirst(), registry: registry, fail: fail)
            }
            return
        }
        if let colon = host.firstIndex(of: ":") {
            try validatePort(host[host.index(after: colon)...], registry: registry, fail: fail)
            host = host[..<colon]
        }
        for component in host.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(component.utf8)
            guard !bytes.isEmpty else { throw fail("the registry host \"\(host)\" has an empty label") }
            guard let first = bytes.first, let last = bytes.last, isAlphanumeric(first), isAlphanumeric(last),
                  bytes.allSatisfy({ isAlphanumeric($0) || $0 == 0x2d })
            else {
                throw fail("the registry host \"\(host)\" has an invalid label \"\(component)\" (letters, digits and inner '-' only)")
            }
        }
    }

    private static func validatePort(_ port: Substring, registry: String, fail: (String) -> OCIImageError) throws {
        guard !port.isEmpty, port.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let number = Int(port), number <= 65535 else {
            throw fail("the registry \"\(registry)\" has an invalid port \"\(port)\"")
        }
    }

    /// Components of `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` separated by '/'.
    static func validateRepository(_ repository: String, fail: (String) -> OCIImageError) throws {
        for component in repository.split(separator: "/", omittingEmptySubsequences: false) {
            guard !component.isEmpty else { throw fail("the repository name \"\(repository)\" has an empty path component") }
            let bytes = Array(component.utf8)
            var index = 0
            var valid = isLowerAlphanumeric(bytes[0])
            while valid && index < bytes.count {
                // A run of alphanumerics…
                while index < bytes.count && isLowerAlphanumeric(bytes[index]) { index += 1 }
                if index == bytes.count { break }
                // …then one separator: '.', '_', '__' or one or more '-'.
                let start = index
                switch bytes[index] {
                case 0x2e: index += 1
                case 0x5f: index += (index + 1 < bytes.count && bytes[index + 1] == 0x5f) ? 2 : 1
                case 0x2d: while index < bytes.count && bytes[index] == 0x2d { index += 1 }
                default: valid = false
                }
                if valid && (index == start || index == bytes.count || !isLowerAlphanumeric(bytes[index])) { valid = false }
            }
            guard valid else {
                throw fail("the path component \"\(component)\" must be lowercase letters and digits joined by '.', '_', '__' or '-'")
            }
        }
    }
}
