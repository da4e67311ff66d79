import Crypto
import Foundation
import GantryTestSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
@testable import OCIImage

/// A token service for the Distribution registry's token authentication:
/// it checks Basic credentials and issues ES256-signed JWTs whose `x5c`
/// header carries a self-signed certificate that the registry trusts
/// (`rootcertbundle`). The registry verifies every token for real.
final class TokenServer: Sendable {
    static let service = "gantry-test-registry"
    static let issuer = "gantry-test-issuer"

    let certificatePath: String
    private let server: TestHTTPServer
    private let log = TokenLog()

    var port: Int { server.port }

    /// The number of tokens requested so far, and their scopes.
    var requests: Int { log.state.withLock { $0.requests } }
    var scopesRequested: [String] { log.state.withLock { $0.scopesRequested } }

    /// - Parameters:
    ///   - failures: How many requests to answer with 503 before working.
    init(directory: String, users: [String: String], failures: Int = 0) async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let keyPath = directory + "/token-key.pem"
        certificatePath = directory + "/token-cert.pem"
        try await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyPath])
        try await run("openssl", ["req", "-x509", "-new", "-key", keyPath, "-subj", "/CN=gantry-test-token-issuer", "-days", "2", "-out", certificatePath])
        let key = try P256.Signing.PrivateKey(pemRepresentation: try readText(keyPath))
        let certificate = try readText(certificatePath).split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let issuer = TokenIssuer(key: key, certificate: certificate, users: users, log: log, failures: failures)
        server = try await TestHTTPServer { request in
            let (status, body) = issuer.respond(uri: request.uri, authorization: request.headers.first(name: "Authorization"))
            return (status, ["Content-Type": "application/json"], Data(body.utf8))
        }
    }

    func shutdown() async throws {
        try await server.shutdown()
    }
}

/// What the token server was asked.
final class TokenLog: Sendable {
    struct State {
        var requests = 0
        var scopesRequested: [String] = []
    }

    let state = Mutex(State())
}

/// Makes the tokens.
struct TokenIssuer: Sendable {
    let key: P256.Signing.PrivateKey
    let certificate: String
    let users: [String: String]
    let log: TokenLog
    let failures: Int

    /// The response to a token request: status and body.
    func respond(uri: String, authorization: String?) -> (HTTPResponseStatus, String) {
        let components = URLComponents(string: uri)
        let items = components?.queryItems ?? []
        let scopes = items.filter { $0.name == "scope" }.compactMap(\.value)
        let count = log.state.withLock {
            $0.requests += 1
            $0.scopesRequested.append(contentsOf: scopes)
            return $0.requests
        }
        if count <= failures { return (.serviceUnavailable, "{}") }
        var subject = ""
        if let authorization, authorization.hasPrefix("Basic "),
           let decoded = Data(base64Encoded: String(authorization.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
           let colon = decoded.firstIndex(of: ":") {
            let user = String(decoded[..<colon])
            guard users[user] == String(decoded[decoded.index(after: colon)...]) else {
                return (.unauthorized, #"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#)
            }
            subject = user
        }
        // Known users get what they ask for; anonymous callers get nothing.
        let access: [[String: Any]] = subject.isEmpty ? [] : scopes.compactMap { scope in
            let parts = scope.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 3 else { return nil }
            return ["type": String(parts[0]), "name": parts[1..<(parts.count - 1)].joined(separator: ":"),
                    "actions": parts[parts.count - 1].split(separator: ",").map(String.init)]
        }
        let now = Int(Date().timeIntervalSince1970)
        let header: [String: Any] = ["typ": "JWT", "alg": "ES256", "x5c": [certificate]]
        let claims: [String: Any] = [
            "iss": TokenServer.issuer, "sub": subject, "aud": TokenServer.service, "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": UUID().uuidString, "access": access,
        ]
        func encode(_ object: [String: Any]) -> String {
            base64URL((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
        }
        let signingInput = encode(header) + "." + encode(claims)
        guard let signature = try? key.signature(for: Data(signingInput.utf8)) else { return (.internalServerError, "{}") }
        let token = signingInput + "." + base64URL(signature.rawRepresentation)
        return (.ok, #"{"token":"\#(token)","access_token":"\#(token)","expires_in":300}"#)
    }

    private func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// A small HTTP/1.1 server on loopback whose answers come from a closure.
final class TestHTTPServer: Sendable {
    typealias Responder = @Sendable (HTTPRequestHead) -> (HTTPResponseStatus, [String: String], Data)

    let port: Int
    private let channel: any Channel

    init(host: String = "127.0.0.1", respond: @escaping Responder) async throws {
        channel = try await ServerBootstrap(group: NIOSingletons.posixEventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ResponderHandler(respond: respond))
                }
            }
            .bind(host: host, port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    func shutdown() async throws {
        try await channel.close()
    }
}

private final class ResponderHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let respond: TestHTTPServer.Responder
    private var head: HTTPRequestHead?

    init(respond: @escaping TestHTTPServer.Responder) { self.respond = respond }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request): head = request
        case .body: break
        case .end:
            guard let head else { return }
            let (status, fields, body) = respond(head)
            var headers = HTTPHeaders(fields.map { ($0.key, $0.value) })
            headers.add(name: "Content-Length", value: "\(body.count)")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            self.head = nil
        }
    }
}
