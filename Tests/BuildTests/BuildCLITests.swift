import Foundation
import GantryTestSupport
import Testing

/// `gantry build` as users run it: a process of its own per build.
@Suite(.requiresRoot) struct BuildCLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ root: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try await runWithStatus(binary, ["--root", root] + arguments,
                                       environment: ["GANTRY_CGROUP_PARENT": "gantry-build-cli-test"].merging(environment) { $1 })
    }

    /// A state root with a busybox image `bb:1`, and a context with `files`.
    func prepare(_ dir: String, applets: [String], files: [String: String]) async throws -> (root: String, context: String) {
        let root = dir + "/state"
        try makeBusyboxRootfs(dir + "/rootfs", applets: applets)
        #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
        let context = dir + "/context"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        for (name, content) in files { try content.write(toFile: context + "/" + name, atomically: false, encoding: .utf8) }
        return (root, context)
    }

    @Test func buildTagRunAndWriteALayoutFromTheCommandLine() async throws {
        try await withTemporaryDirectory("cli-build") { dir in
            let (root, context) = try await prepare(dir, applets: ["head"], files: ["greeting.txt": "hello\n"])
            defer { removeCLICgroupParent("gantry-build-cli-test") }
            try """
            FROM bb:1
            ARG WHO=nobody
            COPY greeting.txt /srv/
            RUN echo "for $WHO" >> /srv/greeting.txt
            CMD ["cat", "/srv/greeting.txt"]
            """.write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)

            let built = try await gantry(root, ["build", "-t", "app:1", "--build-arg", "WHO=you", "--output", "type=oci,dest=\(dir)/layout,tag=v1", context],
                                         environment: ["SOURCE_DATE_EPOCH": "1700000000"])
            #expect(built.status == 0, "\(built.error)")
            #expect(built.output.contains("[0 4/5] RUN echo"), "\(built.output)")
            #expect(built.output.contains("built sha256:") && built.output.contains("as app:1"), "\(built.output)")
            #expect(try await gantry(root, ["run", "--rm", "app:1"]).output == "hello\nfor you\n")
            // Another program than the image's, as users try a built image.
            let other = try await gantry(root, ["run", "--rm", "--entrypoint", "head", "app:1", "-n", "1", "/srv/greeting.txt"])
            #expect(other.output == "hello\n", "\(other)")

            // The layout is one skopeo reads, with the image's configuration.
            let inspected = try await runWithStatus("skopeo", ["inspect", "--config", "oci:\(dir)/layout:v1"])
            #expect(inspected.status == 0, "\(inspected.error)")
            #expect(inspected.output.contains("\"created\": \"2023-11-14T22:13:20Z\""), "\(inspected.output)")

            // Again: every step cached, the same digest; -q prints only it.
            let again = try await gantry(root, ["build", "-q", "-t", "app:1", "--build-arg", "WHO=you", context], environment: ["SOURCE_DATE_EPOCH": "1700000000"])
            #expect(again.status == 0 && built.output.contains(again.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(again.output)")

            // Bad input is named: a missing file, a bad instruction.
            try "FROM bb:1\nCOPY nowhere.txt /\n".write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
            let missing = try await gantry(root, ["build", context])
            #expect(missing.status == 1 && missing.error.contains("Containerfile:2") && missing.error.contains("nowhere.txt"), "\(missing.error)")
            try "FROM bb:1\nFETCH something\n".write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
            let unknown = try await gantry(root, ["build", context])
            #expect(unknown.status == 1 && unknown.error.contains("FETCH"), "\(unknown.error)")
            let cases: [(dockerfile: String, arguments: [String], expected: [String])] = [
                ("ARG BASE\nFROM ${BASE}\n", [], ["Containerfile:2", "expands to nothing"]),
                ("FROM bb:1 AS base\nFROM base\nCOPY --from=Bsae /a /b\n", [], ["Containerfile:3", "not one of the stages before this one (base)"]),
                ("FROM bb:1\nUSER ghost\nRUN true\n", [], ["Containerfile:3", "ghost"]),
                ("FROM bb:1\nRUN true\n", ["--secret", "id=token,src=\(dir)/missing"], ["secret token", "\(dir)/missing"]),
                ("FROM bb:1\nENV FOO\n", [], ["Containerfile:2", "FOO has no value"]),
                ("FROM bb:1\nENV A=${B:?required}\n", [], ["Containerfile:2", "B: required"]),
            ]
            for (dockerfile, arguments, expected) in cases {
                try dockerfile.write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
                let failed = try await gantry(root, ["build"] + arguments + [context])
                #expect(failed.status == 1 && expected.allSatisfy { failed.error.contains($0) }, "\(dockerfile): \(failed.error)")
            }
            // A step is announced before its output, a failing one too.
            try "FROM bb:1\nRUN echo first-output\nRUN echo second-output; exit 4\n".write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
            let ordered = try await gantry(root, ["build", "--no-cache", context])
            let lines = ordered.output.components(separatedBy: "\n")
            let firstStep = lines.firstIndex { $0.hasPrefix("[0 2/3] RUN") }, firstOutput = lines.firstIndex(of: "first-output")
            let secondStep = lines.firstIndex { $0.hasPrefix("[0 3/3] RUN") }, secondOutput = lines.firstIndex(of: "second-output")
            #expect(firstStep != nil && secondStep != nil && firstStep! < firstOutput! && secondStep! < secondOutput!, "\(ordered.output)")
            #expect(try await gantry(root, ["ps", "-a", "-q"]).output.isEmpty)

            // Another platform: files and configuration, but no program of it runs here.
            try "FROM scratch\nCOPY greeting.txt /\n".write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
            let arm = try await gantry(root, ["build", "--platform", "linux/arm64", "-t", "arm:1", context])
            #expect(arm.status == 0, "\(arm.error)")
            #expect(try await gantry(root, ["image", "inspect", "arm:1"]).output.contains("arm64"))
            try "FROM scratch\nCOPY greeting.txt /\nRUN true\n".write(toFile: context + "/Containerfile", atomically: false, encoding: .utf8)
            let foreign = try await gantry(root, ["build", "--platform", "linux/arm64", context])
            #expect(foreign.status == 1 && foreign.error.contains("Containerfile:3") && foreign.error.contains("linux/arm64"), "\(foreign.error)")
            let malformed = try await gantry(root, ["build", "--platform", "arm64", context])
            #expect(malformed.status != 0 && malformed.error.contains("os/arch"), "\(malformed.error)")
            #expect(try await gantry(root, ["image", "prune", "--build-cache"]).status == 0)
        }
    }

    @Test func pushTheImageAndItsBuildCacheAndBuildElsewhereFromIt() async throws {
        try await withTemporaryDirectory("cli-build-push") { dir in
            defer { removeCLICgroupParent("gantry-build-cli-test") }
            try await withLocalRegistry(dir) { registry in
                try makeBusyboxRootfs(dir + "/rootfs")
                let base = "\(registry.host)/base/bb:1"
                let (here, there) = (dir + "/here", dir + "/there")
                #expect(try await gantry(here, ["image", "import-rootfs", dir + "/rootfs", "--name", base]).status == 0)
                #expect(try await gantry(here, ["image", "push", base, base]).status == 0)
                let context = dir + "/context"
                try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
                try "FROM \(base)\nRUN cat /proc/sys/kernel/random/uuid > /id\nCMD [\"cat\", \"/id\"]\n"
                    .write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
                let image = "\(registry.host)/app/made:1"
                let cache = "\(registry.host)/app/cache:main"
                let pushed = try await gantry(here, ["build", "-t", image, "--push", "--cache-to", "type=registry,ref=\(cache),mode=max", context])
                #expect(pushed.status == 0, "\(pushed.error)")
                #expect(pushed.error.contains("pushed the build cache"), "\(pushed.error)")
                // The image went to the registry whole, as skopeo reads it.
                let inspected = try await runWithStatus("skopeo", ["inspect", "--tls-verify=false", "docker://\(image)"])
                #expect(inspected.status == 0 && inspected.output.contains("\"Layers\""), "\(inspected.error)")
                let id = try await gantry(here, ["run", "--rm", image]).output

                // Another state root pulls the base, and takes the RUN step from the registry.
                let elsewhere = try await gantry(there, ["build", "-t", "copy:1", "--cache-from", cache, context])
                #expect(elsewhere.status == 0, "\(elsewhere.error)")
                #expect(elsewhere.output.contains("CACHED RUN"), "\(elsewhere.output)")
                #expect(try await gantry(there, ["run", "--rm", "copy:1"]).output == id)

                // Bad specifications are named.
                let local = try await gantry(there, ["build", "--cache-to", "type=local,dest=\(dir)/x", context])
                #expect(local.status != 0 && local.error.contains("--cache-to type=local"), "\(local.error)")
                let mode = try await gantry(there, ["build", "--cache-to", "ref=\(cache),mode=all", context])
                #expect(mode.status != 0 && mode.error.contains("mode is min or max"), "\(mode.error)")
            }
        }
    }

    @Test func aBuildKilledAtAnyMomentLeavesNothingBehindAndTheNextOneSucceeds() async throws {
        try await withTemporaryDirectory("cli-build-kill") { dir in
            let root = dir + "/state"
            defer { removeCLICgroupParent("gantry-build-cli-test") }
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["seq", "xargs", "touch"])
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            let context = dir + "/context"
            for index in 0 ..< 60 {
                let path = context + "/files/\(index % 6)/file-\(index).txt"
                try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try String(repeating: "\(index)\n", count: 2000).write(toFile: path, atomically: false, encoding: .utf8)
            }
            try """
            FROM bb:1 AS side
            RUN seq 1 300 | xargs -n 1 -I N touch /side-N && sleep 0.2

            FROM bb:1
            COPY files /srv/files
            RUN seq 1 300 | xargs -n 1 -I N touch /made-N && sleep 0.3
            COPY --from=side /side-1 /side-1
            RUN rm -r /srv/files/0 && echo done > /done
            CMD ["cat", "/done"]
            """.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let environment = ProcessInfo.processInfo.environment.merging(["GANTRY_CGROUP_PARENT": "gantry-build-cli-test"]) { $1 }
            var generator = SystemRandomNumberGenerator()
            var kills = 0
            for round in 0 ..< 10 {
                // Each round with a cache of its own or none, so that steps run.
                let arguments = ["--root", root, "build", "-t", "killed:\(round)"] + (round.isMultiple(of: 2) ? ["--no-cache"] : []) + [context]
                if try killAtRandom(binary, arguments, environment: environment, window: 800_000, using: &generator) { kills += 1 }
                // Nothing of the killed build runs on, or is mounted, once the next command has opened the root.
                #expect(try await gantry(root, ["ps", "-a", "-q"]).output.isEmpty)
                #expect(mounts(under: root).isEmpty, "\(mounts(under: root))")
            }
            #expect(kills > 0)
            let check = try await gantry(root, ["check"])
            #expect(check.status == 0, "\(check.output)\(check.error)")
            let final = try await gantry(root, ["build", "-t", "app:1", context])
            #expect(final.status == 0, "\(final.error)")
            #expect(try await gantry(root, ["run", "--rm", "app:1"]).output == "done\n")
            let listed = try await gantry(root, ["run", "--rm", "app:1", "ls", "/srv/files"])
            #expect(listed.output == "1\n2\n3\n4\n5\n", "\(listed)")
            // The killed builds' scratch space went with the next build.
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: root + "/build-staging")) ?? []).isEmpty)
            #expect(try await gantry(root, ["ps", "-a", "-q"]).output.isEmpty)
            #expect(try await gantry(root, ["image", "prune", "--build-cache"]).status == 0)
        }
    }

    @Test(.enabled(if: ["/usr/bin/crun", "/usr/bin/podman", "/usr/bin/umoci", "/usr/bin/skopeo"].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) },
                   "needs crun, podman, umoci and skopeo (scripts/setup.sh installs them)"))
    func anImageBuiltHereRunsUnderCrunAndPodmanAndCrossesARegistryUnchanged() async throws {
        try await withTemporaryDirectory("cli-build-peers") { dir in
            let (root, context) = try await prepare(dir, applets: ["pwd", "id"], files: ["note.txt": "from the context\n"])
            defer { removeCLICgroupParent("gantry-build-cli-test") }
            try """
            FROM bb:1
            ENV WHO=peers
            WORKDIR /srv/app
            COPY --chown=1:1 note.txt ./
            RUN echo built > made
            CMD ["sh", "-c", "cat made note.txt; echo $WHO; pwd; stat -c %u:%g note.txt"]
            """.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let built = try await gantry(root, ["build", "-q", "-t", "peers:1", "--output", "type=oci,dest=\(dir)/layout,tag=v1", context])
            #expect(built.status == 0, "\(built.error)")
            let expected = "built\nfrom the context\npeers\n/srv/app\n1:1\n"

            // crun, on a bundle umoci unpacks from the layout (where the host is hybrid, seeing the v1 controllers only).
            _ = try await run("/usr/bin/umoci", ["unpack", "--image", "\(dir)/layout:v1", dir + "/bundle"])
            let configPath = dir + "/bundle/config.json"
            var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as? [String: Any])
            var process = try #require(config["process"] as? [String: Any])
            process["terminal"] = false
            config["process"] = process
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
            let crun = "/usr/bin/crun --root \(dir)/crun run -b \(dir)/bundle gt-build-\(UUID().uuidString.prefix(8))"
            let hybrid = try readText("/proc/self/mountinfo").contains(" /sys/fs/cgroup/unified ")
            let crunRun = try await runWithStatus("/usr/bin/unshare", ["-m", "sh", "-c", (hybrid ? "umount -l /sys/fs/cgroup/unified && " : "") + crun])
            #expect(crunRun.status == 0 && crunRun.output == expected, "\(crunRun)")

            // podman, from the layout (its default limits lowered to what this
            // host allows), under a cgroup parent of its own.
            let podmanParent = "gantry-build-podman-\(UUID().uuidString.prefix(8).lowercased())"
            defer { removeCLICgroupParent(podmanParent, children: true) }
            let podman = ["--root", dir + "/podman", "--runroot", dir + "/podman-run", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
            let podmanRun = try await runWithStatus("/usr/bin/podman", podman + ["run", "--rm", "--network", "none", "--cgroup-parent", "/" + podmanParent,
                                                                                "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                                                                                "oci:\(dir)/layout:v1"])
            #expect(podmanRun.status == 0 && podmanRun.output == expected, "\(podmanRun)")
            _ = try? await runWithStatus("/usr/bin/podman", podman + ["rmi", "-af"])

            // Through a registry: skopeo reads the very manifest and configuration Gantry wrote.
            try await withLocalRegistry(dir) { registry in
                let reference = "\(registry.host)/peers/app:1"
                #expect(try await gantry(root, ["image", "push", "peers:1", reference]).status == 0)
                let digest = built.output.trimmingCharacters(in: .whitespacesAndNewlines)
                let inspected = try await runWithStatus("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "docker://\(reference)"])
                #expect(inspected.output.contains("\"Digest\": \"\(digest)\""), "\(digest): \(inspected)")
                let copied = try await runWithStatus("/usr/bin/skopeo", ["copy", "-q", "--src-tls-verify=false", "docker://\(reference)", "oci:\(dir)/copied:1"])
                #expect(copied.status == 0, "\(copied.error)")
                let ours = try readText(dir + "/layout/index.json"), theirs = try readText(dir + "/copied/index.json")
                #expect(ours.contains(digest) && theirs.contains(digest), "\(ours)\n\(theirs)")
            }
        }
    }
}
