import Foundation
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

@Suite struct ContainerRecordEncodingTests {
    /// The record is written as its fixed, spec and changing parts joined:
    /// they must cover every field, so that the joined text decodes as the
    /// record.
    @Test func fixedAndChangingPartsCoverTheRecord() throws {
        var record = ContainerRecord(
            id: String(repeating: "a", count: 64), name: "encoded", spec: ContainerSpec(image: "busybox:test", command: ["true"]),
            process: ResolvedProcess(arguments: ["true"], environment: ["A=1"], workingDirectory: "/", uid: 1, gid: 2, groups: [3]),
            imageDigest: "sha256:" + String(repeating: "b", count: 64), cgroup: "gantry/x", status: .stopped,
            ownerPid: 10, ownerStartTime: 11, createdAt: Date(timeIntervalSince1970: 1), layers: ["/l1", "/l2"])
        record.pid = 12
        record.pidStartTime = 13
        record.startedAt = Date(timeIntervalSince1970: 2)
        record.finishedAt = Date(timeIntervalSince1970: 3)
        record.exit = ContainerExit(status: .signaled(9), reason: .oomKilled)
        record.stopRequested = true
        let fixed = ContainerRecord.joinObjects(
            try ContainerRuntime.encoder.encode(ContainerRecord.FixedFields(record)),
            try ContainerRuntime.encoder.encode(ContainerRecord.SpecField(spec: record.spec)))
        let joined = ContainerRecord.joinObjects(fixed, try ContainerRuntime.encoder.encode(ContainerRecord.ChangingFields(record)))
        #expect(try ContainerRecord.decode(joined) == record)
        let whole = try JSONSerialization.jsonObject(with: ContainerRuntime.encoder.encode(ContainerRecord.Stored(record))) as? [String: Any]
        let parts = try JSONSerialization.jsonObject(with: joined) as? [String: Any]
        #expect(Set(whole?.keys ?? [:].keys) == Set(parts?.keys ?? [:].keys))
        #expect(record.fixedFieldsEqual(record))
    }
}
