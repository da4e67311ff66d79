#if Registry
import AsyncHTTPClient
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// A client of the OCI Distribution API: Docker Hub, GHCR, Harbor, a
/// company registry, or the registry a test suite runs on loopback.
///
/// It authenticates as each registry asks (anonymous, Basic, or Bearer
/// tokens cached per scope), retries server errors, rate limits and broken
/// connections with exponential back-off and jitter, resumes interrupted
/// downloads with `Range`, and follows redirects to blob storage without
/// sending `Authorization` to another host. Image-level operations are on
/// ``ImageStore``: ``ImageStore/pull(_:platform:client:progress:)`` and
/// ``ImageStore/push(_:to:client:progress:)``.
public final class RegistryClient: Sendable {
    /// How the client talks to registries.
    public let options: RegistryOptions
    let http: HTTPClient
    let authenticator: RegistryAuthenticator
    let logger: Logger

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - options: Transport and retry settings.
    ///   - credentials: Where credentials come from; by default Gantry's
    ///     auth file, then Docker's.
    ///   - logger: Where requests and retries are logged (at debug level).
    public init(options: RegistryOptions = RegistryOptions(), credentials: any CredentialProvider = CredentialChain.standard,
                logger: Logger = Logger(label: "gantry.registry")) throws {
        self.options = options
        http = try SharedHTTPClients.client(certificateAuthority: options.certificateAuthority, connectTimeout: options.connectTimeout)
        authenticator = RegistryAuthenticator(credentials: credentials, options: options, http: http)
        self.logger = logger
    }

    /// How many bearer tokens the client has fetched from token services.
    public var tokenRequests: Int {
        get async { await authenticator.tokenRequests }
    }

    // MARK: Endpoints

    /// The base URL of a registry's API (`https://host/v2`); Docker Hub's
    /// API lives on `registry-1.docker.io`.
    func baseURL(_ registry: String) -> String {
        let host = registry == ImageReference.defaultRegistry ? "registry-1.docker.io" : registry
        return (options.isInsecure(registry) ? "http://" : "https://") + host + "/v2"
    }

    /// Scheme, host and effective port: credentials go only to the registry's own origin.
    struct Origin: Hashable {
        var scheme: String
        var host: String
        var port: Int

        init?(_ url: String) {
            guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
                  let host = components.host?.lowercased(), scheme == "http" || scheme == "https"
            else { return nil }
            self.scheme = scheme
            self.host = host
            port = components.port ?? (scheme == "https" ? 443 : 80)
        }
    }

    // MARK: Requests

    /// One request to a registry, re-creatable for retries.
    struct Request: Sendable {
        var registry: String
        var method: HTTPMethod = .GET
        var url: String
        var headers: HTTPHeaders = HTTPHeaders()
        /// Makes the body afresh for each attempt.
        var body: (@Sendable () throws -> HTTPClientRequest.Body)?
        /// The token scopes the request needs (`repository:NAME:pull`).
        var scopes: [String]
        /// For messages: what the request is about.
        var subject: String
        /// Whether the request may be sent again after a broken connection or a
        /// server error. Upload bodies may not: the registry may have taken
        /// part of one, and the upload is started over instead.
        var repeatable = true
    }

    /// Sends a request, authenticating, following redirects and retrying as
    /// needed. Returns the first response that is neither a challenge, a
    /// redirect nor retryable; the caller reads (or drops) its body.
    func send(_ request: Request, deadline: NIODeadline = .now() + .hours(24)) async throws -> HTTPClientResponse {
        var url = request.url
        var method = request.method
        var includeBody = true
        var attempt = 0
        var redirects = 0
        var answeredChallenge = false
        var firstConnectionFailure: ContinuousClock.Instant?
        var scopes = request.scopes
        let registryOrigin = Origin(baseURL(request.registry))
        while true {
            try Task.checkCancellation()
            // Credentials go only to the registry itself, never to another
            // origin a redirect, an upload location or a page link names.
            let onRegistryHost = registryOrigin != nil && Origin(url) == registryOrigin
            var outgoing = HTTPClientRequest(url: url)
            outgoing.method = method
            outgoing.headers = request.headers
            outgoing.headers.replaceOrAdd(name: "User-Agent", value: options.userAgent)
            if onRegistryHost, let authorization = try await authenticator.authorization(registry: request.registry, scopes: scopes) {
                outgoing.headers.replaceOrAdd(name: "Authorization", value: authorization)
            }
            if includeBody, let body = request.body { outgoing.body = try body() }

            let response: HTTPClientResponse
            do {
                response = try await http.execute(outgoing, deadline: deadline, logger: logger)
            } catch let error as CancellationError {
                throw error
            } catch let error as OCIImageError {
                // From making the body (a local file): not the network's fault.
                throw error
            } catch let error as NIOSSLError {
                // Retrying does not make a certificate trusted.
                let reason = "\(error)".contains("CERTIFICATE_VERIFY_FAILED") ? "its certificate is not trusted" : "\(error)"
                throw OCIImageError(.network, "\(request.subject): the TLS handshake with registry \(request.registry) failed: \(reason); "
                    + "trust its certificate authority (--ca-file) or, on a trusted network, mark it insecure")
            } catch {
                // Attempts and a time window both bound retries: one attempt
                // may itself spend the connect timeout reconnecting.
                attempt += 1
                let failedSince = firstConnectionFailure ?? .now
                firstConnectionFailure = failedSince
                guard request.repeatable, attempt < options.retry.attempts, ContinuousClock.now - failedSince < options.retry.connectionWindow else {
                    throw OCIImageError(.network, "\(request.subject): registry \(request.registry) cannot be reached: \(Self.describe(error))")
                }
                let delay = options.retry.delay(beforeRetry: attempt)
                logger.debug("retrying after a connection error", metadata: ["url": "\(url)", "error": "\(error)", "delay": "\(delay)"])
                try await Task.sleep(for: delay)
                continue
            }

            let status = response.status.code
            switch status {
            case 401 where onRegistryHost && !answeredChallenge:
                await Self.drain(response)
                scopes = try await authenticator.respond(to: response.headers[canonicalForm: "WWW-Authenticate"].map(String.init),
                                                         registry: request.registry, scopes: scopes)
                answeredChallenge = true
                continue
            case 301, 302, 303, 307, 308:
                await Self.drain(response)
                guard let location = response.headers.first(name: "Location"),
                      let next = URL(string: location, relativeTo: URL(string: url))?.absoluteString
                else {
                    throw OCIImageError(.registryError, "\(request.subject): registry \(request.registry) redirected without a location")
                }
                redirects += 1
                guard redirects <= 5 else {
                    throw OCIImageError(.registryError, "\(request.subject): registry \(request.registry) redirected more than 5 times")
                }
                if status == 303 || ((status == 301 || status == 302) && method == .POST) {
                    method = .GET
                    includeBody = false
                }
                url = next
                continue
            case 429, 500, 502, 503, 504:
                guard request.repeatable else { return response }
                let retryAfter = Self.retryAfter(response.headers.first(name: "Retry-After"))
                let message = await Self.errorMessage(response)
                attempt += 1
                guard attempt < options.retry.attempts else {
                    throw OCIImageError(.registryError, "\(request.subject): registry \(request.registry) answered \(status)\(message) after \(attempt) attempts")
                }
                let delay = retryAfter.map { min($0, .seconds(60)) } ?? options.retry.delay(beforeRetry: attempt)
                logger.debug("retrying after a server error", metadata: ["url": "\(url)", "status": "\(status)", "delay": "\(delay)"])
                try await Task.sleep(for: delay)
                continue
            default:
                return response
            }
        }
    }

