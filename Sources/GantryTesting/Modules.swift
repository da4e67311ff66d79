import Foundation

// Ready-made containers for what tests use most, each with its
// credentials, its port and the wait that tells it is ready.

extension TestContainer {
    /// The image ``postgreSQL(image:database:user:password:)`` uses unless told.
    public static let postgreSQLImage = "docker.io/library/postgres:16"
    /// The image ``redis(image:password:)`` uses unless told.
    public static let redisImage = "docker.io/library/redis:7"

    /// A PostgreSQL server, configured as the official image is: through
    /// `POSTGRES_USER`, `POSTGRES_PASSWORD` and `POSTGRES_DB`. It is ready
    /// once it accepts connections over TCP (`pg_isready`), which the
    /// official image's entry point allows only after its first-run setup.
    /// Reach it with ``RunningContainer/postgreSQLURL``.
    ///
    /// - Parameters:
    ///   - image: An image that behaves as the official one does.
    ///   - database: The database made for the test.
    ///   - user: The user that owns it.
    ///   - password: The user's password.
    public static func postgreSQL(image: String = postgreSQLImage, database: String = "test", user: String = "test",
                                  password: String = "test") -> TestContainer {
        TestContainer(image: image)
            .environment(["POSTGRES_DB": database, "POSTGRES_USER": user, "POSTGRES_PASSWORD": password])
            .labeled([moduleLabel: "postgresql"])
            .exposing(5432)
            .waiting(for: .all(.port(5432), .command(["pg_isready", "--host", "127.0.0.1", "--port", "5432", "--username", user, "--dbname", database])))
    }

    /// A Redis server, with a password when given (`--requirepass`, as
    /// with the official image). It is ready once it says it accepts
    /// connections and its port answers. Reach it with
    /// ``RunningContainer/redisURL``.
    ///
    /// - Parameters:
    ///   - image: An image that behaves as the official one does.
    ///   - password: The password clients must give; none by default.
    public static func redis(image: String = redisImage, password: String? = nil) -> TestContainer {
        var container = TestContainer(image: image)
            .labeled([moduleLabel: "redis"])
            .exposing(6379)
            .waiting(for: .all(.logLine(containing: "Ready to accept connections"), .port(6379)))
        if let password {
            container = container.command(["redis-server", "--requirepass", password])
                .environment(["REDIS_PASSWORD": password])
        }
        return container
    }

    /// The label that names the module a container was made by.
    static let moduleLabel = "dev.gantry.testing.module"
}

extension RunningContainer {
    /// `postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE` for a container
    /// made by ``TestContainer/postgreSQL(image:database:user:password:)``.
    ///
    /// - Throws: ``TestingError`` when it was made otherwise.
    public var postgreSQLURL: String {
        get throws {
            let environment = try moduleEnvironment("postgresql")
            let user = environment["POSTGRES_USER"] ?? "postgres"
            let database = environment["POSTGRES_DB"] ?? user
            return "postgresql://\(escaped(user)):\(escaped(environment["POSTGRES_PASSWORD"] ?? ""))@\(try endpoint(5432))/\(escaped(database))"
        }
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT` for a container made by
    /// ``TestContainer/redis(image:password:)``.
    ///
    /// - Throws: ``TestingError`` when it was made otherwise.
    public var redisURL: String {
        get throws {
            let environment = try moduleEnvironment("redis")
            let credentials = environment["REDIS_PASSWORD"].map { ":\(escaped($0))@" } ?? ""
            return "redis://\(credentials)\(try endpoint(6379))"
        }
    }

    /// The environment of a container made by the module `module`.
    private func moduleEnvironment(_ module: String) throws -> [String: String] {
        guard description.spec.labels[TestContainer.moduleLabel] == module else {
            throw TestingError(.invalidSpec, "container \(name) was not made by the \(module) module")
        }
        var environment: [String: String] = [:]
        for entry in description.spec.environment {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
        }
        return environment
    }

    private func escaped(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed.intersection(.urlPasswordAllowed)) ?? text
    }
}
