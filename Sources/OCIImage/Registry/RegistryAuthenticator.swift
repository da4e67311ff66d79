#if Registry
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// An authentication challenge from a `WWW-Authenticate` header.
struct AuthChallenge: Hashable, Sendable {
    enum Scheme: Hashable, Sendable { case basic, bearer }
    var scheme: Scheme
    var parameters: [String: String]

    var realm: String? { parameters["realm"] }
    var service: String? { parameters["service"] }
    var scope: String? { parameters["scope"] }

    /// The challenge to answer among all those of the `WWW-Authenticate`
    /// header values: Bearer if offered, else Basic.
    static func preferred(_ headers: [String]) -> AuthChallenge? {
        let all = headers.flatMap(parseAll)
        return all.first { $0.scheme == .bearer } ?? all.first { $0.scheme == .basic }
    }

    /// The first Basic or Bearer challenge of a header value.
    static func parse(_ header: String) -> AuthChallenge? {
        parseAll(header).first
    }

    /// Every Basic and Bearer challenge of one header value, such as
    /// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"`
    /// or `Negotiate, Basic realm="x"`. Other schemes are skipped.
    static func parseAll(_ header: String) -> [AuthChallenge] {
        var challenges: [AuthChallenge] = []
        var rest = Substring(header)
        var current: (name: String, parameters: [String: String])?
        func close() {
            guard let current else { return }
            switch current.name.lowercased() {
            case "basic": challenges.append(AuthChallenge(scheme: .basic, parameters: current.parameters))
            case "bearer": challenges.append(AuthChallenge(scheme: .bearer, parameters: current.parameters))
            default: break
            }
        }
        func isTokenCharacter(_ c: Character) -> Bool { !c.isWhitespace && c != "," && c != "=" && c != "\"" }
        while true {
            rest = rest.drop(while: { $0.isWhitespace || $0 == "," })
            guard !rest.isEmpty else { break }
            let token = rest.prefix(while: isTokenCharacter)
            guard !token.isEmpty else {
                rest = rest.dropFirst()
                continue
            }
            let afterToken = rest.dropFirst(token.count).drop(while: \.isWhitespace)
            guard afterToken.first == "=" else {
                // A scheme name starts a new challenge.
                close()
                current = (String(token), [:])
                rest = rest.dropFirst(token.count)
                continue
            }
            rest = afterToken.dropFirst().drop(while: \.isWhitespace)
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped {
                        value.append(character)
                        escaped = false
                    } else if character == "\\" {
                        escaped = true
                    } else if character == "\"" {
                        break
                    } else {
                        value.append(character)
                    }
                }
            } else {
                value = String(rest.prefix(while: { $0 != "," }).trimmingCharacters(in: .whitespaces))
                rest = rest.drop(while: { $0 != "," })
            }
            current?.parameters[token.lowercased()] = value
        }
        close()
        return challenges
    }
}

