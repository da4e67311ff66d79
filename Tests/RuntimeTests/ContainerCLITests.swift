import Foundation
import GantryTestSupport
import Testing

/// Runs the example CLI's container commands, each as its own process, so
/// that state crosses processes as it does for users.
@Suite(.requiresRoot) struct ContainerCLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ root: String, _ arguments: [String], parent: String = "gantry-cli-test") async throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try await runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": parent])
    }

    /// The same, for clean-up in `defer`, where nothing may be awaited.
    func gantry(_ root: String, _ arguments: [String], parent: String = "gantry-cli-test") throws -> (status: Int32, output: String, error: String) {
        try runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": parent])
    }

    func json(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
    }

    @Test func containerCommandsEndToEnd() async throws {
        try await withTemporaryDirectory("cli-ctr") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["hostname", "tail", "tr"])
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            defer {
                for record in (try? json(try gantry(root, ["ps", "-a", "--format", "json"]).output)) ?? [] {
                    _ = try? gantry(root, ["rm", "-f", record["id"] as? String ?? ""])
                }
                removeCLICgroupParent("gantry-cli-test")
            }

            // Exit codes and output; the container stays, stopped.
            let ran = try await gantry(root, ["run", "--name", "once", "-e", "WHO=you", "-w", "/tmp", "bb:1", "sh", "-c", "echo hi $WHO; pwd; echo oops >&2; exit 3"])
            #expect(ran.status == 3)
            #expect(ran.output == "hi you\n/tmp\n")
            #expect(ran.error == "oops\n")
            #expect(try await gantry(root, ["logs", "once"]).output == "hi you\n/tmp\n")
            let once = try json(try await gantry(root, ["inspect", "once", "--format", "json"]).output).first
            #expect(once?["status"] as? String == "stopped")
            #expect(once?["exitCode"] as? Int == 3)
            #expect((once?["startedAt"] as? String)?.contains(".") == true)

            // 137 after an OOM kill, reported as such.
            let oom = try await gantry(root, ["run", "--rm", "--memory", "16m", "--memory-swap", "16m", "bb:1", "tail", "/dev/zero"])
            #expect(oom.status == 137)
            #expect(oom.error.contains("oomKilled"))

            // Input, and --rm.
            let piped = try await runWithStatus(binary, ["--root", root, "run", "--rm", "-i", "bb:1", "tr", "a-z", "A-Z"], input: Data("shout\n".utf8),
                                           environment: ["GANTRY_CGROUP_PARENT": "gantry-cli-test"])
            #expect(piped.output == "SHOUT\n")

            // In the background, across processes: ps, exec, pause, stats, stop.
            let started = try await gantry(root, ["run", "-d", "--name", "bg", "--pids", "16", "bb:1", "sh", "-c", "echo started; sleep 60"])
            #expect(started.status == 0, "\(started.error)")
            #expect(started.output.trimmingCharacters(in: .whitespacesAndNewlines).count == 64)
            let listed = try json(try await gantry(root, ["ps", "--format", "json"]).output)
            #expect(listed.map { $0["name"] as? String } == ["bg"])
            #expect(try await gantry(root, ["exec", "bg", "sh", "-c", "echo inside; exit 4"]) == (4, "inside\n", ""))
            #expect(try await gantry(root, ["pause", "bg"]).status == 0)
            #expect(try json(try await gantry(root, ["ps", "--format", "json"]).output).first?["status"] as? String == "paused")
            #expect(try await gantry(root, ["unpause", "bg"]).status == 0)
            let stats = try await gantry(root, ["stats", "bg", "--format", "json"])
            #expect(stats.output.contains("\"pidsLimit\" : 16"))
            #expect(try await gantry(root, ["kill", "-s", "USR1", "bg"]).status == 0)
            let rmRunning = try await gantry(root, ["rm", "bg"])
            #expect(rmRunning.status != 0 && rmRunning.error.contains("running"))
            #expect(try await gantry(root, ["stop", "-t", "200ms", "bg"]).status == 0)
            let bg = try json(try await gantry(root, ["inspect", "bg"]).output).first
            #expect(bg?["reason"] as? String == "stopped")
            #expect(try await gantry(root, ["logs", "bg"]).output == "started\n")
            #expect(try await gantry(root, ["rm", "bg", "once"]).status == 0)
            #expect(try json(try await gantry(root, ["ps", "-a", "--format", "json"]).output).isEmpty)

            // Errors name what is wrong.
            let missing = try await gantry(root, ["inspect", "nothing-here"])
            #expect(missing.status != 0 && missing.error.contains("nothing-here"))
            let badCap = try await gantry(root, ["run", "--cap-add", "NOT_A_CAP", "bb:1", "true"])
            #expect(badCap.status != 0 && badCap.error.contains("NOT_A_CAP"))
        }
    }

    @Test func networkVolumeAndPodCommandsEndToEnd() async throws {
        try await withTemporaryDirectory("cli-net") { dir in
            let root = dir + "/state"
            let parent = "gantry-cli-net"
            defer { removeCLICgroupParent(parent) }
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            #expect(try await gantry(root, ["network", "create", "lan", "--subnet", "10.211.0.0/24"]).status == 0)
            #expect(try await gantry(root, ["volume", "create", "notes"]).status == 0)
            #expect(try await gantry(root, ["pod", "create", "duo", "--network", "lan"]).status == 0)

            // A volume written through --mount, read back through -v, in a pod on the network.
            let write = try await gantry(root, ["run", "--rm", "--pod", "duo", "--mount", "type=volume,source=notes,target=/notes", "bb:1",
                                          "sh", "-c", "hostname > /notes/host; cat /etc/hosts"], parent: parent)
            #expect(write.status == 0, "\(write.error)")
            #expect(write.output.contains("10.211.0.2\tduo"), "\(write.output)")
            let read = try await gantry(root, ["run", "--rm", "-v", "notes:/notes:ro", "bb:1", "cat", "/notes/host"], parent: parent)
            #expect(read.output == "duo\n")

            let networks = try json(try await gantry(root, ["network", "ls", "--format", "json"]).output)
            #expect(networks.first?["subnet"] as? String == "10.211.0.0/24")
            let pods = try json(try await gantry(root, ["pod", "inspect", "duo"]).output)
            #expect(pods.first?["ipAddress"] as? String == "10.211.0.2")
            let volumes = try json(try await gantry(root, ["volume", "ls", "--format", "json"]).output)
            #expect(volumes.map { $0["name"] as? String } == ["notes"])

            #expect(try await gantry(root, ["network", "rm", "lan"]).status != 0, "the pod still uses it")
            #expect(try await gantry(root, ["pod", "rm", "duo"]).status == 0)
            #expect(try await gantry(root, ["network", "rm", "lan"]).status == 0)
            #expect(try await gantry(root, ["volume", "rm", "notes"]).status == 0)
            #expect(try await gantry(root, ["volume", "prune"]).output.isEmpty)
        }
    }

    @Test func containersDieWithTheirProcessAndAreCleanedUp() async throws {
        try await withTemporaryDirectory("cli-crash") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            // A `gantry run` killed with SIGKILL while its container runs,
            // on a bridge network with a published port.
            let process = try ChildProcess(binary, ["--root", root, "run", "--name", "doomed", "--network", "bridge", "-p", "0:80", "bb:1", "sleep", "600"],
                                           environment: ["GANTRY_CGROUP_PARENT": "gantry-cli-crash"], stdout: .null)
            var pid: Int?
            // Up to 30 s: a loaded machine starts processes slowly.
            for _ in 0 ..< 600 where pid == nil {
                try await Task.sleep(for: .milliseconds(50))
                let id = try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/containers/names/doomed")
                let state = id.flatMap { try? String(contentsOfFile: "\(root)/containers/\($0)/state.json", encoding: .utf8) }
                if let state, let range = state.range(of: #""pid":(\d+)"#, options: .regularExpression) {
                    pid = Int(state[range].split(separator: ":")[1])
                }
            }
            let containerPid = try #require(pid)
            let id = try FileManager.default.destinationOfSymbolicLink(atPath: root + "/containers/names/doomed")
            let veth = "gv-" + id.prefix(12)
            #expect(try await run("ip", ["-o", "link"]).contains(veth))
            #expect(try await run("nft", ["list", "table", "ip", "gantry"]).contains("gantry container \(id.prefix(12))"))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // The kernel kills the container with its process.
            for _ in 0 ..< 1500 where kill(pid_t(containerPid), 0) == 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(kill(pid_t(containerPid), 0) != 0)
            // The next open of the state root removes what was left.
            let listed = try await gantry(root, ["ps", "-a", "--format", "json"], parent: "gantry-cli-crash")
            #expect(try json(listed.output).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: root + "/containers/names/doomed"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/holds").isEmpty)
            let cgroups = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/memory/gantry-cli-crash")) ?? []
            #expect(!cgroups.contains { $0.count == 64 })
            removeCLICgroupParent("gantry-cli-crash")
            // Nor anything of its network: veth, rules, lease, port claim.
            #expect(try await !run("ip", ["-o", "link"]).contains(veth))
            #expect(try await !run("nft", ["list", "table", "ip", "gantry"]).contains("gantry container \(id.prefix(12))"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/networks/gantry/leases").isEmpty)
            let claims = (try? FileManager.default.contentsOfDirectory(atPath: "/run/gantry/ports")) ?? []
            #expect(!claims.contains { (try? String(contentsOfFile: "/run/gantry/ports/" + $0, encoding: .utf8))?.hasSuffix(id) == true })
            // The default network stays until removed, and then its bridge goes.
            let network = try json(try await gantry(root, ["network", "inspect", "gantry"]).output).first?["bridge"] as? String
            #expect(try await gantry(root, ["network", "rm", "gantry"]).status == 0)
            #expect(try await !run("ip", ["-o", "link"]).contains(try #require(network)))
        }
    }
}
