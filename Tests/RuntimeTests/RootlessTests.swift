import CGantrySystem
import Foundation
import GantryTestSupport
import OCIImage
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
    let tests = CommandLine.arguments[0]

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

            for (user, suite, count) in [(ranged, "RootlessTests", "5 tests"), (single, "RootlessSingleMappingTests", "1 test")] {
                let home = dir + "/home-" + user
                try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: false)
                _ = try await runWithStatus("/bin/chown", [user + ":" + user, home], check: true)
                let (status, output, error) = try await runWithStatus("/usr/sbin/runuser", [
                    "-u", user, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "TMPDIR=/tmp",
                    "XDG_DATA_HOME=" + home + "/data", "GANTRY_ROOTLESS_FIXTURES=" + dir,
                    tests, "--testing-library", "swift-testing", "--filter", suite + "/",
                ])
                // The test runner reports on its standard error.
                let report = output + error
                #expect(status == 0 && report.contains("Test run with \(count) in 1 suite passed") && !report.contains("() skipped"), "\(user): \(report)")
                // Nothing of the user's is left running (an init whose
                // launcher ended is reaped by the host's init a moment later).
                var left = ""
                for _ in 0 ..< 100 {
                    left = try await runWithStatus("/bin/ps", ["-o", "pid=,args=", "-u", user]).output
                    if left.isEmpty { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(left.isEmpty, "processes of \(user) left: \(left)")
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
        try makeBusyboxRootfs(rootfs, applets: ["stat", "grep", "mkdir", "chown", "touch"])
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

    func gantry(_ arguments: [String], root: String) async throws -> (status: Int32, output: String, error: String) {
        try await runWithStatus(binary, ["--root", root] + arguments)
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
            #expect(try FileManager.default.contentsOfDirectory(atPath: images.root.snapshots).isEmpty)
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
            try FileManager.default.createDirectory(atPath: dir + "/host", withIntermediateDirectories: false)
            try write("from the host\n", to: dir + "/host/file")
            let hostPort = try UserModeNetwork.freePort(PublishedPort(hostIP: IPv4Address("127.0.0.1"), containerPort: 1))
            let server = try ChildProcess("/usr/bin/python3", ["-m", "http.server", "\(hostPort)", "--bind", "127.0.0.1", "--directory", dir + "/host"],
                                          stdout: .null, stderr: .null)
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
            var freed = false
            for _ in 0 ..< 100 where !freed {
                freed = bindable(published)
                if !freed { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(freed, "port \(published) is still held")
            await ContainerRuntime.settle()
        }
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

    /// The IDs of the running containers.
    func running(_ root: String) async throws -> [String] {
        let listed = try await gantry(["ps", "--format", "json"], root: root).output
        let records = (try? JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [[String: Any]]) ?? []
        return records.filter { $0["status"] as? String == "running" }.compactMap { $0["id"] as? String }
    }

    /// A compose service (without a network: bridges are the host's) runs
    /// under `gantry up`, and a replica killed from another process is
    /// replaced; taking the project down leaves nothing.
    @Test func aComposeServiceHeals() async throws {
        try await withTemporaryDirectory("rootless-compose") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"], root: root).status == 0)
            try write("services:\n  worker:\n    image: bb:1\n    command: [\"sleep\", \"300\"]\n    network_mode: none\n", to: dir + "/compose.yaml")
            let up = try ChildProcess(binary, ["--root", root, "up", "-f", dir + "/compose.yaml", "-p", "heal"],
                                      stdout: .file(dir + "/up.log"), stderr: .file(dir + "/up.log"))
            defer { if up.isRunning { up.kill(.kill) } }
            var first: [String] = []
            for _ in 0 ..< 300 where first.isEmpty {
                first = try await running(root)
                if first.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            }
            let log = { (try? readText(dir + "/up.log")) ?? "" }
            try #require(first.count == 1, "no replica ran: \(log())")
            #expect(try await gantry(["kill", first[0]], root: root).status == 0)
            var healed: [String] = []
            for _ in 0 ..< 500 {
                healed = try await running(root)
                if healed.count == 1 && healed != first { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(healed.count == 1 && healed != first, "the replica was not replaced: \(log())")
            up.kill(.terminate)
            for _ in 0 ..< 600 where up.isRunning { try await Task.sleep(for: .milliseconds(50)) }
            let ended = up.wait()
            #expect(ended.status == 0 && !ended.signaled, "\(log())")
            let listed = try await gantry(["ps", "-a", "--format", "json"], root: root).output
            #expect((try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [Any])?.isEmpty == true, "\(listed)")
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
