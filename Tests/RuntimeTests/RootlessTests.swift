import CGantrySystem
import Foundation
import Gantry
import GantryTestSupport
import OCIImage
import Synchronization
import Testing
@testable import Runtime

/// The fixtures root made for the ordinary users' tests, when it made them.
private let fixtures = ProcessInfo.processInfo.environment["GANTRY_ROOTLESS_FIXTURES"]

/// Root's side of the rootless tests: makes two ordinary users, one with
/// subordinate IDs and one without (as `useradd` gives them), an image whose
/// files have several owners, set-ID bits, a file capability, an extended
/// attribute and a device node (built with umoci, as root), and the listing
/// `umoci unpack` gives of it; then runs each user's suite as that user and
/// removes the users and everything they made.
@Suite(.requiresRoot, .serialized) struct RootlessHostTests {
    @Test func ordinaryUsersRunContainers() async throws {
        try await withTemporaryDirectory("rootless") { dir in
            chmod(dir, 0o755)
            try await makeFixtures(dir)
            let suffix = UUID().uuidString.prefix(6).lowercased()
            let ranged = "gantry-rl-\(suffix)", single = "gantry-rs-\(suffix)"
            _ = try await runWithStatus("/usr/sbin/useradd", ["-M", "-d", dir + "/home-" + ranged, "-s", "/bin/sh", ranged], check: true)
            defer { removeUser(ranged) }
            _ = try await runWithStatus("/usr/sbin/useradd", ["-M", "-d", dir + "/home-" + single, "-s", "/bin/sh",
                                                             "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", single], check: true)
            defer { removeUser(single) }
            let subuids = try readText("/etc/subuid")
            #expect(subuids.contains(ranged + ":") && !subuids.contains(single + ":"))

            for (user, suite, count) in [(ranged, "RootlessTests", "13 tests"), (single, "RootlessSingleMappingTests", "2 tests")] {
                let home = dir + "/home-" + user
                try FileManager.default.createDirectory(atPath: home + "/run", withIntermediateDirectories: true)
                // A tmpfs, as systemd gives a login session's run-time directory.
                _ = try await runWithStatus("/bin/mount", ["-t", "tmpfs", "-o", "mode=700,size=64m", "tmpfs", home + "/run"], check: true)
                defer { umount2(home + "/run", Int32(MNT_DETACH)) }
                _ = try await runWithStatus("/bin/chown", ["-R", user + ":" + user, home], check: true)
                let (status, report) = try await runTests(asUser: user, home: home, filter: suite + "/", environment: ["GANTRY_ROOTLESS_FIXTURES": dir])
                #expect(status == 0 && report.contains("Test run with \(count) in 1 suite passed") && !report.contains("() skipped"), "\(user): \(report)")
                // Nothing of the user's is left running.
                let left = try await processesLeft(of: user)
                #expect(left.isEmpty, "processes of \(user) left: \(left)")
                // Nor any run-time file (the base directory may stay).
                let runtimeLeft = try FileManager.default.subpathsOfDirectory(atPath: home + "/run").filter { $0 != "gantry" }
                #expect(runtimeLeft.isEmpty, "\(user) left in XDG_RUNTIME_DIR: \(runtimeLeft)")
            }
        }
    }

    /// Kills what a user left and removes the user (its subordinate IDs go too).
    private func removeUser(_ user: String) {
        _ = try? runWithStatus("/usr/bin/pkill", ["-KILL", "-u", user])
        _ = try? runWithStatus("/usr/sbin/userdel", [user])
    }

    /// `layout` (image `several:owners`), and `listing.txt`: `uid gid mode path` of every file but
    /// device nodes, as `umoci unpack` made them as root.
    private func makeFixtures(_ dir: String) async throws {
        let rootfs = dir + "/tree"
        try makeBusyboxRootfs(rootfs, applets: ["stat", "grep", "mkdir", "chown", "touch", "md5sum"])
        try write("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
                  to: rootfs + "/etc/passwd")
        try write("root:x:0:\ndaemon:x:1:\nshadow:x:42:\nalice:x:1000:\nnogroup:x:65534:\n", to: rootfs + "/etc/group")
        let script = """
            set -e
            cd \(rootfs)
            echo secret > etc/shadow && chown 0:42 etc/shadow && chmod 640 etc/shadow
            mkdir -p home/alice var/lib/daemon usr/local/bin
            echo mine > home/alice/notes && chown -R 1000:1000 home/alice && chmod 700 home/alice
            chown 1:1 var/lib/daemon && chmod 2775 var/lib/daemon
            echo note > etc/noted && python3 -c 'import os; os.setxattr("etc/noted", "user.origin", b"umoci")'
            cp bin/busybox usr/local/bin/cat && setcap cap_net_raw+ep usr/local/bin/cat
            cp bin/busybox usr/local/bin/id && chmod 4755 usr/local/bin/id
            ln -s /etc/shadow etc/shadow-link && chown -h 1:42 etc/shadow-link
            mknod etc/console c 5 1
            chown 65534:65534 var/empty
            cd \(dir)
            umoci init --layout layout
            umoci new --image layout:owners
            umoci unpack --image layout:owners bundle
            rm -rf bundle/rootfs && cp -a \(rootfs) bundle/rootfs
            umoci repack --image layout:owners bundle
            umoci config --image layout:owners --config.cmd /bin/sh
            rm -rf bundle
            umoci unpack --image layout:owners check
            cd check/rootfs && find . ! -type c ! -type b -printf '%U %G %m %p\\n' | sort > \(dir)/listing.txt
            cd \(dir) && rm -rf check tree
            chmod -R a+rX \(dir)
            """
        _ = try await runWithStatus("/bin/sh", ["-c", script], check: true)
    }
}

