import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What proves who the caller is to a registry.
public enum RegistryCredential: Hashable, Sendable {
    /// A user name and password (or personal access token).
    case basic(username: String, password: String)
    /// An identity token (an OAuth2 refresh token) from an earlier login.
    case identityToken(String)
}

/// Supplies credentials for registries, by host (`ghcr.io`, `127.0.0.1:5000`).
///
/// A credential is only ever sent to the registry it belongs to, or to the
/// token service that registry names in its challenge.
public protocol CredentialProvider: Sendable {
    /// The credential for `registry`, or `nil` to go anonymous.
    func credential(for registry: String) async throws -> RegistryCredential?
}

/// Credentials held in memory, by registry host.
public struct StaticCredentials: CredentialProvider {
    /// The credentials, by registry host.
    public var credentials: [String: RegistryCredential]

    /// Creates a provider. Keys may be spelled as users write registries
    /// (`docker.io`, `https://ghcr.io`); they are normalised.
    public init(_ credentials: [String: RegistryCredential] = [:]) {
        self.credentials = Dictionary(credentials.map { (AuthFile.key(for: $0.key), $0.value) }) { first, _ in first }
    }

    public func credential(for registry: String) async throws -> RegistryCredential? {
        credentials[AuthFile.key(for: registry)]
    }
}

/// A Docker-style `config.json` (`auths` with base64 `auth` and
/// `identitytoken`), as written by `docker login`, `podman login` and
/// `gantry login`. Entries for other hosts and unknown fields are kept when
/// Gantry writes the file; the file is written atomically with mode 0600.
public struct AuthFile: CredentialProvider {
    /// The file's path.
    public let path: String

    /// The file Gantry uses: `$GANTRY_AUTH_FILE`, else
    /// `$XDG_CONFIG_HOME/gantry/auth.json` (`~/.config/gantry/auth.json`).
    public static var `default`: AuthFile {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["GANTRY_AUTH_FILE"], !path.isEmpty { return AuthFile(path: path) }
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? (NSHomeDirectory() + "/.config")
        return AuthFile(path: base + "/gantry/auth.json")
    }

    /// Docker's own file, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    public static var docker: AuthFile {
        let directory = ProcessInfo.processInfo.environment["DOCKER_CONFIG"] ?? (NSHomeDirectory() + "/.docker")
        return AuthFile(path: directory + "/config.json")
    }

    /// A file at `path` (which need not exist).
    public init(path: String) {
        self.path = absolutePath(path)
    }

    /// The key entries use for a registry: Docker Hub's historic URL for
    /// `docker.io`, the host (with port) otherwise.
    public static func key(for registry: String) -> String {
        var host = registry
        for scheme in ["https://", "http://"] where host.hasPrefix(scheme) { host.removeFirst(scheme.count) }
        if let slash = host.firstIndex(of: "/") { host = String(host[..<slash]) }
        if ["docker.io", "index.docker.io", "registry-1.docker.io"].contains(host) { return "https://index.docker.io/v1/" }
        return host
    }

    private func load() throws -> [String: JSONValue] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        do {
            guard case .object(let object) = try JSONDecoder().decode(JSONValue.self, from: data) else {
                throw OCIImageError(.invalidArgument, "\(path) is not a JSON object")
            }
            return object
        } catch let error as OCIImageError {
            throw error
        } catch {
            throw OCIImageError(.invalidArgument, "\(path) is not valid JSON: \(describe(error))")
        }
    }

    private func entries() throws -> [String: [String: JSONValue]] {
        guard case .object(let auths)? = try load()["auths"] else { return [:] }
        var result: [String: [String: JSONValue]] = [:]
        for (key, value) in auths {
            if case .object(let entry) = value { result[Self.key(for: key)] = entry }
        }
        return result
    }

    public func credential(for registry: String) async throws -> RegistryCredential? {
        guard let entry = try entries()[Self.key(for: registry)] else { return nil }
        if case .string(let token)? = entry["identitytoken"], !token.isEmpty {
            return .identityToken(token)
        }
        guard case .string(let encoded)? = entry["auth"], !encoded.isEmpty else { return nil }
        guard let decoded = Data(base64Encoded: encoded).map({ String(decoding: $0, as: UTF8.self) }),
              let colon = decoded.firstIndex(of: ":")
        else {
            throw OCIImageError(.invalidArgument, "the credentials for \(registry) in \(path) are not base64 of user:password")
        }
        return .basic(username: String(decoded[..<colon]), password: String(decoded[decoded.index(after: colon)...]))
    }

    /// Stores (or, with `nil`, removes) the credential for `registry`.
    ///
    /// - Returns: Whether there was an entry before.
    @discardableResult
    public func store(_ credential: RegistryCredential?, for registry: String) throws -> Bool {
        var object = try load()
        var auths: [String: JSONValue] = [:]
        if case .object(let existing)? = object["auths"] { auths = existing }
        let key = Self.key(for: registry)
        // Drop spellings of the same registry ("https://host", "host").
        let spellings = auths.keys.filter { Self.key(for: $0) == key }
        let existed = !spellings.isEmpty
        for spelling in spellings { auths.removeValue(forKey: spelling) }
        switch credential {
        case .basic(let username, let password)?:
            auths[key] = .object(["auth": .string(Data("\(username):\(password)".utf8).base64EncodedString())])
        case .identityToken(let token)?:
            auths[key] = .object(["auth": .string(""), "identitytoken": .string(token)])
        case nil:
            break
        }
        object["auths"] = .object(auths)
        try Sys.makeDirectories(Sys.parentDirectory(of: path), mode: 0o700)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try Sys.writeFileAtomically(path, try encoder.encode(JSONValue.object(object)), mode: 0o600)
        return existed
    }
}

/// Tries providers in order; the first credential found wins.
public struct CredentialChain: CredentialProvider {
    /// The providers, in order.
    public var providers: [any CredentialProvider]

    /// Creates a chain.
    public init(_ providers: [any CredentialProvider]) {
        self.providers = providers
    }

    /// Gantry's auth file, then Docker's.
    public static var standard: CredentialChain { CredentialChain([AuthFile.default, AuthFile.docker]) }

    public func credential(for registry: String) async throws -> RegistryCredential? {
        for provider in providers {
            if let credential = try await provider.credential(for: registry) { return credential }
        }
        return nil
    }
}
