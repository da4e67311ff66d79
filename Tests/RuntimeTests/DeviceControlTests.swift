import CGantrySystem
import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

@Suite struct DeviceRuleTests {
    @Test func parsesRulesAsDockerWritesThem() throws {
        #expect(try DeviceRule(parsing: "c 1:3 rwm") == DeviceRule(.character, major: 1, minor: 3))
        #expect(try DeviceRule(parsing: "b *:* m") == DeviceRule(.block, major: nil, minor: nil, access: .mknod))
        #expect(try DeviceRule(parsing: "c 189:* rw") == DeviceRule(.character, major: 189, minor: nil, access: [.read, .write]))
        #expect(try DeviceRule(parsing: "a") == DeviceRule(.all, major: nil, minor: nil))
        #expect(try DeviceRule(parsing: "c 10:200").access == .all)
        #expect(DeviceRule(.block, major: 8, minor: nil, access: [.mknod, .read]).description == "b 8:* rm")
        for bad in ["", "x 1:3 rwm", "c 1 rwm", "c 1:3 rwx", "c one:3 r", "c 1:3 r extra", "a 1:3"] {
            #expect(throws: RuntimeError.self, "\(bad)") { try DeviceRule(parsing: bad) }
        }
    }

    @Test func parsesDevicesAsDockerWritesThem() throws {
        #expect(try ContainerSpec.Device(parsing: "/dev/fuse") == ContainerSpec.Device("/dev/fuse"))
        #expect(try ContainerSpec.Device(parsing: "/dev/sdb:/dev/xvdb") == ContainerSpec.Device("/dev/sdb", at: "/dev/xvdb"))
        #expect(try ContainerSpec.Device(parsing: "/dev/sdb:r") == ContainerSpec.Device("/dev/sdb", access: .read))
        #expect(try ContainerSpec.Device(parsing: "/dev/sdb:/dev/xvdb:rw") == ContainerSpec.Device("/dev/sdb", at: "/dev/xvdb", access: [.read, .write]))
        for bad in ["", "dev/sdb", "/dev/sdb:", "/dev/sdb:/dev/xvdb:rwz", "/dev/sdb:xvdb:r", "/a:/b:r:extra"] {
            #expect(throws: RuntimeError.self, "\(bad)") { try ContainerSpec.Device(parsing: bad) }
        }
    }

    @Test func splitsDeviceNumbersAsTheCLibraryDoes() {
        for (major, minor) in [(1, 3), (8, 17), (259, 70000), (4095, 1_048_575)] as [(UInt32, UInt32)] {
            #expect(DeviceRule.numbers(of: UInt64(gantry_makedev(major, minor))) == (major, minor))
        }
    }
}

/// A loop device over a file that starts with `content`, for `body`.
func withLoopDevice<T>(_ content: String, _ body: (_ path: String, _ major: UInt32, _ minor: UInt32) async throws -> T) async throws -> T {
    try await withTemporaryDirectory("loop") { dir in
        let backing = dir + "/disk.img"
        var bytes = Array(content.utf8)
        bytes += [UInt8](repeating: 0, count: (1 << 20) - bytes.count)
        try Data(bytes).write(to: URL(fileURLWithPath: backing))
        let device = try await run("losetup", ["--find", "--show", backing]).trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            var info = stat()
            try #require(stat(device, &info) == 0)
            let (major, minor) = DeviceRule.numbers(of: UInt64(info.st_rdev))
            let result = try await body(device, major, minor)
            _ = try await run("losetup", ["--detach", device])
            return result
        } catch {
            _ = try? await run("losetup", ["--detach", device])
            throw error
        }
    }
}

@Suite(.requiresRoot, .serialized) struct DeviceControlTests {
    /// A script that mounts a file system allowing device nodes, makes a
    /// node of block device `major:minor` there, and reports what reading
    /// it (and, with `write`, writing it) gave.
    func probe(_ major: UInt32, _ minor: UInt32, write: Bool) -> ContainerSpec {
        var script = "mkdir -p /mnt && mount -t tmpfs -o dev,mode=755 none /mnt && mknod /mnt/node b \(major) \(minor) && echo made; "
        script += "head -c 16 /mnt/node 2>&1; echo \" read=$?\"; "
        if write { script += "(printf written > /mnt/node) 2>&1; echo \" write=$?\"" }
        var spec = shell(script)
        // What keeps the node from the host's device is the allow list
        // alone: the container may mount, make nodes and call anything.
        spec.capabilitiesAdded = ["SYS_ADMIN"]
        spec.seccomp = .unconfined
        return spec
    }

