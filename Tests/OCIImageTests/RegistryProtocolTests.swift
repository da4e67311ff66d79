import Foundation
import Testing
@testable import OCIImage

@Suite struct RegistryProtocolTests {
    @Test func parsesChallenges() throws {
        let bearer = try #require(AuthChallenge.parse(#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#))
        #expect(bearer.scheme == .bearer)
        #expect(bearer.realm == "https://auth.example.com/token")
        #expect(bearer.service == "registry.example.com")
        #expect(bearer.scope == "repository:a/b:pull,push")
        let basic = try #require(AuthChallenge.parse(#"Basic realm="with \"quotes\", and commas""#))
        #expect(basic.scheme == .basic && basic.realm == #"with "quotes", and commas"#)
        #expect(AuthChallenge.parse("Negotiate abc") == nil)
        #expect(AuthChallenge.parse("bearer realm=unquoted, service = svc")?.service == "svc")
    }

    @Test func readsRetryAfterAndLinks() {
        #expect(RegistryClient.retryAfter("3") == .seconds(3))
        #expect(RegistryClient.retryAfter("soon") == nil)
        let future = Date().addingTimeInterval(30)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let delay = RegistryClient.retryAfter(formatter.string(from: future))
        #expect(delay.map { $0 > .seconds(25) && $0 <= .seconds(30) } == true)
        #expect(RegistryClient.nextLink(#"</v2/a/tags/list?last=b&n=2>; rel="next""#) == "/v2/a/tags/list?last=b&n=2")
        #expect(RegistryClient.nextLink(#"<https://x/y>; rel="prev""#) == nil)
        #expect(RegistryClient.contentRange("bytes 100-199/200", startsAt: 100))
        #expect(!RegistryClient.contentRange("bytes 0-199/200", startsAt: 100))
    }

    @Test func backOffGrowsAndStaysCapped() {
        let policy = RetryPolicy(attempts: 10, initialDelay: .milliseconds(100), maximumDelay: .seconds(2))
        for retry in 1...10 {
            let delay = policy.delay(beforeRetry: retry)
            let cap = min(Duration.milliseconds(100) * (1 << (retry - 1)), .seconds(2))
            #expect(delay <= cap && delay >= cap / 10)
        }
    }

    @Test func decidesWhatIsInsecure() {
        let options = RegistryOptions(insecureRegistries: ["registry.lan:5000"])
        #expect(options.isInsecure("127.0.0.1:5000") && options.isInsecure("localhost") && options.isInsecure("[::1]:5000"))
        #expect(options.isInsecure("registry.lan:5000") && !options.isInsecure("registry.lan"))
        #expect(!options.isInsecure("ghcr.io"))
        #expect(!RegistryOptions(loopbackIsInsecure: false).isInsecure("127.0.0.1:5000"))
    }

    @Test func authFilesAreDockerCompatibleAndPrivate() async throws {
        try await withTemporaryDirectory("authfile") { dir in
            // A file as `docker login` writes it, with fields Gantry does not know.
            try write("""
            {"auths": {"https://index.docker.io/v1/": {"auth": "\(Data("hub:pw".utf8).base64EncodedString())"},
                       "ghcr.io": {"auth": "", "identitytoken": "refresh-me"}},
             "credsStore": "desktop", "HttpHeaders": {"X-Meta": "1"}}
            """, to: dir + "/config.json")
            let file = AuthFile(path: dir + "/config.json")
            #expect(try await file.credential(for: "docker.io") == .basic(username: "hub", password: "pw"))
            #expect(try await file.credential(for: "ghcr.io") == .identityToken("refresh-me"))
            #expect(try await file.credential(for: "quay.io") == nil)

            try file.store(.basic(username: "me", password: "p:w"), for: "127.0.0.1:5000")
            var st = stat()
            stat(dir + "/config.json", &st)
            #expect(st.st_mode & 0o777 == 0o600)
            #expect(try await file.credential(for: "127.0.0.1:5000") == .basic(username: "me", password: "p:w"))
            let text = try readText(dir + "/config.json")
            #expect(text.contains("credsStore") && text.contains("X-Meta"))
            #expect(try file.store(nil, for: "127.0.0.1:5000"))
            #expect(try await file.credential(for: "127.0.0.1:5000") == nil)
            #expect(try !file.store(nil, for: "127.0.0.1:5000"))

            let chain = CredentialChain([AuthFile(path: dir + "/missing.json"), file])
            #expect(try await chain.credential(for: "index.docker.io") == .basic(username: "hub", password: "pw"))
        }
    }
}

/// Registries may send blob downloads to other storage with a redirect
/// (S3, a CDN). A small server on 127.0.0.1 plays such a registry and one
/// on 127.0.0.2 the storage behind it.
@Suite struct RegistryRedirectTests {
    @Test func credentialsStayWithTheRegistry() async throws {
        try await withTemporaryDirectory("redirect") { dir in
            let blob = Data("blob bytes behind a redirect".utf8)
            let digest = Digest.compute(blob)
            let seen = Once()
            let storage = try await TestHTTPServer(host: "127.0.0.2") { request in
                if request.headers.contains(name: "Authorization") { _ = seen.claim() }
                return (.ok, ["Content-Type": "application/octet-stream"], blob)
            }
            let registry = try await TestHTTPServer { request in
                guard request.headers.first(name: "Authorization") == "Basic " + Data("dave:pw".utf8).base64EncodedString() else {
                    return (.unauthorized, ["WWW-Authenticate": #"Basic realm="test""#], Data())
                }
                return (.temporaryRedirect, ["Location": "http://127.0.0.2:\(storage.port)/storage/\(digest.encoded)?signature=x"], Data())
            }
            let client = try RegistryClient(credentials: StaticCredentials(["127.0.0.1:\(registry.port)": .basic(username: "dave", password: "pw")]))
            let content = try ContentStore(root: dir)
            let descriptor = Descriptor(mediaType: .ociLayerGzip, digest: digest, size: Int64(blob.count))
            try await client.download(descriptor, registry: "127.0.0.1:\(registry.port)", repository: "a/b", into: content)
            #expect(try Data(file: content.path(for: digest)) == blob)
            #expect(!seen.claimed, "the storage host received the registry's credentials")
            try await storage.shutdown()
            try await registry.shutdown()
        }
    }

    @Test func credentialsNeverGoOverPlainHTTPToAnUntrustedTokenService() async throws {
        let registry = try await TestHTTPServer { _ in
            (.unauthorized, ["WWW-Authenticate": #"Bearer realm="http://tokens.example.com/token",service="registry""#], Data())
        }
        let client = try RegistryClient(credentials: StaticCredentials(["127.0.0.1:\(registry.port)": .basic(username: "u", password: "p")]))
        await #expect {
            try await client.manifest(registry: "127.0.0.1:\(registry.port)", repository: "a/b", reference: "latest")
        } throws: { ($0 as? OCIImageError)?.code == .insecureConnection }
        try await registry.shutdown()
    }
}
