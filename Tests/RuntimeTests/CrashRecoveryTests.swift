import Foundation
import GantryTestSupport
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// `kill -9` of a process using Gantry at random moments of creating and
/// starting containers: the next open of the state root must leave
/// nothing behind and tell the truth about what runs.
@Suite(.requiresRoot) struct CrashRecoveryTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
    static let parent = "gantry-crash-test"
    static let hierarchies = ["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset", "blkio", "unified"]

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

    @Test func killedWhileCreatingOrStartingLeavesNothingUnaccounted() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        try await withTemporaryDirectory("crash-create") { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs")
            #expect(try gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            defer {
                for id in (try? FileManager.default.contentsOfDirectory(atPath: root + "/containers"))?.filter({ $0.count == 64 }) ?? [] {
                    _ = try? gantry(root, ["rm", "-f", id])
                }
                removeCLICgroupParent(Self.parent)
            }
            // A run takes a few tens of milliseconds; kills land all over it.
            var generator = SystemRandomNumberGenerator()
            let rounds = 40
            var killed = 0
            for round in 0 ..< rounds {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["--root", root, "run", "-d", "--name", "c\(round)", "bb:1", "sleep", "600"]
                process.environment = ["GANTRY_CGROUP_PARENT": Self.parent]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                usleep(UInt32.random(in: 0 ..< 60_000, using: &generator))
                if process.isRunning {
                    kill(process.processIdentifier, SIGKILL)
                    killed += 1
                }
                process.waitUntilExit()
            }
            #expect(killed > rounds / 4, "only \(killed) of \(rounds) runs were killed before they ended")

            // The next open recovers: every directory has a record, every
            // name a container, every cgroup a container, and what runs says so.
            let listed = try gantry(root, ["ps", "-a", "--format", "json"])
            #expect(listed.status == 0, "\(listed.error)")
            let records = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            let ids = Set(records.compactMap { $0["id"] as? String })
            let directories = try FileManager.default.contentsOfDirectory(atPath: root + "/containers").filter { $0.count == 64 }
            #expect(Set(directories) == ids, "directories without a record: \(Set(directories).subtracting(ids))")
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
