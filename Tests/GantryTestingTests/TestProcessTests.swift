import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Test processes of their own (exit tests): one killed with `SIGKILL`
/// while its containers run, one that leaves a reusable container.
@Suite("Test processes", .serialized)
struct TestProcessTests {
    @Test("A test process killed with SIGKILL takes its containers with it, and the next session finds nothing left", .requiresRoot)
    func killedProcessLeavesNothing() async throws {
        try await withTestingSession("testing-kill") { session, dir in
            let root = session.gantry.root.path
            let parent = try session.runtime.cgroupParent
            let pidFile = dir + "/pids"
            await #expect(processExitsWith: .signal(SIGKILL)) { [root = root as String, parent = parent as String, pidFile = pidFile as String] in
                let session = try TestSession(root: StateRoot(root), cgroupParent: parent)
                let network = try await session.makeNetwork()
                let web = try await session.start(TestContainer(image: "busybox:test", command: ["sleep", "600"])
                    .network(network, aliases: ["web"]).exposing(80).volume(at: "/data"))
                let worker = try await session.start(TestContainer(image: "busybox:test", command: ["sleep", "600"]))
                let pids = [try web.container.record.pid, try worker.container.record.pid].compactMap { $0 }.map(String.init)
                try pids.joined(separator: " ").write(toFile: pidFile, atomically: true, encoding: .utf8)
                kill(getpid(), SIGKILL)
            }
            let pids = try readText(pidFile).split(separator: " ").compactMap { Int32($0) }
            #expect(pids.count == 2)
            // At once: the kernel kills them with their parent.
            for _ in 0..<100 where pids.contains(where: isRunning) { try await Task.sleep(for: .milliseconds(10)) }
            // Ended (a zombie counts: this machine's first process may be slow to reap what it inherits).
            let alive = pids.filter(isRunning)
            #expect(alive.isEmpty, "container processes still run: \(alive.map { (try? readText("/proc/\($0)/status").split(separator: "\n").prefix(8).joined(separator: "; ")) ?? "" })")
            #expect(mounts(under: root).isEmpty, "mounts left under the state root")
            let runtime = try session.runtime
            let records = try runtime.list()
            #expect(records.count == 2)
            // The kernel takes a namespace that lost its last process apart
            // in the background: its veth pair goes within moments.
            var links = try await GantryTestSupport.run("ip", ["-o", "link"])
            for _ in 0 ..< 100 where records.contains(where: { links.contains("gv-" + $0.shortID) }) {
                try await Task.sleep(for: .milliseconds(20))
                links = try await GantryTestSupport.run("ip", ["-o", "link"])
            }
            for record in records { #expect(!links.contains("gv-" + record.shortID), "the veth pair of \(record.name) is left") }
            let before = try runtime.networks.list().filter { $0.name != Networks.defaultName }
            #expect(before.count == 1)
            try await session.removeLeftovers()
            #expect(try runtime.list().isEmpty)
            #expect(try runtime.networks.list().allSatisfy { $0.name == Networks.defaultName })
            #expect(try runtime.volumes.list().isEmpty)
            let after = try await GantryTestSupport.run("ip", ["-o", "link"])
            for network in before { #expect(!after.contains(network.bridge + ":"), "bridge \(network.bridge) left") }
        }
    }

    @Test("A reusable container left by one run is found by the next, and removed by one call", .requiresRoot)
    func reuseBetweenRuns() async throws {
        try await withTestingSession("testing-reuse") { session, _ in
            let root = session.gantry.root.path
            let parent = try session.runtime.cgroupParent
            await #expect(processExitsWith: .success) { [root = root as String, parent = parent as String] in
                let session = try TestSession(root: StateRoot(root), cgroupParent: parent)
                let spec = TestContainer(image: "busybox:test", command: ["sleep", "600"]).exposing(80).volume(at: "/data").reusable()
                try await session.withContainer(spec) { _ in }
            }
            let kept = try session.runtime.list()
            #expect(kept.count == 1)
            let spec = TestContainer(image: "busybox:test", command: ["sleep", "600"]).exposing(80).volume(at: "/data").reusable()
            let found = try await session.withContainer(spec) { reused async throws in
                #expect(try reused.mappedPort(80) > 0)
                return reused.id
            }
            #expect(found == kept.first?.id)
            let other = try await session.withContainer(spec.environment(["X": "1"])) { $0.id }
            #expect(other != found)
            // The first run's, by one command of the CLI; then the other.
            let gantry = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
            let key = kept.first?.spec.labels[TestSession.reuseLabel] ?? ""
            let removed = try await GantryTestSupport.run(gantry, ["rm", "--force", "--label", TestSession.reuseLabel + "=" + key, "--root", root])
            // The container, then the volume made for it.
            let lines = removed.split(separator: "\n")
            #expect(lines.count == 2 && lines.first.map(String.init) == kept.first?.name, "\(removed)")
            #expect(try session.runtime.volumes.list().count == 1)
            #expect(try await session.removeReusedContainers().count == 1)
            #expect(try session.runtime.list().isEmpty)
        }
    }
}

/// Whether `pid` runs: it exists and is not a zombie.
private func isRunning(_ pid: Int32) -> Bool {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
    return !status.contains("State:\tZ")
}
