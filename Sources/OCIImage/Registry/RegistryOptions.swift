#if canImport(Glibc)
import Glibc
#endif

/// How a ``RegistryClient`` talks to registries.
public struct RegistryOptions: Sendable {
    /// Registries (`host` or `host:port`) reached over plain HTTP. Credentials
    /// are sent to them over HTTP too, so list only registries you trust on
    /// a network you trust.
    public var insecureRegistries: Set<String>
    /// Whether registries on loopback (`localhost`, `127.0.0.0/8`, `[::1]`)
    /// are reached over plain HTTP, as Docker does by default.
    public var loopbackIsInsecure: Bool
    /// A PEM file of certificate authorities to trust in addition to the
    /// system's (a company registry's own CA).
    public var certificateAuthority: String?
    /// How many blobs are transferred at once.
    public var maximumConcurrentTransfers: Int
    /// How failed requests are retried.
    public var retry: RetryPolicy
    /// Upload blobs in chunks of this many bytes (POST, PATCH…, PUT);
    /// `nil` uploads each blob in one PUT.
    public var uploadChunkSize: Int?
    /// The `User-Agent` header.
    public var userAgent: String
    /// How long one attempt keeps trying to connect (the HTTP client retries
    /// refused connections within it).
    public var connectTimeout: Duration

    /// Creates options.
    public init(
        insecureRegistries: Set<String> = [], loopbackIsInsecure: Bool = true, certificateAuthority: String? = nil,
        maximumConcurrentTransfers: Int = 4, retry: RetryPolicy = RetryPolicy(), uploadChunkSize: Int? = nil,
        userAgent: String = "gantry/0.1", connectTimeout: Duration = .seconds(5)
    ) {
        self.connectTimeout = connectTimeout
        self.insecureRegistries = insecureRegistries
        self.loopbackIsInsecure = loopbackIsInsecure
        self.certificateAuthority = certificateAuthority
        self.maximumConcurrentTransfers = max(1, maximumConcurrentTransfers)
        self.retry = retry
        self.uploadChunkSize = uploadChunkSize
        self.userAgent = userAgent
    }

    /// Whether `registry` is reached over plain HTTP.
    public func isInsecure(_ registry: String) -> Bool {
        if insecureRegistries.contains(registry) { return true }
        let host = Self.host(of: registry)
        if insecureRegistries.contains(host) { return true }
        return loopbackIsInsecure && Self.isLoopback(host)
    }

    /// The host of `host[:port]`, without brackets for IPv6.
    static func host(of registry: String) -> String {
        if registry.hasPrefix("["), let close = registry.firstIndex(of: "]") {
            return String(registry[registry.index(after: registry.startIndex)..<close])
        }
        return registry.split(separator: ":", maxSplits: 1).first.map(String.init) ?? registry
    }

    /// `localhost`, an IPv4 address in 127.0.0.0/8, or `::1` — as addresses,
    /// not names that merely start like one (`127.example.com`).
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { $0.dropLast().allSatisfy { $0 == 0 } && $0.last == 1 }
        }
        return false
    }
}

/// Retries with exponential back-off and full jitter: attempt *n* waits a
/// random time up to `initialDelay × 2ⁿ`, capped at `maximumDelay`. A
/// `Retry-After` from the registry is honoured instead when it is given.
public struct RetryPolicy: Hashable, Sendable {
    /// How many times a request is tried in all.
    public var attempts: Int
    /// The back-off before the first retry.
    public var initialDelay: Duration
    /// The longest back-off.
    public var maximumDelay: Duration
    /// How long a registry that cannot be connected to is retried, in all.
    public var connectionWindow: Duration

    /// Creates a policy; the defaults ride out a registry restart of a few seconds.
    public init(attempts: Int = 8, initialDelay: Duration = .milliseconds(200), maximumDelay: Duration = .seconds(10),
                connectionWindow: Duration = .seconds(20)) {
        self.attempts = max(1, attempts)
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
        self.connectionWindow = connectionWindow
    }

    /// The back-off before retry number `retry` (from 1).
    func delay(beforeRetry retry: Int) -> Duration {
        let exponential = initialDelay * (1 << min(retry - 1, 20))
        let cap = min(exponential, maximumDelay)
        let milliseconds = Int(cap.components.seconds * 1000) + Int(cap.components.attoseconds / 1_000_000_000_000_000)
        // Full jitter, but never less than a tenth of the cap so that
        // retries of a restarting registry stay spread over time.
        return .milliseconds(Int.random(in: max(1, milliseconds / 10)...max(1, milliseconds)))
    }
}
