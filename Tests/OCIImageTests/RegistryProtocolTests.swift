import Foundation
import GantryTestSupport
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
        // Several challenges in one value, or in several headers: Bearer wins.
        let mixed = AuthChallenge.parseAll(#"Negotiate, Basic realm="b", Bearer realm="https://t/token",service="s""#)
        #expect(mixed.map(\.scheme) == [.basic, .bearer])
        #expect(mixed.first?.parameters.keys.sorted() == ["realm"])
        #expect(AuthChallenge.preferred([#"Basic realm="b""#, #"Bearer realm="https://t/token""#])?.scheme == .bearer)
        #expect(AuthChallenge.preferred(["Negotiate"]) == nil)
    }

    @Test func credentialsAreFoundHoweverTheRegistryIsSpelled() async throws {
        let credentials = StaticCredentials(["docker.io": .basic(username: "a", password: "b"), "https://ghcr.io": .identityToken("t")])
        #expect(try await credentials.credential(for: "docker.io") == .basic(username: "a", password: "b"))
        #expect(try await credentials.credential(for: "index.docker.io") == .basic(username: "a", password: "b"))
        #expect(try await credentials.credential(for: "ghcr.io") == .identityToken("t"))
    }

    @Test func originsIncludeSchemeAndEffectivePort() {
        #expect(RegistryClient.Origin("https://h.example/v2/") == RegistryClient.Origin("https://H.example:443/x"))
        #expect(RegistryClient.Origin("https://h.example/v2/") != RegistryClient.Origin("http://h.example/v2/"))
        #expect(RegistryClient.Origin("http://h.example/") != RegistryClient.Origin("http://h.example:8080/"))
        #expect(RegistryClient.Origin("ftp://h.example/") == nil)
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
        // Names that only look like loopback addresses are not loopback.
        #expect(!options.isInsecure("127.attacker.example") && !options.isInsecure("127.0.0.1.nip.io:443"))
        #expect(options.isInsecure("127.1.2.3:80"))
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

    @Test func uploadLocationsAndPageLinksOnOtherHostsGetNoCredentials() async throws {
        try await withTemporaryDirectory("foreign-origin") { dir in
            let leaked = Once()
            let basic = "Basic " + Data("erin:pw".utf8).base64EncodedString()
            let elsewhere = try await TestHTTPServer(host: "127.0.0.2") { request in
                if request.headers.contains(name: "Authorization") { _ = leaked.claim() }
                if request.uri.hasPrefix("/token") { return (.ok, [:], Data(#"{"token":"t"}"#.utf8)) }
                if request.uri.hasPrefix("/page") {
                    // A host trying to collect the registry's credentials through its own token service.
                    return (.unauthorized, ["WWW-Authenticate": #"Bearer realm="http://127.0.0.2:\#(request.headers.first(name: "Host")?.split(separator: ":").last ?? "")/token""#], Data())
                }
                return (.created, [:], Data())
            }
            let registry = try await TestHTTPServer { request in
                guard request.headers.first(name: "Authorization") == basic else {
                    return (.unauthorized, ["WWW-Authenticate": #"Basic realm="r""#], Data())
                }
                switch (request.method, request.uri) {
                case (.HEAD, _): return (.notFound, [:], Data())
                case (.POST, _): return (.accepted, ["Location": "http://127.0.0.2:\(elsewhere.port)/upload/1"], Data())
                default: return (.ok, ["Link": "<http://127.0.0.2:\(elsewhere.port)/page?n=1>; rel=\"next\""], Data(#"{"tags":["a"]}"#.utf8))
                }
            }
            let host = "127.0.0.1:\(registry.port)"
            let client = try RegistryClient(credentials: StaticCredentials([host: .basic(username: "erin", password: "pw")]))
            try write("blob", to: dir + "/blob")
            let descriptor = Descriptor(mediaType: .ociLayer, digest: Digest.compute(Data("blob".utf8)), size: 4)
            #expect(try await client.upload(descriptor, from: dir + "/blob", registry: host, repository: "a/b") == .uploaded)
            await #expect { try await client.tags(registry: host, repository: "a/b") } throws: { ($0 as? OCIImageError)?.code == .unauthorized }
            #expect(!leaked.claimed, "another host received the registry's credentials")
            try await elsewhere.shutdown()
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
