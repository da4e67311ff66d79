import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

/// The v2 driver against a fake cgroup2 tree (this host has no usable
/// cgroup2 controllers); the v1 driver against this host's hierarchies.
@Suite struct CgroupDriverTests {
    /// A directory laid out as a cgroup2 mount with the usual controllers.
    func fakeTree(_ dir: String) throws {
        try write("cpuset cpu io memory hugetlb pids", to: dir + "/cgroup.controllers")
        try write("", to: dir + "/cgroup.subtree_control")
        try FileManager.default.createDirectory(atPath: dir + "/gantry", withIntermediateDirectories: true)
        // None yet: the root passes none down until the driver asks it to.
        try write("", to: dir + "/gantry/cgroup.controllers")
        try write("", to: dir + "/gantry/cgroup.subtree_control")
        let leaf = dir + "/gantry/c1"
        try FileManager.default.createDirectory(atPath: leaf, withIntermediateDirectories: true)
        for file in ["cpu.max", "cpu.weight", "cpuset.cpus", "memory.max", "memory.low", "memory.swap.max", "pids.max", "io.weight", "cgroup.freeze"] {
            try write("", to: leaf + "/" + file)
        }
        try write("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n", to: leaf + "/cpu.stat")
        try write("4096\n", to: leaf + "/memory.current")
        try write("8192\n", to: leaf + "/memory.peak")
        try write("3\n", to: leaf + "/pids.current")
        try write("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", to: leaf + "/memory.events")
        try write("populated 1\nfrozen 1\n", to: leaf + "/cgroup.events")
    }

    @Test func v2WritesLimitsAndReadsUsage() async throws {
        try await withTemporaryDirectory("cgroup-v2") { dir in
            try fakeTree(dir)
            let driver = CgroupV2Driver(mountPoint: dir)
            var limits = ResourceLimits(cpuShares: 2048, cpusetCPUs: "0", memory: 64 << 20, memoryReservation: 32 << 20,
                                        memorySwap: 96 << 20, pids: 64, ioWeight: 500)
            (limits.cpuQuota, limits.cpuPeriod) = ResourceLimits.quota(cpus: 0.5)
            try driver.create("gantry/c1", limits: limits)
            #expect(try readText(dir + "/cgroup.subtree_control") == "+cpu +cpuset +io +memory +pids")
            #expect(try readText(dir + "/gantry/c1/cpu.max") == "50000 100000")
            #expect(try readText(dir + "/gantry/c1/cpu.weight") == "79")
            #expect(try readText(dir + "/gantry/c1/memory.max") == "\(64 << 20)")
            #expect(try readText(dir + "/gantry/c1/memory.low") == "\(32 << 20)")
            #expect(try readText(dir + "/gantry/c1/memory.swap.max") == "\(32 << 20)")
            #expect(try readText(dir + "/gantry/c1/pids.max") == "64")
            #expect(try readText(dir + "/gantry/c1/io.weight") == "default 4950")
            try write("max\n", to: dir + "/gantry/c1/pids.max")
            let usage = try driver.usage("gantry/c1")
            #expect(usage.cpuNanoseconds == 1_500_000)
            #expect(usage.memory == 4096 && usage.memoryPeak == 8192 && usage.pids == 3 && usage.pidsLimit == nil)
            #expect(usage.oomKills == 1)
            try driver.setFrozen(true, "gantry/c1")
            #expect(try readText(dir + "/gantry/c1/cgroup.freeze") == "1")
            let (directory, tasks) = try driver.openForLaunch("gantry/c1")
            #expect(directory >= 0 && tasks.isEmpty)
            close(directory)
        }
    }

    @Test func limitsAreValidated() {
        #expect(throws: RuntimeError.self) { try ResourceLimits(cpuQuota: 10).validate() }
        #expect(throws: RuntimeError.self) { try ResourceLimits(memory: 64 << 20, memorySwap: 32 << 20).validate() }
        #expect(throws: RuntimeError.self) { try ResourceLimits(memorySwap: 32 << 20).validate() }
        #expect(throws: RuntimeError.self) { try ResourceLimits(cpusetCPUs: "0;1").validate() }
        #expect(throws: RuntimeError.self) { try ResourceLimits(pids: 0).validate() }
        #expect(CgroupV2Driver.weight(shares: 1024) == 39)
        #expect(CgroupV2Driver.weight(shares: 2) == 1)
        #expect(CgroupV2Driver.weight(shares: 262_144) == 10000)
    }

