import Testing
@testable import Runtime

@Suite struct CgroupHierarchyTests {
    @Test func detectsThisHost() throws {
        let hierarchy = try CgroupHierarchy.current()
        switch hierarchy.mode {
        case .unified:
            #expect(hierarchy.unifiedMount != nil)
            #expect(hierarchy.controllerMounts.isEmpty)
        case .hybrid:
            #expect(hierarchy.unifiedMount != nil)
            #expect(hierarchy.controllerMounts["memory"] != nil)
        case .legacy:
            #expect(hierarchy.controllerMounts["memory"] != nil)
        }
    }

    @Test func parsesPureV2() throws {
        let text = """
        22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
        26 28 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
        """
        let hierarchy = try CgroupHierarchy.parse(mountinfo: text)
        #expect(hierarchy.mode == .unified)
        #expect(hierarchy.unifiedMount == "/sys/fs/cgroup")
    }

    @Test func parsesHybrid() throws {
        let text = """
        30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw
        31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:6 - cgroup cgroup rw,cpu,cpuacct
        32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:7 - cgroup cgroup rw,memory
        33 25 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:8 - cgroup cgroup rw,xattr,name=systemd
        34 25 0:30 / /mnt/with\\040space rw shared:9 - cgroup cgroup rw,pids
        """
        let hierarchy = try CgroupHierarchy.parse(mountinfo: text)
        #expect(hierarchy.mode == .hybrid)
        #expect(hierarchy.controllerMounts["cpu"] == "/sys/fs/cgroup/cpu,cpuacct")
        #expect(hierarchy.controllerMounts["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct")
        #expect(hierarchy.controllerMounts["memory"] == "/sys/fs/cgroup/memory")
        #expect(hierarchy.controllerMounts["pids"] == "/mnt/with space")
        #expect(hierarchy.controllerMounts["systemd"] == nil)
        #expect(hierarchy.controllerMounts["xattr"] == nil)
    }

    @Test func refusesHostWithoutCgroups() {
        #expect(throws: RuntimeError.self) {
            try CgroupHierarchy.parse(mountinfo: "22 28 0:21 / /proc rw - proc proc rw\n")
        }
    }
}

@Suite struct SeccompLibraryTests {
    @Test func resolvesSyscalls() {
        #expect(SeccompLibrary.version.split(separator: ".").count == 3)
        #expect(SeccompLibrary.syscallNumber("read") != nil)
        #if arch(x86_64)
        #expect(SeccompLibrary.syscallNumber("read") == 0)
        #endif
        #expect(SeccompLibrary.syscallNumber("no_such_syscall") == nil)
    }
}