    @Test func aNodeMadeInsideOpensNoDeviceOfTheHost() async throws {
        try await withRuntime("dev-mknod") { runtime, _ in
            // The host's own disks, read only: a failure must not harm them.
            let disks = try String(contentsOfFile: "/proc/partitions", encoding: .utf8).split(separator: "\n").dropFirst(2).compactMap { line -> (UInt32, UInt32)? in
                let fields = line.split(separator: " ")
                guard fields.count == 4, !fields[3].hasPrefix("loop"), !fields[3].hasPrefix("ram"),
                      let major = UInt32(fields[0]), let minor = UInt32(fields[1]) else { return nil }
                return (major, minor)
            }
            for (major, minor) in disks.prefix(2) {
                let (exit, output) = try await runCollecting(runtime, probe(major, minor, write: false))
                #expect(exit.code == 0, "\(output)")
                #expect(output.contains("made") && output.contains("Operation not permitted") && output.contains("read=1"),
                        "a node of the host's disk \(major):\(minor) made in the container opened: \(output)")
            }
            try await withLoopDevice("gantry-loop-data") { _, major, minor in
                let (_, denied) = try await runCollecting(runtime, probe(major, minor, write: true))
                #expect(denied.contains("made") && denied.contains("Operation not permitted") && denied.contains("read=1") && denied.contains("write=1")
                        && !denied.contains("gantry-loop-data"), "\(denied)")
                // The same with the device allowed for reading: the probe can tell.
                let allowed = probe(major, minor, write: true).allowingDevices(DeviceRule(.block, major: major, minor: minor, access: .read))
                let (_, read) = try await runCollecting(runtime, allowed)
                #expect(read.contains("gantry-loop-data") && read.contains("read=0") && read.contains("write=1"), "\(read)")
                // An entry for every device gives only the access it names.
                let (_, all) = try await runCollecting(runtime, probe(major, minor, write: true).allowingDevices(try DeviceRule(parsing: "a *:* rm")))
                #expect(all.contains("gantry-loop-data") && all.contains("read=0") && all.contains("write=1"), "\(all)")
            }
        }
    }

    @Test func aDeviceGivenIsUsableAsGivenAndNoMore() async throws {
        try await withRuntime("dev-given") { runtime, _ in
            try await withLoopDevice("gantry-loop-data") { device, _, _ in
                let readOnly = shell("head -c 16 /dev/xvdb; echo; (printf changed > /dev/xvdb) 2>&1; echo \"write=$?\"")
                    .device(device, at: "/dev/xvdb", access: .read)
                let (_, output) = try await runCollecting(runtime, readOnly)
                #expect(output.hasPrefix("gantry-loop-data\n") && output.contains("Operation not permitted") && output.contains("write=1"), "\(output)")
                let readWrite = shell("printf gantry-written > /dev/xvdb; echo \"write=$?\"").device(device, at: "/dev/xvdb", access: [.read, .write])
                let (_, written) = try await runCollecting(runtime, readWrite)
                #expect(written == "write=0\n", "\(written)")
                let (_, after) = try await runCollecting(runtime, shell("head -c 14 /dev/sdz").device(device, at: "/dev/sdz", access: .read))
                #expect(after == "gantry-written")
            }
            // What is not a device, or not there, is refused at creation, by name.
            for (path, words) in [("/etc/passwd", "is not a device node"), ("/dev/no-such-device", "does not exist")] {
                do {
                    _ = try await runtime.create(shell("true").device(path))
                    Issue.record("a container was created with device \(path)")
                } catch let error as RuntimeError {
                    #expect(error.code == .invalidSpec && error.message.contains(path) && error.message.contains(words), "\(error)")
                }
            }
        }
    }

    @Test func theDeviceProgramAllowsOnlyItsList() async throws {
        // Attached to a cgroup2 group: on a hybrid host the unified
        // hierarchy holds no controller, but device programs work there.
        guard let mount = try CgroupHierarchy.current().unifiedMount else { return }
        let driver = CgroupV2Driver(mountPoint: mount)
        let name = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        try Sys.makeDirectories(mount + "/" + name)
        defer { rmdir(mount + "/" + name) }
        let withoutZero = DeviceRule.defaults.filter { !($0.major == 1 && $0.minor == 5) }
        try driver.allowDevices(withoutZero, in: name)
        let script = "echo $$ > \(mount)/\(name)/cgroup.procs || exit 9; head -c 1 /dev/null && echo null-opens; "
            + "head -c 1 /dev/zero > /dev/null 2>&1 && echo zero-opens || echo zero-refused"
        let output = try await run("/bin/sh", ["-c", script])
        #expect(output == "null-opens\nzero-refused\n")
    }
}
