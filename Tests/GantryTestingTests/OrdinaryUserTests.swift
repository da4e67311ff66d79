import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Testing

/// Set when root's side runs this suite as an ordinary user.
private let asOrdinaryUser = ProcessInfo.processInfo.environment["GANTRY_TESTING_ORDINARY_USER"] != nil

/// Root's side: makes an ordinary user with subordinate IDs, runs
/// ``OrdinaryUserTestingTests`` as that user, and checks that nothing of
/// the user's is left running.
@Suite(.requiresRoot, .serialized) struct OrdinaryUserTestingHostTests {
    @Test("An ordinary user's tests get throwaway containers")
    func ordinaryUserRunsTestContainers() async throws {
        try await withTemporaryDirectory("testing-user") { dir in
            chmod(dir, 0o755)
            let user = "gantry-rl-t" + UUID().uuidString.prefix(5).lowercased()
            let home = dir + "/home"
            _ = try await runWithStatus("/usr/sbin/useradd", ["-M", "-d", home, "-s", "/bin/sh", user], check: true)
            defer {
                _ = try? runWithStatus("/usr/bin/pkill", ["-KILL", "-u", user])
                _ = try? runWithStatus("/usr/sbin/userdel", [user])
            }
            try FileManager.default.createDirectory(atPath: home + "/run", withIntermediateDirectories: true)
            // A tmpfs, as systemd gives a login session's run-time directory.
            _ = try await runWithStatus("/bin/mount", ["-t", "tmpfs", "-o", "mode=700,size=64m", "tmpfs", home + "/run"], check: true)
            defer { umount2(home + "/run", Int32(MNT_DETACH)) }
            _ = try await runWithStatus("/bin/chown", ["-R", user + ":" + user, home], check: true)
            let (status, report) = try await runTests(asUser: user, home: home, filter: "OrdinaryUserTestingTests/",
                                                      environment: ["GANTRY_TESTING_ORDINARY_USER": "1"])
            #expect(status == 0 && report.contains("Test run with 2 tests in 1 suite passed") && !report.contains("skipped"), "\(report)")
            let left = try await processesLeft(of: user)
            #expect(left.isEmpty, "processes of \(user) left: \(left)")
        }
    }
}

/// GantryTesting as an ordinary user with subordinate IDs, run by
/// ``OrdinaryUserTestingHostTests``: the containers run in user
/// namespaces, with pasta publishing their ports on 127.0.0.1.
@Suite(.enabled(if: asOrdinaryUser && geteuid() != 0, "run by OrdinaryUserTestingHostTests as an ordinary user"), .serialized)
struct OrdinaryUserTestingTests {
    @Test("A web server is reached through its mapped port, with exec and files")
    func webServer() async throws {
        try await withTestingSession("testing-user-web") { session, _ in
            let spec = GantryTestingTests.webServer("served to an ordinary user").exposing(80).waiting(for: .http("/index.html", port: 80))
            try await session.withContainer(spec) { web async throws in
                let page = await httpGet(port: try web.mappedPort(80), attempts: 1)
                #expect(page?.contains("served to an ordinary user") == true)
                let id = try await web.exec(["id", "-u"])
                #expect(id.standardOutput == "0\n")
            }
        }
    }

    @Test("A failing container fails its start, saying why")
    func failure() async throws {
        try await withTestingSession("testing-user-fail") { session, _ in
            let crashing = TestContainer(image: "busybox:test", command: ["sh", "-c", "echo 'no config' >&2; exit 2"]).waiting(for: .port(80))
            let error = await #expect(throws: TestingError.self) { try await session.start(crashing) }
            #expect(error?.message.contains("no config") == true, "\(error?.message ?? "")")
        }
    }
}
