import Foundation
import Gantry
import GantryTestSupport
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// `kill -9` of a process using Gantry at random moments of creating and
/// starting containers: the next open of the state root must leave
/// nothing behind and tell the truth about what runs.
@Suite(.requiresRoot, .serialized) struct CrashRecoveryTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
    static let parent = "gantry-crash-test"
    static let hierarchies = ["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset", "blkio", "devices", "unified"]

    func gantry(_ root: String, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        try runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": Self.parent])
    }

    /// The container cgroups under the test's parent, in every hierarchy.
    func cgroups() -> Set<String> {
        var found: Set<String> = []
        for hierarchy in Self.hierarchies {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/\(hierarchy)/\(Self.parent)")) ?? []
            found.formUnion(names.filter { $0.count == 64 })
        }
        return found
    }

    /// `gantry` with `arguments`, killed at a random moment (see the shared helper).
    func killAtRandom(_ root: String, _ arguments: [String], window: UInt32, using generator: inout SystemRandomNumberGenerator) throws -> Bool {
        try GantryTestSupport.killAtRandom(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": Self.parent],
                                           window: window, using: &generator)
    }

    /// The container directories in the state root `root`.
    func containerDirectories(_ root: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/containers")) ?? []).filter { $0.count == 64 }
    }

    /// A state root (passed to `body` with its temporary directory) holding
    /// busybox as `bb:1`; afterwards every container, the default network
    /// and the cgroup parent are removed.
    func withImage(_ label: String, _ body: (_ root: String, _ dir: String) async throws -> Void) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        try await withTemporaryDirectory(label) { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            defer {
                for id in containerDirectories(root) { _ = try? gantry(root, ["rm", "-f", id]) }
                _ = try? gantry(root, ["network", "rm", Networks.defaultName])
                removeCLICgroupParent(Self.parent)
            }
            try await body(root, dir)
        }
    }

    @Test func leftoversWaitForAnExplicitRecoveryWhenAskedTo() async throws {
        try await withImage("crash-leave") { root, _ in
            // A container bound to a command line that is killed while it runs.
            let cli = try ChildProcess(binary, ["--root", root, "run", "--name", "orphan", "bb:1", "sleep", "600"],
                                       environment: ["GANTRY_CGROUP_PARENT": Self.parent], stdout: .null, stderr: .null)
            for _ in 0 ..< 500 where try gantry(root, ["ps"]).output.contains("orphan") == false {
                try await Task.sleep(for: .milliseconds(20))
            }
            cli.kill(.kill)
            _ = cli.wait()
            // Left as it was: the record still says it runs.
            let left = try ContainerRuntime(images: try ImageStore(root: StateRoot(root)), cgroupParent: Self.parent, leftovers: .leave)
            #expect(try left.list().map(\.name) == ["orphan"])
            #expect(try left.list().first?.status == .running)
            // Recovered when asked.
            let report = left.recoverLeftovers()
            #expect(report.removed == ["orphan"])
            #expect(report.adopted.isEmpty && report.ended.isEmpty)
            #expect(try left.list().isEmpty)
            #expect(cgroups().isEmpty)
        }
    }

    /// Container directories made ahead of need: those of a process that
    /// ended go at the next open, those of a live one stay, and a runtime's
    /// own go when it is released.
    @Test func spareDirectoriesOfAnEndedProcessGoAtTheNextOpen() async throws {
        try await withImage("crash-spares") { root, _ in
            let containers = root + "/containers"
            try FileManager.default.createDirectory(atPath: containers, withIntermediateDirectories: true)
            let ended = containers + "/.spare-1f-999999-1", live = containers + "/.spare-2e-\(getpid())-\(processStartTime(getpid()) ?? 0)"
            for spare in [ended, live] { try FileManager.default.createDirectory(atPath: spare + "/upper", withIntermediateDirectories: true) }
            func spares() -> [String] {
                ((try? FileManager.default.contentsOfDirectory(atPath: containers)) ?? []).filter { $0.hasPrefix(".spare-") }.sorted()
            }
            do {
                let runtime = try ContainerRuntime(images: try ImageStore(root: StateRoot(root)), cgroupParent: Self.parent)
                #expect(spares() == [String(live.split(separator: "/").last!)])
                for _ in 0 ..< 3 {
                    let container = try await runtime.create(ContainerSpec(image: "bb:1", command: ["true"]).network(.none))
                    try await container.start()
                    _ = try await container.wait()
                    try await container.remove()
                }
                await ContainerRuntime.settle()
                #expect(spares().count == 3, "two made ahead of need, and the live process's: \(spares())")
            }
            #expect(spares() == [String(live.split(separator: "/").last!)])
            try FileManager.default.removeItem(atPath: live)
        }
    }

    /// A network, volume or pod appears whole or not at all: one whose
    /// creation was killed left only a staging directory, which is not
    /// listed and goes when the next one is created.
    @Test func aNetworkVolumeOrPodKilledWhileCreatedLeavesNoNamedDirectory() async throws {
        try await withTemporaryDirectory("crash-records") { dir in
            let runtime = try ContainerRuntime(images: try ImageStore(root: StateRoot(dir + "/state")), cgroupParent: Self.parent)
            let root = dir + "/state"
            for (kind, file) in [("networks", "network.json"), ("volumes", "volume.json"), ("pods", "pod.json")] {
                let left = root + "/\(kind)/.new-cut-999999-1"
                try FileManager.default.createDirectory(atPath: left, withIntermediateDirectories: true)
                try write("{", to: left + "/" + file)
            }
            #expect(try runtime.networks.list().isEmpty && runtime.volumes.list().isEmpty && runtime.pods.list().isEmpty)
            #expect(runtime.networks.damaged().isEmpty && runtime.volumes.damaged().isEmpty)
            _ = try await runtime.networks.create("cut", subnet: IPv4Subnet("10.99.7.0/24"))
            _ = try await runtime.volumes.create("cut")
            _ = try await runtime.pods.create(PodSpec(name: "cut", network: .none))
            for kind in ["networks", "volumes", "pods"] {
                let names = try FileManager.default.contentsOfDirectory(atPath: root + "/" + kind).filter { !$0.hasPrefix(".host") }
                #expect(names == ["cut"], "\(kind): \(names)")
            }
            try await runtime.pods.remove("cut")
            try await runtime.volumes.remove("cut")
            try await runtime.networks.remove("cut")
        }
    }

    @Test func aStateRootIsDestroyedWithEverythingItMade() async throws {
        try await withTemporaryDirectory("destroy") { dir in
            let parent = "gantry-destroy-test"
            let gantry = try Gantry(root: StateRoot(dir + "/state"), cgroupParent: parent)
            try makeBusyboxRootfs(dir + "/rootfs")
            _ = try await gantry.images.importRootfs(at: dir + "/rootfs", name: "bb:1")
            let network = try await gantry.containers.networks.create("doomed")
            _ = try await gantry.containers.volumes.create("doomed-data")
            let container = try await gantry.containers.create(ContainerSpec(image: "bb:1", command: ["sleep", "600"])
                .network(.bridge("doomed")).mounting(.volume(name: "doomed-data", target: "/data")))
            try await container.start()
            let id = container.id
            try await gantry.destroy()
            #expect(!FileManager.default.fileExists(atPath: dir + "/state"), "the state root is gone")
            let links = try await run("ip", ["-o", "link", "show"])
            #expect(!links.contains(network.bridge), "the bridge is gone")
            let rules = try await runWithStatus("nft", ["list", "table", "ip", "gantry"]).output
            #expect(!rules.contains(network.id), "its firewall rules are gone")
            for hierarchy in Self.hierarchies {
                #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/\(hierarchy)/\(parent)"), "the cgroup parent is gone from \(hierarchy)")
            }
            try expectNoHostLeftovers(of: [id], root: dir + "/state")
        }
    }

    @Test func killedAtRandomMomentsOfEveryCommandLeavesNothingUnaccounted() async throws {
        try await withImage("crash-commands") { root, dir in
            let mountsBefore = mounts(under: dir).count
            // Every container that ever had a directory, to look for what
            // the host may still hold of it.
            var seen: Set<String> = []
            func look() { seen.formUnion(containerDirectories(root)) }
            var generator = SystemRandomNumberGenerator()
            var killed = 0
            var rounds = 0
            // Each command, killed at random moments; a long-running
            // container for exec and stop to work on.
            _ = try gantry(root, ["run", "-d", "--name", "target", "bb:1", "sleep", "600"])
            for round in 0 ..< 40 {
                let port = try #require(Networks.freeHostPort(.tcp))
                let commands: [[String]] = [
                    ["run", "-d", "--name", "p\(round)", "-p", "\(port):80", "bb:1", "sleep", "600"],
                    ["run", "--rm", "bb:1", "sh", "-c", "echo hi"],
                    ["exec", "target", "sh", "-c", "echo in"],
                    ["image", "unpack", "bb:1", dir + "/unpacked-\(round)"],
                    ["rm", "-f", "p\(round)"],
                ]
                for command in commands {
                    if try killAtRandom(root, command, window: 200_000, using: &generator) { killed += 1 }
                    rounds += 1
                    look()
                }
                if round % 4 == 3 {
                    if try killAtRandom(root, ["stop", "-t", "1s", "target"], window: 200_000, using: &generator) { killed += 1 }
                    _ = try gantry(root, ["rm", "-f", "target"])
                    _ = try gantry(root, ["run", "-d", "--name", "target", "bb:1", "sleep", "600"])
                    rounds += 1
                }
            }
            #expect(killed > rounds / 4, "only \(killed) of \(rounds) commands were killed before they ended")
            print("crash recovery: \(killed) of \(rounds) commands killed with SIGKILL, \(seen.count) containers made")

            // Opened again, the state root accounts for everything; removing
            // every container and the network leaves the host as it was.
            let listed = try gantry(root, ["ps", "-a", "--format", "json"])
            #expect(listed.status == 0, "\(listed.error)")
            #expect(listed.error.isEmpty, "\(listed.error)")
            let records = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            let ids = Set(records.compactMap { $0["id"] as? String })
            let directories = containerDirectories(root)
            #expect(Set(directories) == ids, "directories without a record: \(Set(directories).subtracting(ids).map { ($0.prefix(12), (try? FileManager.default.contentsOfDirectory(atPath: root + "/containers/" + $0)) ?? []) })")
            #expect(cgroups().isSubset(of: ids), "cgroups without a container: \(cgroups().subtracting(ids))")
            for id in ids { #expect(try gantry(root, ["rm", "-f", id]).status == 0) }
            // A lease left on the network would refuse its removal.
            let networkRemoved = try gantry(root, ["network", "rm", Networks.defaultName])
            #expect(networkRemoved.status == 0 || networkRemoved.error.contains("no network"), "\(networkRemoved)")
            #expect(cgroups().isEmpty)
            #expect(mounts(under: dir).count == mountsBefore, "mounts left under \(dir): \(mounts(under: dir))")
            try expectNoHostLeftovers(of: seen, root: root)
            let holds = (try? FileManager.default.contentsOfDirectory(atPath: root + "/holds")) ?? []
            #expect(holds.isEmpty, "snapshot holds left: \(holds)")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: root + "/containers/names")) ?? []).isEmpty)
        }
    }

    @Test func killedWhileCreatingOrStartingLeavesNothingUnaccounted() async throws {
        try await withImage("crash-create") { root, _ in
            // A run takes a few tens of milliseconds; kills land all over it.
            var generator = SystemRandomNumberGenerator()
            let rounds = 40
            var killed = 0
            for round in 0 ..< rounds {
                if try killAtRandom(root, ["run", "-d", "--name", "c\(round)", "bb:1", "sleep", "600"], window: 150_000, using: &generator) { killed += 1 }
            }
            #expect(killed > rounds / 4, "only \(killed) of \(rounds) runs were killed before they ended")
            print("crash recovery: \(killed) of \(rounds) runs killed with SIGKILL")

            // The next open recovers: every directory has a record, every
            // name a container, every cgroup a container, and what runs says so.
            let listed = try gantry(root, ["ps", "-a", "--format", "json"])
            #expect(listed.status == 0, "\(listed.error)")
            let records = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            let ids = Set(records.compactMap { $0["id"] as? String })
            let directories = containerDirectories(root)
            #expect(Set(directories) == ids, "directories without a record: \(Set(directories).subtracting(ids).map { ($0.prefix(12), (try? FileManager.default.contentsOfDirectory(atPath: root + "/containers/" + $0)) ?? []) })")
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/containers/names") {
                let target = try FileManager.default.destinationOfSymbolicLink(atPath: root + "/containers/names/" + name)
                #expect(ids.contains(target), "the name \(name) stays taken by \(target.prefix(12)), which has no record")
            }
            #expect(cgroups().isSubset(of: ids), "cgroups without a container: \(cgroups().subtracting(ids))")
            let holds = (try? FileManager.default.contentsOfDirectory(atPath: root + "/holds")) ?? []
            #expect(Set(holds).isSubset(of: ids), "snapshot holds without a container: \(Set(holds).subtracting(ids))")
            for record in records {
                let id = try #require(record["id"] as? String)
                let status = record["status"] as? String
                let processes = Self.hierarchies.compactMap { try? String(contentsOfFile: "/sys/fs/cgroup/\($0)/\(Self.parent)/\(id)/cgroup.procs", encoding: .utf8) }
                    .flatMap { $0.split(separator: "\n") }
                if status == "running" {
                    #expect(!processes.isEmpty, "\(record["name"] ?? id) is listed running with no process")
                } else {
                    #expect(processes.isEmpty, "\(record["name"] ?? id) is listed \(status ?? "?") while its processes run")
                }
            }

            // And everything goes with rm -f.
            for id in ids { #expect(try gantry(root, ["rm", "-f", id]).status == 0) }
            #expect(cgroups().isEmpty)
            #expect((try? FileManager.default.contentsOfDirectory(atPath: root + "/holds"))?.isEmpty ?? true)
        }
    }
}
