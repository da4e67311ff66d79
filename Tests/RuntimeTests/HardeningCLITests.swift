import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

/// The command line given what careless users type: each mistake is a
/// clear error and a non-zero exit, never a crash, and a failure of the
/// container is never reported as success.
@Suite(.requiresRoot) struct HardeningCLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
    static let parent = "gantry-cli-hardening"

    func gantry(_ root: String, _ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try await runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": Self.parent])
    }

    func cleanUp(_ root: String) throws {
        for id in (try? FileManager.default.contentsOfDirectory(atPath: root + "/containers"))?.filter({ $0.count == 64 }) ?? [] {
            _ = try? runWithStatus(binary, ["--root", root, "rm", "-f", id], environment: ["GANTRY_CGROUP_PARENT": Self.parent])
        }
        _ = try? runWithStatus(binary, ["--root", root, "network", "rm", Networks.defaultName], environment: ["GANTRY_CGROUP_PARENT": Self.parent])
        removeCLICgroupParent(Self.parent)
    }

    /// A state root (passed to `body`) with busybox imported as `bb:1`,
    /// emptied afterwards.
    func withImage(_ label: String, applets: [String] = [], _ body: (_ root: String, _ dir: String) async throws -> Void) async throws {
        try await withTemporaryDirectory(label) { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: applets)
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            defer { try? cleanUp(root) }
            try await body(root, dir)
        }
    }

    @Test func badValuesAndContradictionsAreRefusedWithoutACrash() async throws {
        try await withImage("cli-bad-values") { root, dir in
            let port = try #require(Networks.freeHostPort(.tcp))
            let cases: [([String], String)] = [
                (["--cpus", "nan"], "--cpus nan"),
                (["--cpus", "inf"], "--cpus inf"),
                (["--cpus", "1e300"], "CPUs of this host"),
                (["--memory", "99999999999999g"], "more bytes than any host has"),
                (["--memory", "nan"], "is not a size"),
                (["--timeout", "0s"], "timeout"),
                (["--timeout", "1e30h"], "is not a duration"),
                (["--network", "none", "-p", "\(port):80"], "--network none"),
                (["--network", "host", "-p", "\(port):80"], "--network host"),
                (["-v", dir + ":/"], "root file system"),
                (["--hostname", String(repeating: "h", count: 65)], "host name"),
                (["--tmpfs", "/proc"], "/proc"),
            ]
            for (options, message) in cases {
                let result = try await gantry(root, ["run", "--rm"] + options + ["bb:1", "true"])
                // 1 or 64 (a usage error); a crash would end by a signal (128+).
                #expect(result.status == 1 || result.status == 64, "\(options): exit \(result.status)")
                #expect(result.error.contains(message), "\(options): \(result.error)")
            }
            // Nothing was made for them: no container, and no default network for the -p.
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: root + "/containers")) ?? []).filter { $0.count == 64 }.isEmpty)
            #expect(try await gantry(root, ["network", "ls", "--format", "json"]).output.contains("\"\(Networks.defaultName)\"") == false)
        }
    }

    @Test func aFailureTheProgramDidNotReportStillFailsTheRun() async throws {
        try await withImage("cli-oom-child", applets: ["tail"]) { root, dir in
            // The OOM killer takes the child; the shell goes on and exits 0.
            let oom = try await gantry(root, ["run", "--rm", "--memory", "16m", "--memory-swap", "16m", "bb:1", "sh", "-c", "tail /dev/zero; exit 0"])
            #expect(oom.error.contains("oomKilled"), "\(oom.error)")
            #expect(oom.status == 137)
        }
    }

    @Test func aDetachedContainerKilledGivesItsPublishedPortToTheNext() async throws {
        try await withImage("cli-port-reuse") { root, dir in
            let port = try #require(Networks.freeHostPort(.tcp))
            let first = try await gantry(root, ["run", "-d", "--name", "first", "-p", "\(port):80", "bb:1", "sleep", "600"])
            #expect(first.status == 0, "\(first.error)")
            #expect(try await gantry(root, ["kill", "first"]).status == 0)
            let second = try await gantry(root, ["run", "-d", "--name", "second", "-p", "\(port):80", "bb:1", "sleep", "600"])
            #expect(second.status == 0, "the port stayed with the killed container: \(second.error)")
            let stopped = try await gantry(root, ["inspect", "first"])
            #expect(stopped.output.contains("\"status\" : \"stopped\""), "\(stopped.output)")
            #expect(!stopped.output.contains("\"ports\""), "a stopped container reports no published ports: \(stopped.output)")
            #expect(try await gantry(root, ["rm", "-f", "first", "second"]).status == 0)
        }
    }

    @Test func anEmptyPortClaimLeftByAKillDoesNotHoldThePort() async throws {
        try await withImage("cli-port-empty-claim") { root, _ in
            let port = try #require(Networks.freeHostPort(.tcp))
            // What a process killed between creating a claim and writing it left.
            try Sys.makeDirectories(Networks.portClaims, mode: 0o700)
            let claim = Networks.portClaims + "/tcp-\(port)"
            #expect(FileManager.default.createFile(atPath: claim, contents: Data()))
            defer { unlink(claim) }
            let run = try await gantry(root, ["run", "-d", "--name", "taker", "-p", "\(port):80", "bb:1", "sleep", "600"])
            #expect(run.status == 0, "an empty claim held the port: \(run.error)")
            #expect(try String(contentsOfFile: claim, encoding: .utf8).hasPrefix("/"))
            #expect(try await gantry(root, ["rm", "-f", "taker"]).status == 0)
        }
    }

    @Test func aDetachedContainersExitIsKnownToLaterCommands() async throws {
        try await withImage("cli-detached-exit") { root, _ in
            #expect(try await gantry(root, ["run", "-d", "--name", "three", "bb:1", "sh", "-c", "sleep 0.5; exit 3"]).status == 0)
            #expect(try await gantry(root, ["run", "-d", "--name", "nine", "bb:1", "sh", "-c", "sleep 0.5; kill -9 $$"]).status == 0)
            // logs -f follows to the end, which it learns with the exit.
            #expect(try await gantry(root, ["logs", "-f", "three"]).status == 0)
            for _ in 0 ..< 200 {
                let listed = try await gantry(root, ["ps", "-a", "--format", "json"]).output
                if listed.components(separatedBy: "\"stopped\"").count == 3 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let three = try await gantry(root, ["inspect", "three"]).output
            #expect(three.contains("\"exitCode\" : 3") && three.contains("\"reason\" : \"exited\""), "\(three)")
            let nine = try await gantry(root, ["inspect", "nine"]).output
            #expect(nine.contains("\"signal\" : 9") && nine.contains("\"reason\" : \"exited\""), "\(nine)")
            // The init stays unseen: a signal the program handles reaches it, and
            // one it does not handle is ignored, as for a namespace's first process.
            #expect(try await gantry(root, ["run", "-d", "--name", "trap", "bb:1", "sh", "-c", "trap 'exit 7' TERM; sleep 30 & wait"]).status == 0)
            #expect(try await gantry(root, ["kill", "-s", "USR1", "trap"]).status == 0)
            #expect(try await gantry(root, ["stop", "-t", "20s", "trap"]).status == 0)
            let trapped = try await gantry(root, ["inspect", "trap"]).output
            #expect(trapped.contains("\"exitCode\" : 7") && trapped.contains("\"reason\" : \"stopped\""), "\(trapped)")
            #expect(try await gantry(root, ["rm", "three", "nine", "trap"]).status == 0)
        }
    }

    @Test func aDetachedContainersOutputIsRotatedAtItsLimit() async throws {
        try await withImage("cli-detached-log", applets: ["yes", "head"]) { root, _ in
            // 20 MB of output, kept in two files of at most 1 MiB.
            let started = try await gantry(root, ["run", "-d", "--name", "chatty", "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
                                                  "bb:1", "sh", "-c", "yes | head -c 20000000; echo end"])
            #expect(started.status == 0, "\(started.error)")
            #expect(try await gantry(root, ["logs", "-f", "chatty"]).status == 0)
            let id = started.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let directory = root + "/containers/" + id
            var total = 0
            for name in try FileManager.default.contentsOfDirectory(atPath: directory) where name.hasPrefix("stdout.log") {
                total += try #require(try FileManager.default.attributesOfItem(atPath: directory + "/" + name)[.size] as? Int)
            }
            #expect(total <= 2 * (1 << 20) + (64 << 10), "the log holds \(total) bytes")
            let logs = try await gantry(root, ["logs", "chatty"]).output
            #expect(logs.hasSuffix("y\nend\n"), "the newest output is kept: \(logs.suffix(20))")
            #expect(logs.count >= 1 << 20)
            let refused = try await gantry(root, ["run", "--rm", "--log-opt", "max-file=0", "bb:1", "true"])
            #expect(refused.status != 0 && refused.error.contains("max-file"))
            #expect(try await gantry(root, ["rm", "chatty"]).status == 0)
        }
    }

    @Test func aContainerWithADamagedRecordIsReportedAndRemovedOnlyWhenForced() async throws {
        try await withImage("cli-damaged-record") { root, _ in
            let started = try await gantry(root, ["run", "-d", "--name", "hurt", "bb:1", "sleep", "600"])
            #expect(started.status == 0, "\(started.error)")
            let id = started.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let stateFile = root + "/containers/" + id + "/state.json"
            try Data("{\"id\": \"trunc".utf8).write(to: URL(fileURLWithPath: stateFile))
            // Not hidden: ps names it, the file and its running process.
            let listed = try await gantry(root, ["ps", "-a"])
            #expect(listed.status == 0)
            #expect(listed.error.contains("hurt") && listed.error.contains(stateFile) && !listed.error.contains(" 0 processes"), "\(listed.error)")
            // Nothing is deleted on that account; a forced removal takes it all.
            let refused = try await gantry(root, ["rm", "hurt"])
            #expect(refused.status != 0 && refused.error.contains("rm -f hurt"), "\(refused.error)")
            #expect(FileManager.default.fileExists(atPath: stateFile))
            #expect(try await gantry(root, ["rm", "-f", "hurt"]).status == 0)
            #expect(!FileManager.default.fileExists(atPath: root + "/containers/" + id))
            #expect(try await gantry(root, ["ps", "-a"]).error.isEmpty)
            let again = try await gantry(root, ["run", "-d", "--name", "hurt", "bb:1", "true"])
            #expect(again.status == 0, "the name is free again: \(again.error)")
            _ = try await gantry(root, ["rm", "-f", "hurt"])
        }
    }

    @Test func checkFindsDamagedRecordsAndRepairRebuildsThemFromTheKernel() async throws {
        try await withImage("cli-check") { root, _ in
            #expect(try await gantry(root, ["network", "create", "mend"]).status == 0)
            #expect(try await gantry(root, ["volume", "create", "keep"]).status == 0)
            defer { _ = try? runWithStatus(binary, ["--root", root, "network", "rm", "--force", "mend"], environment: ["GANTRY_CGROUP_PARENT": Self.parent]) }
            let clean = try await gantry(root, ["check"])
            #expect(clean.status == 0 && clean.output.contains("nothing is damaged"), "\(clean.output)\(clean.error)")
            try Data("[".utf8).write(to: URL(fileURLWithPath: root + "/networks/mend/network.json"))
            unlink(root + "/volumes/keep/volume.json")
            // Listed with a warning, not hidden; check names both and fails.
            #expect(try await gantry(root, ["network", "ls"]).error.contains("network mend is not listed"))
            #expect(try await gantry(root, ["volume", "ls"]).error.contains("volume keep is not listed"))
            let found = try await gantry(root, ["check"])
            #expect(found.status == 1, "\(found.output)\(found.error)")
            #expect(found.output.contains("network mend:") && found.output.contains("volume keep:") && found.output.contains("2 damaged"), "\(found.output)")
            let repaired = try await gantry(root, ["check", "--repair"])
            #expect(repaired.status == 0 && repaired.output.contains("rebuilt its record from its bridge"), "\(repaired.output)\(repaired.error)")
            #expect(try await gantry(root, ["network", "ls"]).output.contains("mend"))
            #expect(try await gantry(root, ["volume", "ls"]).output.contains("keep"))
            #expect(try await gantry(root, ["check"]).status == 0)
            #expect(try await gantry(root, ["network", "rm", "mend"]).status == 0)
        }
    }

    @Test func everyStateFileDamagedInTurnIsReportedAndNothingIsLost() async throws {
        try await withImage("cli-damage-each") { root, _ in
            let port = try #require(Networks.freeHostPort(.tcp))
            #expect(try await gantry(root, ["network", "create", "each"]).status == 0)
            #expect(try await gantry(root, ["volume", "create", "data"]).status == 0)
            let kept = try await gantry(root, ["run", "-d", "--name", "kept", "--network", "each", "-p", "\(port):80", "-v", "data:/data", "bb:1",
                                             "sh", "-c", "echo precious > /data/file; exec sleep 600"])
            #expect(kept.status == 0, "\(kept.error)")
            #expect(try await gantry(root, ["run", "--name", "ended", "bb:1", "true"]).status == 0)
            defer { _ = try? runWithStatus(binary, ["--root", root, "network", "rm", "--force", "each"], environment: ["GANTRY_CGROUP_PARENT": Self.parent]) }
            let listings = [["ps", "-a", "--format", "json"], ["network", "ls", "--format", "json"], ["volume", "ls", "--format", "json"], ["image", "ls", "--format", "json"]]
            func snapshot() async throws -> [String] {
                var outputs: [String] = []
                for listing in listings { outputs.append(try await gantry(root, listing).output) }
                return outputs
            }
            let before = try await snapshot()

            // Every file of the state root that Gantry reads back, but the
            // content it only stores (blobs, unpacked layers, containers' file
            // systems and logs) and namespaces bound onto files.
            let skipped = ["blobs/", "snapshots/", "/rootfs/", "/upper/", "/work/", "/_data/", ".log", "/lock", "-shm", "/netns", "/ipcns", "/utsns"]
            let files = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { path in
                var info = stat()
                return lstat(root + "/" + path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && !skipped.contains { path.contains($0) }
            }.sorted()
            #expect(files.count >= 8, "\(files)")
            var damagedKinds: Set<String> = []
            for file in files {
                let path = root + "/" + file
                // SQLite removes its journal when it is done with it.
                guard let original = FileManager.default.contents(atPath: path) else { continue }
                for damage in [Data(original.prefix(original.count / 2)), Data(repeating: 0x7B, count: 3)] {
                    try damage.write(to: URL(fileURLWithPath: path))
                    for command in listings + [["check"]] {
                        let result = try await gantry(root, command)
                        // Never a crash: success, one line of error, or what check found.
                        #expect(result.status == 0 || result.status == 1 && (result.error.hasPrefix("gantry: error: ") || command == ["check"]),
                                "\(file) damaged: \(command.joined(separator: " ")) exited \(result.status): \(result.error.prefix(400))")
                        if command == ["check"], result.status != 0 || !result.output.contains("nothing is damaged") {
                            damagedKinds.insert((file as NSString).lastPathComponent)
                        }
                    }
                    try original.write(to: URL(fileURLWithPath: path))
                }
                // Mended again, everything is as it was: nothing was deleted on that account.
                #expect(try await snapshot() == before, "after damaging \(file)")
            }
            print("damaged state: \(files.count) files damaged in turn, two ways each: \(files.map { ($0 as NSString).lastPathComponent }.sorted()); check reported \(damagedKinds.sorted())")
            let data = try await gantry(root, ["exec", "kept", "cat", "/data/file"])
            #expect(data.output == "precious\n")
            #expect(try await gantry(root, ["check"]).status == 0)
            _ = try await gantry(root, ["rm", "-f", "kept", "ended"])
        }
    }

    @Test func inputForAContainerThatStoppedReadingIsNoSignalToTheHost() async throws {
        try await withImage("cli-sigpipe", applets: ["head"]) { root, _ in
            // head reads ten bytes and ends; the rest of the megabyte meets a closed pipe.
            let input = Data(repeating: 0x61, count: 1 << 20)
            let result = try await runWithStatus(binary, ["--root", root, "run", "-i", "--rm", "bb:1", "head", "-c", "10"], input: input,
                                                 environment: ["GANTRY_CGROUP_PARENT": Self.parent])
            #expect(result.status == 0, "exit \(result.status): \(result.error)")
            #expect(result.output == String(repeating: "a", count: 10))
        }
    }

    @Test func theDemoHealsAServiceAndLeavesNothingBehind() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        let demo = try await runWithStatus(binary, ["demo"])
        #expect(demo.status == 0, "\(demo.output)\(demo.error)")
        #expect(demo.output.contains("worker reaches web by its name"), "\(demo.output)")
        #expect(demo.output.contains("replaced it") && demo.output.contains("answered \"hello from a Gantry container\" again"), "\(demo.output)")
        #expect(demo.output.contains("demo done in"))
        // Its bridge and the bridge's rules are gone, and its state root.
        let bridge = try #require(demo.output.split(separator: " ").first { $0.hasPrefix("gt-") }).description
        #expect(try RouteNetlink().link(bridge) == nil)
        #expect(!(try Firewall.listRules()).contains { $0.comment == "gantry network " + bridge.dropFirst(3) })
        let temporary = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("gantry-demo-") }
        #expect(temporary.isEmpty, "\(temporary)")
    }
}