    @Test(.requiresRoot) func v1CreatesLimitsFreezesAndRemoves() async throws {
        guard let driver = try Cgroups.hostDriver() as? CgroupV1Driver else { return }
        let name = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())/c1"
        defer {
            try? driver.remove(name)
            for mount in Set(driver.controllerMounts.values) { rmdir(mount + "/" + name.split(separator: "/")[0]) }
        }
        try driver.create(name, limits: ResourceLimits(cpuQuota: 20000, cpuPeriod: 100_000, memory: 32 << 20, pids: 10))
        let memory = try #require(driver.controllerMounts["memory"])
        #expect(try readText(memory + "/" + name + "/memory.limit_in_bytes") == "\(32 << 20)\n")
        let usage = try driver.usage(name)
        #expect(usage.memoryLimit == 32 << 20 && usage.pidsLimit == 10 && usage.pids == 0)
        try driver.setFrozen(true, name)
        try driver.setFrozen(false, name)
        try driver.remove(name)
        #expect(!FileManager.default.fileExists(atPath: memory + "/" + name))
        try driver.remove(name)
    }
}

@Suite struct SeccompProfileTests {
    @Test func compilesTheDefaultProfile() throws {
        let program = try SeccompCompiler.compile(.default, capabilities: Capability.dockerDefault)
        #expect(program.count % 8 == 0 && program.count > 800)
        let privileged = try SeccompCompiler.compile(.default, capabilities: Capability.all)
        #expect(privileged != program)
    }

    @Test func readsDockerProfiles() throws {
        let profile = try SeccompProfile.decode(Data("""
        {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["SCMP_ARCH_X86"],
         "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"},
                      {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                      {"names": ["no_such_call"], "action": "SCMP_ACT_ALLOW"}]}
        """.utf8))
        #expect(profile.syscalls.map(\.names) == [["read"], ["personality"], ["no_such_call"]])
        #expect(try SeccompCompiler.compile(profile, capabilities: []).count > 0)
        #expect { try SeccompProfile.decode(Data(#"{"syscalls": []}"#.utf8)) } throws: {
            ($0 as? RuntimeError)?.message.contains("defaultAction") == true
        }
        #expect { try SeccompProfile.decode(Data(#"{"defaultAction": "SCMP_ACT_NOPE", "syscalls": []}"#.utf8)) } throws: {
            ($0 as? RuntimeError)?.code == .seccomp
        }
        // Docker's own default profile encodes and reads back unchanged.
        let data = try JSONEncoder().encode(SeccompProfile.default)
        #expect(try SeccompProfile.decode(data) == .default)
    }

    @Test func parsesCapabilities() throws {
        #expect(Capability.mask(Capability.dockerDefault) == 0xa804_25fb)
        #expect(try Capability.parse(["net_admin", "CAP_SYS_TIME"]).map(\.description).sorted() == ["CAP_NET_ADMIN", "CAP_SYS_TIME"])
        #expect(try Capability.parse(["ALL"]) == Capability.all)
        #expect { try Capability.parse(["NOT_A_CAP"]) } throws: { ($0 as? RuntimeError)?.message.contains("NOT_A_CAP") == true }
    }
}

@Suite struct ContainerLogTests {
    @Test func keepsBytesAndTimesThroughTheLog() async throws {
        try await withTemporaryDirectory("log") { dir in
            let path = dir + "/container.log"
            do {
                let writer = try ContainerLogWriter(path: path, options: .init(maxSize: 1 << 20, maxFiles: 2))
                let text = Array("tab\there \"quoted\" \\ back\nsecond".utf8)
                text.withUnsafeBytes { writer.append($0, stream: .stdout) }
                let binary: [UInt8] = [0xff, 0x00, 0x41, 0x0a]
                binary.withUnsafeBytes { writer.append($0, stream: .stderr) }
            }
            let follower = LogFollower(path: path, maxFiles: 2, streams: [.stdout, .stderr], follow: false, signal: nil) { true }
            var chunks: [OutputChunk] = []
            for try await chunk in follower { chunks.append(chunk) }
            #expect(chunks.map(\.bytes) == [Array("tab\there \"quoted\" \\ back\n".utf8), Array("second".utf8), [0xff, 0x00, 0x41, 0x0a]])
            #expect(chunks.map(\.stream) == [.stdout, .stdout, .stderr])
            #expect(abs(chunks[0].time.timeIntervalSinceNow) < 60)
            // Each line is JSON in Docker's json-file format.
            let first = try readText(path).split(separator: "\n")[0]
            let object = try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any]
            #expect(object?["stream"] as? String == "stdout")
            #expect((object?["time"] as? String)?.hasSuffix("Z") == true)
        }
    }
}
