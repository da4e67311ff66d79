import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Testing

/// The modules, with images built here from Debian's packages (no public
/// registry is reachable from the test machines): each behaves as its
/// official image does.
@Suite("Modules", .serialized)
struct ModuleTests {
    /// Debian bookworm minbase as an OCI layout, which `scripts/setup.sh` makes.
    static let debianLayout = (ProcessInfo.processInfo.environment["GANTRY_BENCH_CACHE"] ?? "/var/tmp/gantry-bench") + "/layout"
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Fixtures"
    static var hasDebian: Bool { FileManager.default.fileExists(atPath: debianLayout + "/index.json") }

    /// A session with the image built from the fixture `fixture` on
    /// Debian's layout, both images removed afterwards.
    func withFixtureImage(_ fixture: String, _ body: (TestSession, String) async throws -> Void) async throws {
        try await withTestingSession("testing-" + fixture) { session, _ in
            try await session.gantry.images.importLayout(at: Self.debianLayout, tag: "bookworm", name: "debian:test")
            let image = try await session.buildImage(context: Self.fixtures + "/" + fixture, tag: fixture + ":debian")
            try await body(session, image)
            for name in [image, "debian:test"] { _ = try await session.gantry.images.remove(name) }
        }
    }

    @Test("PostgreSQL is reached with psql through the module's URL", .requiresRoot,
          .enabled(if: hasDebian, "needs the Debian layout scripts/setup.sh makes"))
    func postgreSQL() async throws {
        try await withFixtureImage("postgres") { session, image in
            let postgres = TestContainer.postgreSQL(image: image, database: "shop", user: "app", password: "s3cret/pw")
            try await session.withContainer(postgres) { db async throws in
                let url = try db.postgreSQLURL
                #expect(url == "postgresql://app:s3cret%2Fpw@127.0.0.1:\(try db.mappedPort(5432))/shop")
                let answer = try await GantryTestSupport.run("psql", [url, "--no-align", "--tuples-only", "--command",
                                                                       "CREATE TABLE items (name text); INSERT INTO items VALUES ('lamp'); SELECT current_user || '@' || current_database() || ':' || count(*) FROM items"])
                #expect(answer.contains("app@shop:1"), "\(answer)")
                let wrong = try await GantryTestSupport.runWithStatus("psql", [url.replacingOccurrences(of: "s3cret%2Fpw", with: "wrong"), "--command", "SELECT 1"])
                #expect(wrong.status != 0)
                #expect(throws: TestingError.self) { try db.redisURL }
            }
        }
    }

    @Test("Redis answers through the module's URL, with and without a password", .requiresRoot,
          .enabled(if: hasDebian, "needs the Debian layout scripts/setup.sh makes"))
    func redis() async throws {
        try await withFixtureImage("redis") { session, image in
            try await session.withContainer(.redis(image: image)) { cache async throws in
                let url = try cache.redisURL
                #expect(url == "redis://127.0.0.1:\(try cache.mappedPort(6379))")
                #expect(try await redisExchange(port: cache.mappedPort(6379), "PING\r\n").hasPrefix("+PONG"))
            }
            try await session.withContainer(.redis(image: image, password: "hunter2")) { cache async throws in
                #expect(try cache.redisURL == "redis://:hunter2@127.0.0.1:\(try cache.mappedPort(6379))")
                let port = try cache.mappedPort(6379)
                #expect(try await redisExchange(port: port, "PING\r\n").hasPrefix("-NOAUTH"))
                #expect(try await redisExchange(port: port, "AUTH hunter2\r\nPING\r\n").contains("+PONG"))
            }
        }
    }

    @Test("An HTTPS wait is satisfied through the mapped port, whatever certificate the server shows", .requiresRoot,
          .enabled(if: hasDebian, "needs the Debian layout scripts/setup.sh makes"))
    func httpsWait() async throws {
        try await withFixtureImage("https") { session, image in
            let server = TestContainer(image: image).exposing(443).waiting(for: .https("/", port: 443, body: { $0.contains("s_server") }))
            try await session.withContainer(server) { tls async throws in
                #expect(try tls.url(443, scheme: "https").absoluteString == "https://127.0.0.1:\(try tls.mappedPort(443))/")
            }
            let unexposed = TestContainer(image: image).waiting(for: .https("/", port: 443))
            let error = await #expect(throws: TestingError.self) { try await session.start(unexposed) }
            #expect(error?.message.contains("does not expose port 443") == true, "\(error?.message ?? "")")
        }
    }
}

/// Sends `request` to a Redis server on the host's `port` and returns what
/// it answers within a second.
private func redisExchange(port: UInt16, _ request: String) async throws -> String {
    try await GantryTestSupport.run("/bin/busybox", ["sh", "-c", "printf '\(request.replacingOccurrences(of: "\r\n", with: "\\r\\n"))' | timeout 1 nc 127.0.0.1 \(port); true"])
}
