#if Registry
import AsyncHTTPClient
import NIOCore
import NIOSSL

extension WaitStrategy {
    /// Ready once `GET path` over TLS on the container's exposed `port`
    /// (through its mapped host port) answers with a status `status`
    /// accepts and a body `body` accepts. The server's certificate is not
    /// checked: a test server presents one of its own making.
    ///
    /// - Parameters:
    ///   - path: The request's path.
    ///   - port: The container's port, which it must expose.
    ///   - status: Which statuses count (by default 200).
    ///   - body: Which bodies count (by default any).
    public static func https(_ path: String = "/", port: UInt16, status: @escaping @Sendable (Int) -> Bool = { $0 == 200 },
                             body: (@Sendable (String) -> Bool)? = nil) -> WaitStrategy {
        WaitStrategy(description: "GET \(path) over TLS on port \(port)", awaitsExit: false) { context in
            let mapped = try context.running.mappedPort(port)
            let url = "https://127.0.0.1:\(mapped)" + (path.hasPrefix("/") ? path : "/" + path)
            try await context.poll(.milliseconds(50)) {
                let text: String
                let code: Int
                do {
                    let response = try await TestHTTPSClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(2))
                    code = Int(response.status.code)
                    text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                } catch {
                    return .notYet("GET \(url): \(error)")
                }
                guard status(code) else { return .notYet("it answered HTTP \(code)") }
                if let body, !body(text) { return .notYet("its body did not match: \(text.prefix(200).trimmingCharacters(in: .whitespacesAndNewlines))") }
                return .satisfied
            }
        }
    }
}

/// The HTTPS client of the waits, for the life of the process (so that it
/// needs no shutdown), trusting whatever certificate a test server shows.
enum TestHTTPSClient {
    static let shared: HTTPClient = {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        let configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                     timeout: HTTPClient.Configuration.Timeout(connect: .seconds(2), read: .seconds(5)))
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()
}
#endif