/// An ordinary user with subordinate IDs, run by ``RootlessHostTests``.
@Suite(.enabled(if: fixtures != nil && geteuid() != 0, "run by RootlessHostTests as an ordinary user with subordinate IDs"), .serialized)
struct RootlessTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ arguments: [String], root: String, environment: [String: String]? = nil) async throws -> (status: Int32, output: String, error: String) {
        try await runWithStatus(binary, ["--root", root] + arguments, environment: environment)
    }

    /// Every file shows inside the owner and mode it has in `umoci unpack`'s
    /// tree (device nodes are skipped), and keeps its extended attributes and
    /// file capabilities.
    @Test func imagesKeepTheirOwnersModesAndAttributes() async throws {
        let fixtures = try #require(fixtures)
        try await withTemporaryDirectory("rootless-owners") { dir in
            let images = try ImageStore(root: StateRoot(dir + "/state"))
            let mapping = try #require(images.userNamespace)
            #expect(mapping.mapsSubordinateIDs)
            try await images.importLayout(at: fixtures + "/layout")
            let runtime = try ContainerRuntime(images: images, cgroupParent: "gantry-rootless")
            let listing = try readText(fixtures + "/listing.txt").split(separator: "\n").map(String.init)
            let paths = listing.map { "/" + $0.split(separator: " ", maxSplits: 3)[3].dropFirst(2) }
            var spec = ContainerSpec(image: "layout:owners", command: ["stat", "-c", "%u %g %a %n"] + paths)
            spec.user = "0"
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.status == .exited(0), "\(output)")
            let inside = output.split(separator: "\n").map { line -> String in
                let fields = line.split(separator: " ", maxSplits: 3)
                let path = String(fields[3]) == "/" ? "." : "." + fields[3]
                return "\(fields[0]) \(fields[1]) \(fields[2]) \(path)"
            }.sorted()
            #expect(inside == listing.sorted())
            #expect(inside.contains("1000 1000 700 ./home/alice") && inside.contains("0 42 640 ./etc/shadow"))
            #expect(inside.contains("0 0 4755 ./usr/local/bin/id") && inside.contains("1 1 2775 ./var/lib/daemon"))

            // A user of the image reads only what the image lets it.
            var alice = ContainerSpec(image: "layout:owners", command: ["sh", "-c", "cat /home/alice/notes; cat /etc/shadow 2>&1; id"])
            alice.user = "alice"
            let (_, aliceOutput) = try await runCollecting(runtime, alice)
            #expect(aliceOutput.hasPrefix("mine\n") && aliceOutput.contains("Permission denied") && aliceOutput.contains("uid=1000(alice)"))

            // The file capability holds for a user other than root (without no_new_privs).
            var capable = ContainerSpec(image: "layout:owners", command: ["/usr/local/bin/cat", "/proc/self/status"])
            capable.user = "alice"
            capable.noNewPrivileges = false
            let (_, status) = try await runCollecting(runtime, capable)
            let effective = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }.flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) }
            #expect(effective == 1 << 13, "\(status)")

            // The extended attribute is on the layer's file.
            let candidates = try await images.prepareSnapshots("layout:owners").map { $0.directory + "/etc/noted" }
            let noted = try #require(candidates.first(where: { FileManager.default.fileExists(atPath: $0) }))
            var buffer = [UInt8](repeating: 0, count: 64)
            let length = gantry_lgetxattr(noted, "user.origin", &buffer, buffer.count)
            let value = length > 0 ? String(decoding: buffer[..<length], as: UTF8.self) : nil
            #expect(value == "umoci")

            // Removing the image removes layers whose files belong to other IDs.
            _ = try await images.remove("layout:owners")
            _ = try await images.prune()
            #expect(try FileManager.default.contentsOfDirectory(atPath: images.root.snapshots) == [".user-namespace"])
            await ContainerRuntime.settle()
        }
    }

    /// Secrets on the user's tmpfs run-time directory, owned inside by the
    /// image's user they are given to; gone with the container.
    @Test func secretsBelongToTheContainersUser() async throws {
        let fixtures = try #require(fixtures)
        try await withTemporaryDirectory("rootless-secrets") { dir in
            let images = try ImageStore(root: StateRoot(dir + "/state"))
            try await images.importLayout(at: fixtures + "/layout")
            let runtime = try ContainerRuntime(images: images, cgroupParent: "gantry-rootless")
            let value = "rootless-\(UUID().uuidString)"
            try value.write(toFile: dir + "/token", atomically: true, encoding: .utf8)
            var spec = ContainerSpec(image: "layout:owners", command: ["sh", "-c", "stat -c '%u %g %a' /run/secrets/token /run/secrets/shared; md5sum < /run/secrets/token; echo $SHARED"])
            spec.user = "alice"
            spec = spec.secret(.init(name: "token", source: .file(path: dir + "/token")))
                .secret(.init(name: "shared", source: .value(Array("both".utf8)), uid: 0, gid: 1000, mode: 0o440, environmentVariable: "SHARED"))
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.status == .exited(0), "\(output)")
            // Checksums, not values: the log is in the state root.
            let digest = try await run("md5sum", [], input: Data(value.utf8))
            #expect(output == "1000 1000 400\n0 1000 440\n\(digest)both\n")
            #expect(filesHolding(value, under: dir + "/state").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: images.root.runtime + "/provided"))
            await ContainerRuntime.settle()
        }
    }

    /// As a user of the command line would: a container in the background,
    /// exec, logs, stop, a volume a user of the image writes to, and a job.
    @Test func commandsEndToEnd() async throws {
        try await withTemporaryDirectory("rootless-cli") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["mkdir", "chown", "chmod", "touch", "stat", "wc"])
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            let started = try await gantry(["run", "-d", "--name", "web", "bb:1", "sh", "-c", "echo up; exec sleep 60"], root: root)
            #expect(started.status == 0, "\(started.error)")
            let exec = try await gantry(["exec", "web", "sh", "-c", "id; cat /proc/self/uid_map | wc -l"], root: root)
            #expect(exec.status == 0 && exec.output.hasPrefix("uid=0(root)") && exec.output.hasSuffix("2\n"), "\(exec)")
            let asNobody = try await gantry(["exec", "-u", "nobody", "web", "id", "-u"], root: root)
            #expect(asNobody.output == "65534\n", "\(asNobody)")
            #expect(try await gantry(["logs", "web"], root: root).output == "up\n")
            // Files of the container's root, in and out.
            try write("in from the host\n", to: dir + "/in.txt")
            #expect(try await gantry(["cp", dir + "/in.txt", "web:/tmp/in.txt"], root: root).status == 0)
            #expect(try await gantry(["exec", "web", "cat", "/tmp/in.txt"], root: root).output == "in from the host\n")
            #expect(try await gantry(["cp", "web:/etc/passwd", dir + "/passwd"], root: root).status == 0)
            #expect(try readText(dir + "/passwd") == readText(dir + "/rootfs/etc/passwd"))
            #expect(try await gantry(["stop", "-t", "1", "web"], root: root).status == 0)
            // And while it is stopped (its overlay made in the user namespace).
            try write("while stopped\n", to: dir + "/stopped.txt")
            let copiedIn = try await gantry(["cp", dir + "/stopped.txt", "web:/tmp/stopped.txt"], root: root)
            #expect(copiedIn.status == 0, "\(copiedIn)")
            for file in ["stopped", "in"] {
                let back = try await gantry(["cp", "web:/tmp/\(file).txt", dir + "/back-\(file).txt"], root: root)
                #expect(back.status == 0, "\(back)")
            }
            #expect(try readText(dir + "/back-stopped.txt") == "while stopped\n" && readText(dir + "/back-in.txt") == "in from the host\n")
            #expect(try await gantry(["rm", "web"], root: root).status == 0)

            #expect(try await gantry(["volume", "create", "data"], root: root).status == 0)
            let wrote = try await gantry(["run", "--rm", "-v", "data:/data", "bb:1", "sh", "-c",
                                          "mkdir /data/private && touch /data/private/f && chown -R 65534:65534 /data/private && chmod 700 /data/private && stat -c '%u %a' /data/private"], root: root)
            #expect(wrote.output == "65534 700\n", "\(wrote)")
            #expect(try await gantry(["volume", "rm", "data"], root: root).status == 0)

            let job = try await gantry(["job", "run", "--name", "count", "--completions", "2", "bb:1", "sh", "-c", "echo run"], root: root)
            #expect(job.status == 0, "\(job)")
            let listed = try await gantry(["ps", "-a", "--format", "json"], root: root).output
            #expect((try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [Any])?.isEmpty == true, "\(listed)")
            await ContainerRuntime.settle()
        }
    }

    /// An ordinary user builds a Dockerfile over the image with several
    /// owners: RUN steps as the container's root (giving files to other
    /// users), COPY into the root's directories, `--chown` to other users;
    /// what it cannot do (write into another user's directory) is refused
    /// by name.
    @Test func anOrdinaryUserBuildsADockerfile() async throws {
        let fixtures = try #require(fixtures)
        try await withTemporaryDirectory("rootless-build") { dir in
            let root = dir + "/state"
            #expect(try await gantry(["image", "import-layout", fixtures + "/layout:owners", "--name", "owners:1"], root: root).status == 0)
            let context = dir + "/context"
            try FileManager.default.createDirectory(atPath: context + "/src", withIntermediateDirectories: true)
            try write("copied\n", to: context + "/src/a.txt")
            try write("""
                FROM owners:1
                RUN mkdir -p /srv/data && echo made > /srv/data/made && chown -R 1000:1000 /srv/data && rm /etc/noted
                COPY src/ /srv/
                CMD ["sh", "-c", "stat -c '%u %n' /srv/data/made /srv/a.txt /etc/shadow; cat /srv/a.txt; ls /etc/noted 2>&1"]
                """, to: context + "/Dockerfile")
            let built = try await gantry(["build", "-t", "built:1", context], root: root)
            #expect(built.status == 0, "\(built)")
            let ran = try await gantry(["run", "--rm", "built:1"], root: root)
            #expect(ran.output.hasPrefix("1000 /srv/data/made\n0 /srv/a.txt\n0 /etc/shadow\ncopied\n"), "\(ran)")
            #expect(ran.output.contains("/etc/noted: No such file"), "\(ran)")
            let again = try await gantry(["build", "-t", "built:1", context], root: root)
            #expect(again.output.contains("CACHED COPY src/ /srv/"), "\(again)")

            // Files and the directories made for them given to another user,
            // set-ID bits kept; the directories a WORKDIR makes for a USER are that user's.
            try write("""
                FROM owners:1
                COPY --chown=1000 src/a.txt /srv/
                COPY --chown=1000:1000 --chmod=4755 src/ /opt/app/bin/
                USER 1000
                WORKDIR /work/here
                USER 0
                CMD ["sh", "-c", "stat -c '%u:%g %a %n' /srv/a.txt /opt/app /opt/app/bin /opt/app/bin/a.txt /work /work/here"]
                """, to: context + "/Dockerfile")
            let owned = try await gantry(["build", "-t", "owned:1", context], root: root)
            #expect(owned.status == 0, "\(owned)")
            let stats = try await gantry(["run", "--rm", "owned:1"], root: root)
            #expect(stats.output == "1000:1000 644 /srv/a.txt\n1000:1000 755 /opt/app\n1000:1000 755 /opt/app/bin\n1000:1000 4755 /opt/app/bin/a.txt\n1000:1000 755 /work\n1000:1000 755 /work/here\n", "\(stats)")
            // What it cannot do, write into a directory another user of the image owns, is refused by name.
            try write("FROM owners:1\nCOPY src/a.txt /home/alice/\n", to: context + "/Dockerfile")
            let refused = try await gantry(["build", context], root: root)
            #expect(refused.status == 1 && refused.error.contains("Dockerfile:2") && refused.error.contains("another of its users"), "\(refused)")
            let listed = try await gantry(["ps", "-a", "--format", "json"], root: root).output
            #expect((try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [Any])?.isEmpty == true, "\(listed)")
            await ContainerRuntime.settle()
        }
    }

    /// On the default network (through pasta): a published port answers on
    /// the host's 127.0.0.1, the container reaches a server on the host's
    /// loopback through its gateway, and removal frees the port and ends pasta.
    @Test func publishedPortsAndOutboundConnections() async throws {
        try await withTemporaryDirectory("rootless-net") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["wget"])
            try FileManager.default.createDirectory(atPath: dir + "/rootfs/www", withIntermediateDirectories: false)
            try write("from the container\n", to: dir + "/rootfs/www/index.html")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            // A server on the host's loopback.
            let (hostPort, server) = try await serveOnHostLoopback(dir)
            defer { server.kill(.kill); _ = server.wait() }

            let started = try await gantry(["run", "-d", "--name", "web", "-p", "127.0.0.1:0:8080", "bb:1", "httpd", "-f", "-p", "8080", "-h", "/www"], root: root)
            #expect(started.status == 0, "\(started)")
            let inspected = try await gantry(["inspect", "web"], root: root).output
            let parsed = try JSONSerialization.jsonObject(with: Data(inspected.utf8))
            let object = try #require((parsed as? [String: Any]) ?? (parsed as? [[String: Any]])?.first, "\(inspected)")
            let ports = try #require(object["ports"] as? [String], "\(inspected)")
            let published = try #require(ports.first.flatMap { UInt16($0.split(separator: ":")[1]) }, "\(ports)")
            var answer = ""
            for _ in 0 ..< 50 where answer.isEmpty {
                answer = (try? await runWithStatus("/usr/bin/timeout", ["5", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:\(published)/"]).output) ?? ""
                if answer.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(answer == "from the container\n")
            var outbound = (status: Int32(1), output: "", error: "")
            for _ in 0 ..< 50 where outbound.status != 0 {
                outbound = try await gantry(["exec", "web", "wget", "-q", "-O-", "http://\(UserModeNetwork.gateway):\(hostPort)/file"], root: root)
                if outbound.status != 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(outbound.output == "from the host\n", "\(outbound)")
            #expect(try await gantry(["rm", "-f", "web"], root: root).status == 0)
            // The port is free again: pasta ended.
            #expect(await freed(published), "port \(published) is still held")
            await ContainerRuntime.settle()
        }
    }

    /// On a user network (a bridge in the user's own network namespace):
    /// containers find each other by name and alias, reach the host through
    /// the gateway, publish ports on the host's loopback; the namespace's
    /// holder and pasta end when the last container leaves, and a holder
    /// killed with SIGKILL is replaced by the next container's start.
    @Test func userNetworksByNameWithPortsAndOutbound() async throws {
        try await withTemporaryDirectory("rootless-user-net") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["wget", "nslookup"])
            try FileManager.default.createDirectory(atPath: dir + "/rootfs/www", withIntermediateDirectories: false)
            try write("served by name\n", to: dir + "/rootfs/www/index.html")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            // A server on the host's loopback.
            let (hostPort, server) = try await serveOnHostLoopback(dir)
            defer { server.kill(.kill); _ = server.wait() }

            let created = try await gantry(["network", "create", "backend"], root: root)
            #expect(created.status == 0, "\(created)")
            // In the state root's run-time directory, under XDG_RUNTIME_DIR.
            let holderFile = StateRoot(root).runtime + "/network-host.pid"
            #expect(StateRoot(root).runtime.hasPrefix(try #require(ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"]) + "/gantry/"))
            let started = try await gantry(["run", "-d", "--name", "web", "--network", "backend", "--net-alias", "www", "-p", "127.0.0.1:0:8080",
                                            "bb:1", "httpd", "-f", "-p", "8080", "-h", "/www"], root: root)
            #expect(started.status == 0, "\(started)")
            let holder = try #require(Int32(try readText(holderFile).trimmingCharacters(in: .whitespacesAndNewlines)))
            // Another process's container finds it by name and by alias.
            for name in ["web", "www"] {
                var fetched = (status: Int32(1), output: "", error: "")
                for _ in 0 ..< 50 where fetched.status != 0 {
                    fetched = try await gantry(["run", "--rm", "--network", "backend", "bb:1", "wget", "-q", "-O-", "http://\(name):8080/"], root: root)
                    if fetched.status != 0 { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(fetched.output == "served by name\n", "\(name): \(fetched)")
            }
            // The published port answers on the host's loopback.
            let inspected = try await gantry(["inspect", "web"], root: root).output
            let parsed = try JSONSerialization.jsonObject(with: Data(inspected.utf8))
            let object = try #require((parsed as? [String: Any]) ?? (parsed as? [[String: Any]])?.first, "\(inspected)")
            let published = try #require((object["ports"] as? [String])?.first.flatMap { UInt16($0.split(separator: ":")[1]) }, "\(inspected)")
            var answer = ""
            for _ in 0 ..< 50 where answer.isEmpty {
                answer = (try? await runWithStatus("/usr/bin/timeout", ["5", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:\(published)/"]).output) ?? ""
                if answer.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(answer == "served by name\n")
            // Out through the network host's pasta, to the host's loopback.
            let outbound = try await gantry(["exec", "web", "wget", "-q", "-O-", "http://\(UserModeNetwork.gateway):\(hostPort)/file"], root: root)
            #expect(outbound.output == "from the host\n", "\(outbound)")

            // A holder killed with SIGKILL takes the network's devices with
            // it; the container can still be removed, and the next one
            // brings them back.
            kill(holder, SIGKILL)
            #expect(try await gantry(["rm", "-f", "web"], root: root).status == 0)
            let again = try await gantry(["run", "--rm", "--network", "backend", "bb:1", "wget", "-q", "-O-", "http://\(UserModeNetwork.gateway):\(hostPort)/file"], root: root)
            #expect(again.output == "from the host\n", "\(again)")
            // With nothing on the network, the holder (and pasta) ended.
            #expect(access(holderFile, F_OK) != 0)
            #expect(try await gantry(["network", "rm", "backend"], root: root).status == 0)
            var left = ""
            for _ in 0 ..< 100 {
                left = try await runWithStatus("/bin/ps", ["-o", "pid=,args=", "-u", "\(getuid())"]).output
                    .split(separator: "\n").filter { $0.contains("pasta") || $0.contains("sleep 2147483647") }.joined(separator: "\n")
                if left.isEmpty { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(left.isEmpty, "left running: \(left)")
            await ContainerRuntime.settle()
        }
    }

    /// A pod of an ordinary user: its members share the network (one
    /// reaches the other on localhost) and the host name, and its published
    /// port answers on the host's loopback; removing it ends its pasta.
    @Test func podsShareTheirNamespacesAndPublishPorts() async throws {
        try await withTemporaryDirectory("rootless-pod") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["wget", "hostname"])
            try FileManager.default.createDirectory(atPath: dir + "/rootfs/www", withIntermediateDirectories: false)
            try write("in the pod\n", to: dir + "/rootfs/www/index.html")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            let created = try await gantry(["pod", "create", "--network", "bridge", "-p", "127.0.0.1:0:80", "--share", "uts", "--hostname", "together", "app"], root: root)
            #expect(created.status == 0, "\(created)")
            #expect(try await gantry(["run", "-d", "--pod", "app", "--name", "web", "bb:1", "httpd", "-f", "-p", "80", "-h", "/www"], root: root).status == 0)
            var inside = (status: Int32(1), output: "", error: "")
            for _ in 0 ..< 50 where inside.status != 0 {
                inside = try await gantry(["run", "--rm", "--pod", "app", "bb:1", "sh", "-c", "hostname && wget -q -O- http://127.0.0.1/"], root: root)
                if inside.status != 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(inside.output == "together\nin the pod\n", "\(inside)")
            let inspected = try await gantry(["pod", "inspect", "app"], root: root).output
            let port = try #require(inspected.firstMatch(of: /127\.0\.0\.1:(\d+):80/).flatMap { UInt16($0.1) }, "\(inspected)")
            var answer = ""
            for _ in 0 ..< 50 where answer.isEmpty {
                answer = (try? await runWithStatus("/usr/bin/timeout", ["5", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:\(port)/"]).output) ?? ""
                if answer.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(answer == "in the pod\n")
            #expect(try await gantry(["rm", "-f", "web"], root: root).status == 0)
            #expect(try await gantry(["pod", "rm", "app"], root: root).status == 0)
            #expect(await freed(port), "port \(port) is still held")
            #expect(try await gantry(["network", "rm", "gantry"], root: root).status == 0)
            await ContainerRuntime.settle()
        }
    }

    /// A `gantry run` killed with SIGKILL while its container serves a
    /// published port (on the default network, then on a user network):
    /// the container dies with it, and the next command's open removes it,
    /// ends its pasta (the port is free again) and the network host.
    @Test func aRunKilledWithSIGKILLLeavesNothingRunning() async throws {
        try await withTemporaryDirectory("rootless-kill") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            #expect(try await gantry(["network", "create", "backend"], root: root).status == 0)
            for network in ["bridge", "backend"] {
                let port = try UserModeNetwork.freePort(PublishedPort(hostIP: IPv4Address("127.0.0.1"), containerPort: 1))
                let run = try ChildProcess(binary, ["--root", root, "run", "--rm", "--network", network, "-p", "127.0.0.1:\(port):80", "bb:1", "httpd", "-f", "-p", "80", "-h", "/"],
                                           stdout: .null, stderr: .null)
                var answered = false
                for _ in 0 ..< 200 where !answered {
                    answered = (try? await runWithStatus("/usr/bin/timeout", ["5", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:\(port)/etc/passwd"]).status) == 0
                    if !answered { try await Task.sleep(for: .milliseconds(25)) }
                }
                #expect(answered, "\(network): the port never answered")
                run.kill(.kill)
                _ = run.wait()
                let listed = try await gantry(["ps", "-a", "--format", "json"], root: root)
                #expect((try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [Any])?.isEmpty == true, "\(network): \(listed)")
                #expect(await freed(port), "\(network): port \(port) is still held")
            }
            #expect(access(StateRoot(root).runtime, F_OK) != 0, "the run-time directory is left")
            #expect(try await gantry(["network", "rm", "backend"], root: root).status == 0)
            await ContainerRuntime.settle()
        }
    }

    /// Where pasta is missing, slirp4netns serves instead (chosen here with
    /// `GANTRY_USER_MODE_NETWORK`): a container on the default network
    /// publishes a port and reaches the host's loopback, one on a user
    /// network publishes a port (forwarded by the network host's
    /// slirp4netns) and is found by its alias; when they are gone, so are
    /// the slirp4netns processes, their sockets and the run-time directory.
    @Test func slirp4netnsServesWherePastaIsNot() async throws {
        try await withTemporaryDirectory("rootless-slirp") { dir in
            let root = dir + "/state", slirp = ["GANTRY_USER_MODE_NETWORK": "slirp4netns"]
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["wget"])
            try FileManager.default.createDirectory(atPath: dir + "/rootfs/www", withIntermediateDirectories: false)
            try write("through slirp4netns\n", to: dir + "/rootfs/www/index.html")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            let (hostPort, server) = try await serveOnHostLoopback(dir)
            defer { server.kill(.kill); _ = server.wait() }
            #expect(try await gantry(["network", "create", "backend"], root: root, environment: slirp).status == 0)
            var ports: [UInt16] = []
            for (name, network) in [("web", "bridge"), ("api", "backend")] {
                let started = try await gantry(["run", "-d", "--name", name, "--network", network] + (network == "bridge" ? [] : ["--net-alias", "www"])
                                               + ["-p", "127.0.0.1:0:8080", "bb:1", "httpd", "-f", "-p", "8080", "-h", "/www"], root: root, environment: slirp)
                #expect(started.status == 0, "\(started)")
                let inspected = try await gantry(["inspect", name], root: root).output
                let parsed = try JSONSerialization.jsonObject(with: Data(inspected.utf8))
                let object = try #require((parsed as? [String: Any]) ?? (parsed as? [[String: Any]])?.first, "\(inspected)")
                let published = try #require((object["ports"] as? [String])?.first.flatMap { UInt16($0.split(separator: ":")[1]) }, "\(inspected)")
                ports.append(published)
                var answer = ""
                for _ in 0 ..< 50 where answer.isEmpty {
                    answer = (try? await runWithStatus("/usr/bin/timeout", ["5", "busybox", "wget", "-q", "-O-", "http://127.0.0.1:\(published)/"]).output) ?? ""
                    if answer.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(answer == "through slirp4netns\n", "\(name)")
                let outbound = try await gantry(["exec", name, "wget", "-q", "-O-", "http://\(UserModeNetwork.gateway):\(hostPort)/file"], root: root)
                #expect(outbound.output == "from the host\n", "\(name): \(outbound)")
            }
            let byAlias = try await gantry(["run", "--rm", "--network", "backend", "bb:1", "wget", "-q", "-O-", "http://www:8080/"], root: root, environment: slirp)
            #expect(byAlias.output == "through slirp4netns\n", "\(byAlias)")
            let helpers = try await runWithStatus("/bin/ps", ["-o", "args=", "-u", "\(geteuid())"]).output
            #expect(helpers.split(separator: "\n").filter { $0.hasPrefix("/usr/bin/slirp4netns") }.count == 2, "\(helpers)")
            #expect(!helpers.contains("pasta"), "\(helpers)")

            #expect(try await gantry(["rm", "-f", "web", "api"], root: root, environment: slirp).status == 0)
            #expect(try await gantry(["network", "rm", "backend"], root: root, environment: slirp).status == 0)
            var left = "?"
            for _ in 0 ..< 100 where !left.isEmpty {
                left = try await runWithStatus("/bin/ps", ["-o", "args=", "-u", "\(geteuid())"]).output.split(separator: "\n")
                    .filter { $0.contains("slirp4netns") && !$0.contains(CommandLine.arguments[0]) }.joined()
                if !left.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(left.isEmpty, "slirp4netns left running: \(left)")
            #expect(access(StateRoot(root).runtime, F_OK) != 0, "the run-time directory is left")
            for port in ports {
                #expect(await freed(port), "port \(port) is still held")
            }
            await ContainerRuntime.settle()
        }
    }

    /// A launch whose child, sharing the process's memory, takes another
    /// user's IDs leaves the process not dumpable (as it should stay:
    /// container processes must not read it); a runtime opened after that
    /// in the same process still makes its own user namespace, which
    /// newuidmap maps only for a dumpable process.
    @Test func aRuntimeOpenedAfterAnotherHasStartedContainersMakesItsNamespace() async throws {
        try await withTemporaryDirectory("rootless-second") { dir in
            try makeBusyboxRootfs(dir + "/rootfs")
            for index in 0 ..< 2 {
                let images = try ImageStore(root: StateRoot(dir + "/state-\(index)"))
                _ = try await images.importRootfs(at: dir + "/rootfs", name: "bb:1")
                let runtime = try ContainerRuntime(images: images, cgroupParent: "gantry-rootless")
                // As a user of the image: the launch's credentials change.
                var spec = ContainerSpec(image: "bb:1", command: ["cat", "/proc/self/uid_map"])
                spec.user = "1000:1000"
                let (exit, output) = try await runCollecting(runtime, spec)
                #expect(exit.status == .exited(0), "\(index): \(output)")
                #expect(output.split(separator: "\n").count >= 2, "\(index): subordinate IDs mapped: \(output)")
            }
            await ContainerRuntime.settle()
        }
    }

    /// A cron job made with `gantry cron create` and served as `gantry cron
    /// serve` serves it (its wall clock set two seconds before a minute
    /// starts, so that the test need not wait for one) runs its job's
    /// container in the user's namespace; the run is recorded as complete.
    @Test func aCronJobRunsItsJobs() async throws {
        try await withTemporaryDirectory("rootless-cron") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            let created = try await gantry(["cron", "create", "ticker", "--schedule", "* * * * *", "--concurrency-policy", "Forbid",
                                            "bb:1", "--", "sh", "-c", "id -u; cat /proc/self/uid_map"], root: root)
            #expect(created.status == 0, "\(created)")
            let library = try Gantry(root: StateRoot(root))
            let store = try JobStore(root: library.root)
            var node = try LocalNode(runtime: try library.containers)
            let output = Mutex("")
            node.output = { _, chunk in output.withLock { $0 += chunk.text } }
            let start = Date()
            let origin = Date(timeIntervalSince1970: (start.timeIntervalSince1970 / 60).rounded(.down) * 60 + 58)
            let controller = CronJobController(cluster: try Cluster(nodes: [node]), store: store,
                                               wallClock: { origin.addingTimeInterval(Date().timeIntervalSince(start)) })
            let serving = Task { try await controller.run { _ in } }
            var runs: [JobRecord] = []
            for _ in 0 ..< 300 where runs.first?.status.condition != .complete {
                try await Task.sleep(for: .milliseconds(50))
                runs = try store.jobs(cronJob: "ticker")
            }
            serving.cancel()
            _ = try? await serving.value
            #expect(runs.count == 1 && runs.first?.status.condition == .complete, "\(runs)")
            // Root inside, the user's own ID outside.
            let lines = output.withLock { $0 }.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(lines.first == ["0"] && lines.dropFirst().first?.prefix(2) == ["0", "\(geteuid())"], "\(output.withLock { $0 })")
            let listed = try await gantry(["job", "ls", "--cron", "ticker"], root: root)
            #expect(listed.output.contains("ticker"), "\(listed)")
            #expect(try await gantry(["cron", "rm", "ticker"], root: root).status == 0)
            await ContainerRuntime.settle()
        }
    }

    /// A web server on the host's loopback serving `dir/host/file` ("from the host").
    func serveOnHostLoopback(_ dir: String) async throws -> (port: UInt16, server: ChildProcess) {
        try FileManager.default.createDirectory(atPath: dir + "/host", withIntermediateDirectories: false)
        try write("from the host\n", to: dir + "/host/file")
        // The kernel chooses the port as the server binds it: a port chosen
        // first and bound a moment later could meanwhile be published by
        // another test's container, whose rule would then take the
        // connections meant for this server.
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw ToolError(description: "cannot make a pipe: \(Errno(rawValue: errno))") }
        let server: ChildProcess
        do {
            server = try ChildProcess("/usr/bin/python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir + "/host"],
                                      stdout: .descriptor(ends[1]), stderr: .null)
        } catch {
            close(ends[0])
            close(ends[1])
            throw error
        }
        close(ends[1])
        let reader = ends[0]
        // "Serving HTTP on 127.0.0.1 port N (…)", read off the cooperative pool.
        let banner = await onOwnThread { () -> String in
            defer { close(reader) }
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while read(reader, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
            return String(decoding: line, as: UTF8.self)
        }
        guard let port = banner.split(separator: " ").compactMap({ UInt16($0) }).first else {
            server.kill(.kill)
            _ = server.wait()
            throw ToolError(description: "the host's server did not say its port: \(banner)")
        }
        return (port, server)
    }

    /// Whether 127.0.0.1:`port` can be bound within two seconds.
    func freed(_ port: UInt16) async -> Bool {
        for _ in 0 ..< 100 {
            if bindable(port) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Whether 127.0.0.1:`port` can be bound now.
    func bindable(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        // Connections that were made to it may linger in TIME_WAIT.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
    }

    /// The IDs of the running containers whose names contain `service`.
    func running(_ root: String, _ service: String) async throws -> [String] {
        let listed = try await gantry(["ps", "--format", "json"], root: root).output
        let records = (try? JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [[String: Any]]) ?? []
        return records.filter { $0["status"] as? String == "running" && ($0["name"] as? String)?.contains(service) == true }.compactMap { $0["id"] as? String }
    }

    /// A compose service on the project's network runs under `gantry up`,
    /// another reaches it by its service name, and a replica killed from
    /// another process is replaced; taking the project down leaves nothing.
    @Test func aComposeServiceHeals() async throws {
        try await withTemporaryDirectory("rootless-compose") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["nc", "grep"])
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            try write("""
                services:
                  worker:
                    image: bb:1
                    command: ["sh", "-c", "while true; do echo pong | nc -l -p 7000; done"]
                  caller:
                    image: bb:1
                    command: ["sh", "-c", "until nc worker 7000 > /tmp/answer < /dev/null && grep -q pong /tmp/answer; do sleep 0.1; done; echo reached; exec sleep 300"]
                """, to: dir + "/compose.yaml")
            let up = try ChildProcess(binary, ["--root", root, "up", "-f", dir + "/compose.yaml", "-p", "heal"],
                                      stdout: .file(dir + "/up.log"), stderr: .file(dir + "/up.log"))
            defer { if up.isRunning { up.kill(.kill) } }
            var first: [String] = [], callers: [String] = []
            for _ in 0 ..< 300 where first.isEmpty || callers.isEmpty {
                first = try await running(root, "worker")
                callers = try await running(root, "caller")
                if first.isEmpty || callers.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            let log = { (try? readText(dir + "/up.log")) ?? "" }
            try #require(first.count == 1 && callers.count == 1, "no replica ran: \(log())")
            var reached = ""
            for _ in 0 ..< 300 where reached.isEmpty {
                reached = try await gantry(["logs", callers[0]], root: root).output
                if reached.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(reached == "reached\n", "the caller did not reach the worker by name: \(log())")
            #expect(try await gantry(["kill", first[0]], root: root).status == 0)
            var healed: [String] = []
            for _ in 0 ..< 500 {
                healed = try await running(root, "worker")
                if healed.count == 1 && healed != first { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(healed.count == 1 && healed != first, "the replica was not replaced: \(log())")
            // The event journal tells it, as for root.
            let events = try await gantry(["events", "--project", "heal", "--format", "json"], root: root)
            #expect(events.status == 0 && events.output.contains("\"event\":\"exited\"") && events.output.contains("\"event\":\"restarted\""), "\(events)")
            up.kill(.terminate)
            for _ in 0 ..< 600 where up.isRunning { try await Task.sleep(for: .milliseconds(50)) }
            let ended = up.wait()
            #expect(ended.status == 0 && !ended.signaled, "\(log())")
            let listed = try await gantry(["ps", "-a", "--format", "json"], root: root).output
            #expect((try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [Any])?.isEmpty == true, "\(listed)")
            let networks = try await gantry(["network", "ls", "--format", "json"], root: root).output
            #expect((try JSONSerialization.jsonObject(with: Data(networks.utf8)) as? [Any])?.isEmpty == true, "\(networks)")
            #expect(access(StateRoot(root).runtime, F_OK) != 0, "the run-time directory is left")
            await ContainerRuntime.settle()
        }
    }

    /// Without a delegated cgroup (this hybrid host, or a cgroup v2 host
    /// outside a delegated subtree), limits are refused, saying why, unless
    /// the caller chose to run without them.
    @Test(.enabled(if: (try? CgroupHierarchy.current().mode) != .unified, "a cgroup v2 host may delegate a subtree"))
    func limitsAreRefusedWithoutADelegatedCgroup() async throws {
        try await withTemporaryDirectory("rootless-limits") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            let refused = try await gantry(["run", "--rm", "--memory", "64m", "bb:1", "true"], root: root)
            #expect(refused.status != 0 && refused.error.contains("asks for resource limits") && refused.error.contains("cgroup v1"), "\(refused)")
            let ran = try await gantry(["--ignore-unenforceable-limits", "run", "--rm", "--memory", "64m", "bb:1", "echo", "ran"], root: root)
            #expect(ran.status == 0 && ran.output == "ran\n", "\(ran)")
        }
    }
}

/// An ordinary user without subordinate IDs, run by ``RootlessHostTests``:
/// the user alone is mapped, as the namespace's root.
@Suite(.enabled(if: fixtures != nil && geteuid() != 0, "run by RootlessHostTests as an ordinary user without subordinate IDs"))
struct RootlessSingleMappingTests {
    /// User networks work with the user alone mapped too.
    @Test func containersFindEachOtherOnAUserNetwork() async throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
        try await withTemporaryDirectory("rootless-single-net") { dir in
            let gantry = { (arguments: [String]) in try await runWithStatus(binary, ["--root", dir + "/state"] + arguments) }
            try makeBusyboxRootfs(dir + "/rootfs")
            try FileManager.default.createDirectory(atPath: dir + "/rootfs/www", withIntermediateDirectories: false)
            try write("one mapping\n", to: dir + "/rootfs/www/index.html")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            #expect(try await gantry(["network", "create", "net"]).status == 0)
            let started = try await gantry(["run", "-d", "--name", "web", "--network", "net", "bb:1", "httpd", "-f", "-p", "80", "-h", "/www"])
            #expect(started.status == 0, "\(started)")
            var fetched = (status: Int32(1), output: "", error: "")
            for _ in 0 ..< 50 where fetched.status != 0 {
                fetched = try await gantry(["run", "--rm", "--network", "net", "bb:1", "wget", "-q", "-O-", "http://web/"])
                if fetched.status != 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(fetched.output == "one mapping\n", "\(fetched)")
            #expect(try await gantry(["rm", "-f", "web"]).status == 0)
            #expect(try await gantry(["network", "rm", "net"]).status == 0)
            await ContainerRuntime.settle()
        }
    }

    @Test func onlyTheUsersOwnFilesCanBeMapped() async throws {
        let fixtures = try #require(fixtures)
        try await withTemporaryDirectory("rootless-single") { dir in
            let images = try ImageStore(root: StateRoot(dir + "/state"))
            let mapping = try #require(images.userNamespace)
            #expect(!mapping.mapsSubordinateIDs && mapping.helpers == nil)
            let runtime = try ContainerRuntime(images: images, cgroupParent: "gantry-rootless")

            // An image with files of other owners cannot be unpacked: the error names one and says what to do.
            try await images.importLayout(at: fixtures + "/layout")
            let error = await #expect(throws: OCIImageError.self) {
                try await runtime.run(ContainerSpec(image: "layout:owners", command: ["true"]))
            }
            #expect(error?.code == .unmappedOwner)
            #expect(error?.message.contains("/etc/shadow belongs to group ID 42") == true || error?.message.contains("belongs to") == true, "\(String(describing: error))")
            #expect(error?.message.contains("/etc/subuid") == true)

            // One whose files are all root's runs, with exec.
            try makeBusyboxRootfs(dir + "/rootfs")
            try await images.importRootfs(at: dir + "/rootfs", name: "bb:1")
            let (exit, output) = try await runCollecting(runtime, ContainerSpec(image: "bb:1", command: ["sh", "-c", "id -u; cat /proc/self/uid_map"]))
            #expect(exit.status == .exited(0))
            #expect(output.hasPrefix("0\n") && output.contains(" \(geteuid()) ") && output.split(separator: "\n").count == 2, "\(output)")

            // A user the namespace does not map is refused, naming it.
            var other = ContainerSpec(image: "bb:1", command: ["true"])
            other.user = "65534"
            await #expect(throws: RuntimeError.self) { try await runtime.run(other) }
            await ContainerRuntime.settle()
        }
    }
}
