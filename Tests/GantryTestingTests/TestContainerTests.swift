import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Synchronization
import Testing

@Suite("Test containers", .serialized)
struct TestContainerTests {
    @Test("An HTTP server is reached through its mapped port once its HTTP wait passes", .requiresRoot)
    func httpServerThroughMappedPort() async throws {
        try await withTestingSession("testing-http") { session, _ in
            let spec = webServer("hello from the container")
                .exposing(80)
                .waiting(for: .http("/index.html", port: 80, body: { $0.contains("hello") }))
            let name = try await session.withContainer(spec) { web async throws in
                let port = try web.mappedPort(80)
                #expect(port != 80 && port > 0)
                #expect(try web.endpoint(80) == "127.0.0.1:\(port)")
                #expect(try web.url(80, path: "index.html").absoluteString == "http://127.0.0.1:\(port)/index.html")
                let page = await httpGet(port: port, attempts: 1)
                #expect(page?.contains("hello from the container") == true)
                let error = #expect(throws: TestingError.self) { try web.mappedPort(81) }
                #expect(error?.code == .portNotExposed)
                #expect(error?.message.contains("it exposes 80") == true)
                return web.name
            }
            #expect(throws: RuntimeError.self) { try session.runtime.container(name) }
        }
    }

    @Test("Each wait strategy is satisfied by what it waits for", .requiresRoot)
    func waitStrategies() async throws {
        try await withTestingSession("testing-waits") { session, _ in
            let logs = TestContainer(image: "busybox:test", command: ["sh", "-c", "sleep 0.2; echo starting; echo ready; echo ready; exec sleep 60"])
                .waiting(for: .logLine(containing: "ready", times: 2))
            try await session.withContainer(logs) { box async throws in
                let text = try await box.logs()
                #expect(text.components(separatedBy: "ready").count - 1 == 2)
            }
            let regex = try TestContainer(image: "busybox:test", command: ["sh", "-c", "sleep 0.1; echo 'listening on :8080'; exec sleep 60"])
                .waiting(for: .logLine(matching: "listening on :[0-9]+"))
            try await session.withContainer(regex) { _ in }
            #expect(throws: TestingError.self) { try WaitStrategy.logLine(matching: "(unclosed") }

            // Inside only (nothing exposed), then both ways.
            let server = TestContainer(image: "busybox:test", command: ["sh", "-c", "sleep 0.3; exec nc -ll -p 7000 -e true"])
            try await session.withContainer(server.waiting(for: .port(7000))) { _ in }
            try await session.withContainer(server.exposing(7000).waiting(for: .port(7000, from: .both))) { box async throws in
                #expect(try box.mappedPort(7000) > 0)
            }

            let file = TestContainer(image: "busybox:test", command: ["sh", "-c", "sleep 0.2; touch /ready; exec sleep 60"])
                .waiting(for: .file("/ready"))
            try await session.withContainer(file) { box async throws in
                #expect(try await box.exec(["test", "-e", "/ready"]).exit.code == 0)
            }

            let command = TestContainer(image: "busybox:test", command: ["sh", "-c", "sleep 0.2; touch /tmp/up; exec sleep 60"])
                .waiting(for: .command(["test", "-e", "/tmp/up"]))
            try await session.withContainer(command) { _ in }

            let oneShot = TestContainer(image: "busybox:test", command: ["sh", "-c", "echo done; exit 3"])
                .waiting(for: .exit(code: 3))
            try await session.withContainer(oneShot) { box async throws in
                #expect(try await box.logs().contains("done"))
            }

            let combined = TestContainer(image: "busybox:test", command: ["sh", "-c", "touch /a; sleep 0.2; echo go; exec sleep 60"])
                .waiting(for: .all(.file("/a"), .logLine(containing: "go"), .any(.file("/never"), .running)))
            try await session.withContainer(combined) { _ in }
        }
    }

