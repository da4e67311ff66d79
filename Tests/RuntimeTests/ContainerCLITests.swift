import Foundation
import GantryTestSupport
import Testing

/// Runs the example CLI's container commands, each as its own process, so
/// that state crosses processes as it does for users.
@Suite(.requiresRoot) struct ContainerCLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ root: String, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": "gantry-cli-test"])
    }

    func json(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
    }

    @Test func containerCommandsEndToEnd() async throws {
        try await withTemporaryDirectory("cli-ctr") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["hostname", "tail", "tr"])
            #expect(try gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            defer {
                for record in (try? json(try gantry(root, ["ps", "-a", "--format", "json"]).output)) ?? [] {
                    _ = try? gantry(root, ["rm", "-f", record["id"] as? String ?? ""])
                }
                rmdir("/sys/fs/cgroup/memory/gantry-cli-test")
            }

            // Exit codes and output; the container stays, stopped.
            let ran = try gantry(root, ["run", "--name", "once", "-e", "WHO=you", "-w", "/tmp", "bb:1", "sh", "-c", "echo hi $WHO; pwd; echo oops >&2; exit 3"])
            #expect(ran.status == 3)
            #expect(ran.output == "hi you\n/tmp\n")
            #expect(ran.error == "oops\n")
            #expect(try gantry(root, ["logs", "once"]).output == "hi you\n/tmp\n")
            let once = try json(try gantry(root, ["inspect", "once", "--format", "json"]).output).first
            #expect(once?["status"] as? String == "stopped")
            #expect(once?["exitCode"] as? Int == 3)
            #expect((once?["startedAt"] as? String)?.contains(".") == true)

            // 137 after an OOM kill, reported as such.
            let oom = try gantry(root, ["run", "--rm", "--memory", "16m", "--memory-swap", "16m", "bb:1", "tail", "/dev/zero"])
            #expect(oom.status == 137)
            #expect(oom.error.contains("oomKilled"))

            // Input, and --rm.
            let piped = try runWithStatus(binary, ["--root", root, "run", "--rm", "-i", "bb:1", "tr", "a-z", "A-Z"], input: Data("shout\n".utf8))
            #expect(piped.output == "SHOUT\n")

            // In the background, across processes: ps, exec, pause, stats, stop.
            let started = try gantry(root, ["run", "-d", "--name", "bg", "--pids", "16", "bb:1", "sh", "-c", "echo started; sleep 60"])
            #expect(started.status == 0, "\(started.error)")
            #expect(started.output.trimmingCharacters(in: .whitespacesAndNewlines).count == 64)
            let listed = try json(try gantry(root, ["ps", "--format", "json"]).output)
            #expect(listed.map { $0["name"] as? String } == ["bg"])
            #expect(try gantry(root, ["exec", "bg", "sh", "-c", "echo inside; exit 4"]) == (4, "inside\n", ""))
            #expect(try gantry(root, ["pause", "bg"]).status == 0)
            #expect(try json(try gantry(root, ["ps", "--format", "json"]).output).first?["status"] as? String == "paused")
            #expect(try gantry(root, ["unpause", "bg"]).status == 0)
            let stats = try gantry(root, ["stats", "bg", "--format", "json"])
            #expect(stats.output.contains("\"pidsLimit\" : 16"))
            #expect(try gantry(root, ["kill", "-s", "USR1", "bg"]).status == 0)
            let rmRunning = try gantry(root, ["rm", "bg"])
            #expect(rmRunning.status != 0 && rmRunning.error.contains("running"))
            #expect(try gantry(root, ["stop", "-t", "200ms", "bg"]).status == 0)
            let bg = try json(try gantry(root, ["inspect", "bg"]).output).first
            #expect(bg?["reason"] as? String == "stopped")
            #expect(try gantry(root, ["logs", "bg"]).output == "started\n")
            #expect(try gantry(root, ["rm", "bg", "once"]).status == 0)
            #expect(try json(try gantry(root, ["ps", "-a", "--format", "json"]).output).isEmpty)

            // Errors name what is wrong.
            let missing = try gantry(root, ["inspect", "nothing-here"])
            #expect(missing.status != 0 && missing.error.contains("nothing-here"))
            let badCap = try gantry(root, ["run", "--cap-add", "NOT_A_CAP", "bb:1", "true"])
            #expect(badCap.status != 0 && badCap.error.contains("NOT_A_CAP"))
        }
    }
}
