import Foundation
import OCIImage
import GantryTestSupport
import Testing
@testable import Runtime

/// The v2 driver against a real cgroup2 hierarchy with its controllers, as
/// production hosts have it (`scripts/test-cgroup-v2.sh` boots one).
@Suite(.requiresCgroupV2, .serialized) struct CgroupV2HostTests {
    let mount = "/sys/fs/cgroup"

    func text(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `pid` has ended (a zombie its parent has not reaped yet counts).
    func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    /// Starts `sleep` inside the cgroup `name` and returns its pid once it
    /// runs there (its memory charged to the cgroup).
    func sleeper(in name: String) async throws -> Int32 {
        let output = try await run("/bin/sh", ["-c", "sh -c 'echo $$ > \(mount)/\(name)/cgroup.procs && exec sleep 60' > /dev/null 2>&1 & echo $!"])
        let pid = try #require(Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)))
        for _ in 0 ..< 1000 {
            let command = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
            if command == "sleep\n", try CgroupV2Driver(mountPoint: mount).processes(name).contains(pid) { return pid }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("sleep \(pid) did not join \(name)")
        return pid
    }

    @Test func createsLimitsCountsFreezesKillsAndRemoves() async throws {
        let driver = CgroupV2Driver(mountPoint: mount)
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        let name = parent + "/c1"
        defer {
            try? driver.remove(name)
            rmdir(mount + "/" + parent)
        }
        var limits = ResourceLimits(cpuShares: 2048, cpusetCPUs: "0", memory: 64 << 20, memoryReservation: 16 << 20, pids: 10, ioWeight: 500)
        (limits.cpuQuota, limits.cpuPeriod) = ResourceLimits.quota(cpus: 0.5)
        try driver.create(name, limits: limits)
        let directory = mount + "/" + name
        #expect(try text(directory + "/memory.max") == "\(64 << 20)")
        #expect(try text(directory + "/memory.low") == "\(16 << 20)")
        #expect(try text(directory + "/pids.max") == "10")
        #expect(try text(directory + "/cpu.max") == "50000 100000")
        #expect(try text(directory + "/cpu.weight") == "79")
        #expect(try text(directory + "/cpuset.cpus") == "0")
        let pid = try await sleeper(in: name)
        let usage = try driver.usage(name)
        #expect(usage.pids == 1 && usage.pidsLimit == 10 && usage.memoryLimit == 64 << 20 && usage.memory > 0, "\(usage)")
        try driver.setFrozen(true, name)
        #expect(FileIO.keyedValue("frozen", in: try text(directory + "/cgroup.events")) == 1)
        try driver.setFrozen(false, name)
        #expect(FileIO.keyedValue("frozen", in: try text(directory + "/cgroup.events")) == 0)
        // Removal kills what is inside (cgroup.kill) and takes the directory.
        try driver.remove(name)
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect(isGone(pid))
    }

    @Test func anOOMKillIsCountedInMemoryEvents() async throws {
        let driver = CgroupV2Driver(mountPoint: mount)
        let name = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())/c1"
        defer {
            try? driver.remove(name)
            rmdir(mount + "/" + name.split(separator: "/")[0])
        }
        try driver.create(name, limits: ResourceLimits(memory: 16 << 20, memorySwap: 16 << 20))
        let script = "sh -c 'echo $$ > \(mount)/\(name)/cgroup.procs && exec tail /dev/zero'; echo status=$?"
        let output = try await run("/bin/sh", ["-c", script])
        #expect(output == "status=137\n", "\(output)")
        #expect(driver.oomKills(name) == 1)
    }

    /// A subtree handed to an ordinary user, as systemd delegates one to
    /// each user's session: the user makes containers' cgroups in it with
    /// the same driver, and their limits hold. (What rootless containers need.)
    @Test func aDelegatedSubtreeServesItsOwner() async throws {
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        let directory = mount + "/" + parent
        try Sys.makeDirectories(directory + "/leaf")
        defer {
            try? CgroupV2Driver(mountPoint: mount).remove(parent + "/c1")
            rmdir(directory + "/rootless")
            rmdir(directory + "/leaf")
            rmdir(directory)
        }
        // As systemd does for a delegated unit: the controllers reach the
        // subtree, which then belongs to the user.
        let wanted = "+cpu +cpuset +io +memory +pids"
        try wanted.write(toFile: mount + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
        for file in ["", "/cgroup.procs", "/cgroup.subtree_control", "/cgroup.threads", "/leaf", "/leaf/cgroup.procs"] {
            #expect(chown(directory + file, 65534, 65534) == 0)
        }
        // Root moves the user's process into the subtree; the rest it does alone.
        let tests = CommandLine.arguments[0]
        let script = "echo $$ > \(directory)/leaf/cgroup.procs && exec setpriv --reuid=65534 --regid=65534 --clear-groups "
            + "env GANTRY_DELEGATED_CGROUP=\(parent) HOME=/tmp \(tests) --testing-library swift-testing --filter DelegatedCgroupTests/"
        let (status, output, error) = try await runWithStatus("/bin/sh", ["-c", script])
        // The test runner reports on its standard error.
        let report = output + error
        #expect(status == 0 && report.contains("Test run with 2 tests") && report.contains("passed"), "\(report)")
        #expect(!report.contains("skipped"), "\(report)")
    }
}

/// The ordinary user's side of ``CgroupV2HostTests/aDelegatedSubtreeServesItsOwner()``,
/// which runs it in a subtree it owns.
@Suite struct DelegatedCgroupTests {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["GANTRY_DELEGATED_CGROUP"] != nil,
                   "run by aDelegatedSubtreeServesItsOwner, as the owner of a delegated subtree"))
    func runsInADelegatedSubtree() async throws {
        let parent = try #require(ProcessInfo.processInfo.environment["GANTRY_DELEGATED_CGROUP"])
        #expect(geteuid() != 0)
        let mount = "/sys/fs/cgroup"
        let driver = CgroupV2Driver(mountPoint: mount)
        let name = parent + "/c1"
        try driver.create(name, limits: ResourceLimits(memory: 32 << 20, pids: 5))
        #expect(try CgroupV2HostTests().text(mount + "/" + name + "/memory.max") == "\(32 << 20)")
        let pid = try await CgroupV2HostTests().sleeper(in: name)
        #expect(try driver.usage(name).pids == 1)
        try driver.setFrozen(true, name)
        try driver.setFrozen(false, name)
        try driver.remove(name)
        #expect(CgroupV2HostTests().isGone(pid))
    }