/// Keeps each registry's authentication scheme and the bearer tokens it
/// issued, per scope, until they expire.
///
/// Credentials are looked up by the registry that challenged and sent only
/// to that registry (Basic) or to the token service its challenge names
/// (Bearer), never over plain HTTP to a host not marked insecure.
actor RegistryAuthenticator {
    private struct TokenKey: Hashable {
        var realm: String
        var service: String
        var scopes: [String]
    }

    private struct CachedToken {
        var token: String
        var expires: ContinuousClock.Instant
    }

    private let credentials: any CredentialProvider
    private let options: RegistryOptions
    private let http: HTTPClient
    private var challenges: [String: AuthChallenge] = [:]
    private var tokens: [TokenKey: CachedToken] = [:]
    private var pending: [TokenKey: Task<CachedToken, any Error>] = [:]
    /// How many tokens were fetched from token services, for tests and metrics.
    private(set) var tokenRequests = 0

    init(credentials: any CredentialProvider, options: RegistryOptions, http: HTTPClient) {
        self.credentials = credentials
        self.options = options
        self.http = http
    }

    /// The `Authorization` value to send to `registry` for `scopes`, once the
    /// registry has said how it authenticates; `nil` before that.
    func authorization(registry: String, scopes: [String]) async throws -> String? {
        guard let challenge = challenges[registry] else { return nil }
        switch challenge.scheme {
        case .basic:
            guard case .basic(let username, let password)? = try await credentials.credential(for: registry) else { return nil }
            return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        case .bearer:
            return "Bearer " + (try await token(challenge, registry: registry, scopes: scopes, refresh: false))
        }
    }

    /// Takes in a 401 challenge and gets what answering it needs: fresh
    /// credentials or a fresh token. Throws when there is nothing to answer
    /// with. Returns the scopes to ask for from now on: the request's and
    /// any the challenge adds.
    func respond(to headers: [String], registry: String, scopes: [String]) async throws -> [String] {
        guard let challenge = AuthChallenge.preferred(headers) else {
            throw OCIImageError(.unauthorized, "registry \(registry) refused the request without saying how to authenticate")
        }
        challenges[registry] = challenge
        switch challenge.scheme {
        case .basic:
            switch try await credentials.credential(for: registry) {
            case .basic?: return scopes
            case .identityToken?:
                throw OCIImageError(.unauthorized, "registry \(registry) asks for a user name and password, but the stored credential is an identity token; log in again (gantry login \(registry))")
            case nil:
                throw OCIImageError(.unauthorized, "registry \(registry) asks for a user name and password; log in first (gantry login \(registry))")
            }
        case .bearer:
            // A challenge may name several scopes, separated by spaces.
            let extra = (challenge.scope ?? "").split(separator: " ").map(String.init).filter { !scopes.contains($0) }
            let wanted = scopes + extra
            _ = try await token(challenge, registry: registry, scopes: wanted, refresh: true)
            return wanted
        }
    }

    /// Whether a credential is stored for `registry`.
    func hasCredential(for registry: String) async -> Bool {
        (try? await credentials.credential(for: registry)) != nil
    }

    /// Forgets what the registry said about authentication, so that the
    /// next request starts anonymous.
    func reset(registry: String) {
        challenges.removeValue(forKey: registry)
    }

    private func token(_ challenge: AuthChallenge, registry: String, scopes: [String], refresh: Bool) async throws -> String {
        guard let realm = challenge.realm, !realm.isEmpty else {
            throw OCIImageError(.registryError, "registry \(registry) asks for a bearer token but names no token service")
        }
        let key = TokenKey(realm: realm, service: challenge.service ?? "", scopes: Array(Set(scopes)).sorted())
        if !refresh, let cached = tokens[key], cached.expires > .now { return cached.token }
        if let running = pending[key] { return try await running.value.token }
        let task = Task { try await self.fetchToken(key, registry: registry) }
        pending[key] = task
        defer { pending.removeValue(forKey: key) }
        let fetched = try await task.value
        tokens[key] = fetched
        return fetched.token
    }

    private struct TokenResponse: Decodable {
        var token: String?
        var accessToken: String?
        var expiresIn: Int?

        enum CodingKeys: String, CodingKey {
            case token
            case accessToken = "access_token"
            case expiresIn = "expires_in"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            token = try? container.decodeIfPresent(String.self, forKey: .token)
            accessToken = try? container.decodeIfPresent(String.self, forKey: .accessToken)
            // Some services send the lifetime as a fraction or a string.
            if let seconds = try? container.decodeIfPresent(Double.self, forKey: .expiresIn) {
                expiresIn = Int(seconds)
            } else if let text = try? container.decodeIfPresent(String.self, forKey: .expiresIn) {
                expiresIn = Double(text).map { Int($0) }
            }
        }
    }

    private func fetchToken(_ key: TokenKey, registry: String) async throws -> CachedToken {
        guard var components = URLComponents(string: key.realm), let scheme = components.scheme?.lowercased(), let host = components.host else {
            throw OCIImageError(.registryError, "registry \(registry) names an invalid token service \(key.realm)")
        }
        let realmHost = components.port.map { "\(host):\($0)" } ?? host
        let credential = try await credentials.credential(for: registry)
        if scheme != "https" && credential != nil && !options.isInsecure(realmHost) && !options.isInsecure(host) {
            throw OCIImageError(.insecureConnection, "registry \(registry) would have credentials sent over plain HTTP to \(key.realm); mark \(realmHost) insecure to allow it")
        }
        var request: HTTPClientRequest
        switch credential {
        case .identityToken(let refreshToken)?:
            // OAuth2 refresh-token grant, as Docker does after `docker login`.
            request = HTTPClientRequest(url: key.realm)
            request.method = .POST
            var form = URLComponents()
            form.queryItems = [
                URLQueryItem(name: "grant_type", value: "refresh_token"),
                URLQueryItem(name: "refresh_token", value: refreshToken),
                URLQueryItem(name: "service", value: key.service),
                URLQueryItem(name: "scope", value: key.scopes.joined(separator: " ")),
                URLQueryItem(name: "client_id", value: "gantry"),
            ]
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: form.percentEncodedQuery ?? ""))
        case .basic(let username, let password)?:
            components.queryItems = (components.queryItems ?? []) + tokenQuery(key)
            request = HTTPClientRequest(url: components.string ?? key.realm)
            request.headers.add(name: "Authorization", value: "Basic " + Data("\(username):\(password)".utf8).base64EncodedString())
        case nil:
            components.queryItems = (components.queryItems ?? []) + tokenQuery(key)
            request = HTTPClientRequest(url: components.string ?? key.realm)
        }
        request.headers.add(name: "User-Agent", value: options.userAgent)
        tokenRequests += 1
        // Token services fail now and then too: retry as the registry client does.
        var attempt = 0
        var response: HTTPClientResponse
        while true {
            try Task.checkCancellation()
            attempt += 1
            do {
                response = try await http.execute(request, timeout: .seconds(60))
                let status = response.status.code
                guard [429, 500, 502, 503, 504].contains(status), attempt < options.retry.attempts else { break }
                _ = try? await response.body.collect(upTo: 1 << 20)
            } catch let error as CancellationError {
                throw error
            } catch {
                guard attempt < options.retry.attempts else {
                    throw OCIImageError(.network, "the token service \(key.realm) of \(registry) cannot be reached: \(error)")
                }
            }
            try await Task.sleep(for: options.retry.delay(beforeRetry: attempt))
        }
        let body = try await response.body.collect(upTo: 1 << 20)
        switch response.status.code {
        case 200..<300: break
        case 401, 403:
            throw OCIImageError(.unauthorized, credential == nil
                ? "registry \(registry) needs credentials for \(key.scopes.joined(separator: " ")); log in first (gantry login \(registry))"
                : "the token service of \(registry) refused the credentials (\(response.status.code)); check them with gantry login \(registry)")
        default:
            throw OCIImageError(.registryError, "the token service \(key.realm) of \(registry) answered \(response.status.code)")
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(body.readableBytesView)),
              let token = decoded.token ?? decoded.accessToken, !token.isEmpty
        else {
            throw OCIImageError(.registryError, "the token service \(key.realm) of \(registry) sent no token")
        }
        // Tokens live at least 60 s by the specification; renew a little early.
        let lifetime = max(decoded.expiresIn ?? 60, 60)
        return CachedToken(token: token, expires: .now + .seconds(lifetime - 10))
    }

    private func tokenQuery(_ key: TokenKey) -> [URLQueryItem] {
        var items: [URLQueryItem] = []
        if !key.service.isEmpty { items.append(URLQueryItem(name: "service", value: key.service)) }
        items.append(contentsOf: key.scopes.map { URLQueryItem(name: "scope", value: $0) })
        return items
    }
}
#endif
