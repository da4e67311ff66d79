import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Testing

@Suite("Compose environments")
struct ComposeTests {
    static let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Fixtures/compose/compose.yaml"

    @Test("A compose file's services are reached by mapped port and find each other by name; the project is gone afterwards", .requiresRoot)
    func composeEnvironment() async throws {
        try await withTestingSession("testing-compose") { session, _ in
            let compose = TestCompose(file: Self.file)
                .waiting(for: "web", .http("/", port: 80, body: { $0.hasPrefix("served by") }))
                .waiting(for: "client", .logLine(containing: "fetched"))
            let project = try await session.withCompose(compose) { project in
                let port = try project.mappedPort("web", 80)
                #expect(port != 8080, "the fixed host port is replaced with a free one")
                let page = await httpGet(port: port, attempts: 1)
                #expect(page?.contains("served by") == true)
                let client = try project.service("client")
                #expect(try await client.logs().contains("served by"))
                #expect(throws: TestingError.self) { try project.service("db") }
                let unpublished = #expect(throws: TestingError.self) { try project.mappedPort("client", 80) }
                #expect(unpublished?.message.contains("ports: in the compose file") == true, "\(unpublished?.message ?? "")")
                return project.project
            }
            let runtime = try session.runtime
            #expect(try runtime.list().isEmpty)
            #expect(try runtime.networks.list().allSatisfy { !$0.name.hasPrefix(project) })
            #expect(try runtime.volumes.list().isEmpty)
        }
    }

    @Test("A service that never becomes ready fails the start with its last lines", .requiresRoot)
    func composeWaitFails() async throws {
        try await withTestingSession("testing-compose-fail") { session, _ async throws in
            let compose = TestCompose(file: Self.file)
                .waiting(for: "client", .logLine(containing: "never printed"))
                .startupTimeout(.seconds(15))
            let error = await #expect(throws: TestingError.self) { try await session.withCompose(compose) { _ in } }
            #expect(error?.code == .timedOut)
            #expect(error?.message.contains("service client of compose project testing-") == true, "\(error?.message ?? "")")
            // On a machine busy enough, the deadline may pass before the
            // service has even rolled out; the message then says so instead.
            if error?.message.contains("waiting for") == true {
                #expect(error?.message.contains("fetched") == true, "\(error?.message ?? "")")
            }
            #expect(try session.runtime.list().isEmpty)
            // A misspelt service is refused before anything starts.
            let misspelt = await #expect(throws: TestingError.self) {
                try await session.withCompose(TestCompose(file: Self.file).waiting(for: "wbe", .running)) { _ in }
            }
            #expect(misspelt?.message.contains("has no service wbe to wait for; its services: client, web") == true, "\(misspelt?.message ?? "")")
        }
    }
}