    /// The user's own containers (in a user namespace) get cgroups in the
    /// subtree, with limits enforced and an OOM kill reported as for root.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["GANTRY_DELEGATED_CGROUP"] != nil,
                   "run by aDelegatedSubtreeServesItsOwner, as the owner of a delegated subtree"))
    func rootlessContainersHaveLimitsThere() async throws {
        #expect(geteuid() != 0)
        try await withTemporaryDirectory("rootless-v2") { dir in
            try makeBusyboxRootfs(dir + "/rootfs", applets: ["tail", "cat"])
            let images = try ImageStore(root: StateRoot(dir + "/state"))
            #expect(images.userNamespace != nil)
            try await images.importRootfs(at: dir + "/rootfs", name: "busybox:test")
            let runtime = try ContainerRuntime(images: images, cgroupParent: "rootless")
            let v2 = try #require(runtime.cgroups as? CgroupV2Driver, "no delegated cgroup found: \(runtime.cgroups)")
            let delegated = try #require(ProcessInfo.processInfo.environment["GANTRY_DELEGATED_CGROUP"])
            #expect(runtime.cgroupParent == delegated + "/rootless")

            var hungry = ContainerSpec(image: "busybox:test", command: ["tail", "/dev/zero"])
            hungry.resources = ResourceLimits(memory: 16 << 20, memorySwap: 16 << 20)
            let exit = try await runtime.run(hungry)
            #expect(exit.reason == .oomKilled, "\(exit)")

            var few = ContainerSpec(image: "busybox:test", command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1"])
            few.resources = ResourceLimits(pids: 4)
            // The shell gives up at the first fork the limit refuses.
            let (_, output) = try await runCollecting(runtime, few)
            #expect(output.contains("can't fork"), "\(output)")
            await ContainerRuntime.settle()
            rmdir(v2.mountPoint + "/" + runtime.cgroupParent)
        }
    }
}