    @Test("An image built from a Dockerfile is ready once its HEALTHCHECK passes", .requiresRoot)
    func builtImageHealthCheck() async throws {
        try await withTestingSession("testing-health") { session, dir in
            try FileManager.default.createDirectory(atPath: dir + "/context", withIntermediateDirectories: true)
            try write("""
                FROM busybox:test
                HEALTHCHECK --interval=1s CMD test -e /tmp/healthy
                CMD ["sh", "-c", "sleep 0.3; touch /tmp/healthy; exec sleep 60"]
                """, to: dir + "/context/Dockerfile")
            let spec = TestContainer(building: dir + "/context").waiting(for: .healthCheck)
            try await session.withContainer(spec) { box async throws in
                #expect(try await box.exec(["test", "-e", "/tmp/healthy"]).exit.code == 0)
            }
            let none = TestContainer(image: "busybox:test", command: ["sleep", "60"]).waiting(for: .healthCheck)
            let error = await #expect(throws: TestingError.self) { try await session.start(none) }
            #expect(error?.message.contains("its image has no health check") == true, "\(error?.message ?? "")")
            for image in try await session.gantry.images.list() where image.reference.description.contains("gantry-testing/built") {
                _ = try await session.gantry.images.remove(image.reference.description)
            }
        }
    }

    @Test("A container that ends, a wait that never passes and a missing image fail quickly, saying why", .requiresRoot)
    func failuresAreClearAndQuick() async throws {
        try await withTestingSession("testing-failures") { session, _ in
            let clock = ContinuousClock()
            let crashing = TestContainer(image: "busybox:test", command: ["sh", "-c", "echo 'config missing: /etc/app.conf' >&2; exit 7"])
                .waiting(for: .port(80))
            var started = clock.now
            let crash = await #expect(throws: TestingError.self) { try await session.start(crashing) }
            #expect(crash?.code == .exited)
            #expect(crash?.message.contains("exited with 7") == true, "\(crash?.message ?? "")")
            #expect(crash?.message.contains("config missing: /etc/app.conf") == true, "\(crash?.message ?? "")")
            #expect(clock.now - started < .seconds(5))

            let never = TestContainer(image: "busybox:test", command: ["sleep", "60"])
                .waiting(for: .logLine(containing: "never said"))
                .startupTimeout(.milliseconds(500))
            started = clock.now
            let timeout = await #expect(throws: TestingError.self) { try await session.start(never) }
            #expect(timeout?.code == .timedOut)
            #expect(timeout?.message.contains("never said") == true)
            #expect(clock.now - started < .seconds(5))

            let wrongExit = TestContainer(image: "busybox:test", command: ["false"]).waiting(for: .exit(code: 0))
            let exit = await #expect(throws: TestingError.self) { try await session.start(wrongExit) }
            #expect(exit?.message.contains("exited with 1") == true, "\(exit?.message ?? "")")
            let neither = TestContainer(image: "busybox:test", command: ["sh", "-c", "exit 2"]).waiting(for: .any(.exit(code: 0), .exit(code: 1)))
            let any = await #expect(throws: TestingError.self) { try await session.start(neither) }
            #expect(any?.message.contains("none of them can be satisfied (it to end with 0: it exited with 2") == true, "\(any?.message ?? "")")

            let refused = TestContainer(image: "busybox:test", command: ["sleep", "60"]).waiting(for: .http("/", port: 80))
                .startupTimeout(.seconds(2))
            let http = await #expect(throws: TestingError.self) { try await session.start(refused) }
            #expect(http?.message.contains("last: connecting to") == true, "\(http?.message ?? "")")

            let missing = TestContainer(image: "127.0.0.1:1/no/such-image:1")
            started = clock.now
            let image = await #expect(throws: TestingError.self) { try await session.start(missing) }
            #expect(image?.code == .image)
            #expect(image?.message.contains("127.0.0.1:1/no/such-image:1") == true)
            #expect(clock.now - started < .seconds(10))
        }
    }

    @Test("Two containers on a network find each other by alias", .requiresRoot)
    func networkAliases() async throws {
        try await withTestingSession("testing-network") { session, _ in
            try await session.withNetwork { network in
                let web = webServer("from the backend").network(network, aliases: ["backend"]).waiting(for: .port(80))
                try await session.withContainer(web) { server async throws in
                    #expect(try server.address(on: network) != nil)
                    let client = TestContainer(image: "busybox:test", command: ["timeout", "5", "wget", "-q", "-O", "-", "http://backend/index.html"])
                        .network(network)
                        .waiting(for: .exit(code: 0))
                    try await session.withContainer(client) { fetched async throws in
                        #expect(try await fetched.logs().contains("from the backend"))
                    }
                }
            }
        }
    }