    /// Throws a clear error unless the response has one of `expected`
    /// statuses. The body of an error response is read for its message.
    func expect(_ response: HTTPClientResponse, _ expected: Set<UInt>, _ request: Request) async throws {
        guard !expected.contains(response.status.code) else { return }
        let message = await Self.errorMessage(response)
        switch response.status.code {
        case 401, 403:
            let hint = await authenticator.hasCredential(for: request.registry) ? "" : "; log in first (gantry login \(request.registry))"
            throw OCIImageError(.unauthorized, "\(request.subject): registry \(request.registry) refused access (\(response.status.code))\(message)\(hint)")
        case 404 where message.contains("BLOB_UPLOAD"):
            throw OCIImageError(.registryError, "\(request.subject): the registry dropped the upload\(message)")
        case 404:
            throw OCIImageError(.notFound, "\(request.subject): not found in registry \(request.registry)\(message)")
        default:
            throw OCIImageError(.registryError, "\(request.subject): registry \(request.registry) answered \(response.status.code)\(message)")
        }
    }

    private struct ErrorBody: Decodable {
        struct Entry: Decodable {
            var code: String?
            var message: String?
        }
        var errors: [Entry]?
    }

    /// `: CODE message` from a registry's JSON error body, or nothing.
    static func errorMessage(_ response: HTTPClientResponse) async -> String {
        guard let body = try? await response.body.collect(upTo: 64 << 10),
              let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(body.readableBytesView)),
              let first = decoded.errors?.first
        else { return "" }
        return ": " + [first.code, first.message].compactMap { $0 }.joined(separator: " ")
    }

    static func drain(_ response: HTTPClientResponse) async {
        _ = try? await response.body.collect(upTo: 1 << 20)
    }

    /// `Retry-After` as seconds or as an HTTP date.
    static func retryAfter(_ value: String?) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Int(value) { return .seconds(max(0, seconds)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(max(0, Int(date.timeIntervalSinceNow * 1000)))
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return "\(error)"
    }
}

/// One HTTP client per set of trusted certificate authorities, shared by
/// every ``RegistryClient`` for the life of the process (like
/// `HTTPClient.shared`), so that none needs an explicit shutdown. Redirects
/// are not followed by the client: ``RegistryClient`` follows them itself
/// to keep credentials on their host.
enum SharedHTTPClients {
    private static let clients = Mutex<[String: HTTPClient]>([:])

    static func client(certificateAuthority: String?, connectTimeout: Duration) throws -> HTTPClient {
        let milliseconds = Int64(connectTimeout.components.seconds * 1000 + connectTimeout.components.attoseconds / 1_000_000_000_000_000)
        let key = "\(certificateAuthority ?? "")|\(milliseconds)"
        return try clients.withLock { clients in
            if let existing = clients[key] { return existing }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let certificateAuthority {
                do {
                    tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(certificateAuthority))]
                } catch {
                    throw OCIImageError(.invalidArgument, "the certificate authority file \(certificateAuthority) cannot be read: \(error)")
                }
            }
            let configuration = HTTPClient.Configuration(
                tlsConfiguration: tls,
                redirectConfiguration: .disallow,
                timeout: HTTPClient.Configuration.Timeout(connect: .milliseconds(milliseconds), read: .seconds(120)),
                decompression: .disabled)
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            clients[key] = client
            return client
        }
    }
}
#endif