    @Test("Files go in before the start; hooks run in order; logs reach consumers; exec runs inside", .requiresRoot)
    func filesHooksLogsAndExec() async throws {
        try await withTestingSession("testing-hooks") { session, dir in
            try write("from the host\n", to: dir + "/host.txt")
            let order = Recorder()
            let spec = TestContainer(image: "busybox:test", command: ["sh", "-c", "cat /data/host.txt /etc/app.conf; echo ready; exec sleep 60"])
                .copying(dir + "/host.txt", to: "/data/host.txt")
                .copying(contents: "key=value\n", to: "/etc/app.conf", mode: 0o600)
                .environment(["GREETING": "hi"])
                .tmpfs("/scratch")
                .volume(at: "/state")
                .labeled(["suite": "testing"])
                .consumingLogs { order.add("log: " + $0) }
                .on(.created) { _ in order.add("created") }
                .on(.started) { _ in order.add("started") }
                .on(.ready) { _ in order.add("ready") }
                .on(.stopping) { _ in order.add("stopping") }
                .on(.removed) { _ in order.add("removed") }
                .waiting(for: .logLine(containing: "ready"))
            try await session.withContainer(spec) { box async throws in
                let env = try await box.exec(["sh", "-c", "echo $GREETING; stat -c %a /etc/app.conf; mount | grep -c /scratch; touch /state/x"])
                #expect(env.exit.code == 0)
                #expect(env.standardOutput == "hi\n600\n1\n")
                #expect(try box.container.record.spec.labels["suite"] == "testing")
                let failing = try await box.exec(["sh", "-c", "echo oops >&2; exit 4"])
                #expect(failing.exit.code == 4 && failing.standardError == "oops\n")
                let slow = await #expect(throws: TestingError.self) { try await box.exec(["sleep", "30"], timeout: .milliseconds(200)) }
                #expect(slow?.code == .timedOut)
                try await box.copyOut("/data/host.txt", to: dir + "/back.txt")
                #expect(try readText(dir + "/back.txt") == "from the host\n")
                for _ in 0..<100 where !order.events.contains("log: ready") { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(order.events.filter { !$0.hasPrefix("log: ") } == ["created", "started", "ready", "stopping", "removed"])
            #expect(order.events.contains("log: from the host"))
            #expect(order.events.contains("log: key=value"))
        }
    }

    @Test("A container for the whole run is started once, whoever asks first", .requiresRoot)
    func containerForTheRun() async throws {
        try await withTestingSession("testing-run") { session, _ in
            let spec = TestContainer(image: "busybox:test", command: ["sleep", "60"])
            async let first = session.containerForTheRun("shared", spec)
            async let second = session.containerForTheRun("shared", spec)
            let (one, other) = try await (first, second)
            #expect(one.id == other.id)
            #expect(try await session.containerForTheRun("shared", spec).id == one.id)
            #expect(try session.runtime.list().count == 1)
            try await one.remove()
        }
    }

    @Test("The container trait starts a container for its scope and removes it on every way out", .requiresRoot)
    func traitScope() async throws {
        try await withTestingSession("testing-trait") { session, _ in
            let trait: ContainerTrait = .container("box", TestContainer(image: "busybox:test", command: ["sleep", "60"]), session: { session })
            let test = try #require(Test.current)
            let seen = Recorder()
            try await trait.provideScope(for: test, testCase: nil) {
                let box = try RunningContainer.scoped("box")
                seen.add(box.name)
                #expect(try box.container.status == .running)
                let missing = #expect(throws: TestingError.self) { try RunningContainer.scoped("db") }
                #expect(missing?.message.contains("in scope: box") == true)
            }
            #expect(try session.runtime.list().isEmpty)

            struct Failure: Error {}
            await #expect(throws: Failure.self) {
                try await trait.provideScope(for: test, testCase: nil) { throw Failure() }
            }
            #expect(try session.runtime.list().isEmpty)

            // A test cancelled (as a time limit does) while its container runs.
            let task = Task {
                try await trait.provideScope(for: test, testCase: nil) { try await Task.sleep(for: .seconds(60)) }
            }
            for _ in 0..<500 where try session.runtime.list().isEmpty { try await Task.sleep(for: .milliseconds(10)) }
            task.cancel()
            _ = await task.result
            #expect(try session.runtime.list().isEmpty)
            #expect(throws: TestingError.self) { try RunningContainer.scoped("box") }
        }
    }
}

/// Records events from several tasks, in order.
final class Recorder: Sendable {
    private let state = Mutex<[String]>([])
    func add(_ event: String) { state.withLock { $0.append(event) } }
    var events: [String] { state.withLock { $0 } }
}
