import Foundation
import GantryTestSupport
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Named volumes and bind mounts on the real kernel.
@Suite(.requiresRoot) struct VolumeTests {
    @Test func volumeDataOutlivesItsContainersAndANewVolumeIsSeededFromTheImage() async throws {
        try await withRuntime("vol-data") { runtime, dir in
            // A new volume takes what the image has at its mount point.
            let (first, seeded) = try await runCollecting(runtime, shell("cat /etc/group; echo kept > /etc/kept")
                .mounting(.volume(name: "config", target: "/etc")))
            #expect(first.code == 0)
            #expect(seeded.contains("root:x:0:"), "the volume was not seeded: \(seeded)")
            let record = try runtime.volumes.volume("config")
            #expect(FileManager.default.fileExists(atPath: record.mountpoint + "/passwd"))

            // Its data outlives the container, and is not seeded again.
            try FileManager.default.removeItem(atPath: record.mountpoint + "/group")
            let (second, kept) = try await runCollecting(runtime, shell("cat /etc/kept; ls /etc")
                .mounting(.volume(name: "config", target: "/etc")))
            #expect(second.code == 0)
            #expect(kept.hasPrefix("kept\n") && !kept.contains("group"), "\(kept)")

            // Read-only mounts refuse writes.
            let (readOnly, _) = try await runCollecting(runtime, shell("echo x > /etc/kept")
                .mounting(.volume(name: "config", target: "/etc", readOnly: true)))
            #expect(readOnly.code != 0)
            #expect(try String(contentsOfFile: record.mountpoint + "/kept", encoding: .utf8) == "kept\n")

            // Device nodes made in a volume or a bind open nothing.
            let devices = try await runCollecting(runtime, shell("""
                mknod /etc/disk c 1 5 && mknod /mnt/disk c 1 5 && echo made; for d in /etc/disk /mnt/disk; do head -c 1 $d >/dev/null 2>&1 && echo $d opened; done; true
                """).mounting(.volume(name: "config", target: "/etc"), .bind(source: dir, target: "/mnt")))
            #expect(devices.0.code == 0)
            #expect(devices.1 == "made\n", "\(devices.1)")
            unlink(dir + "/disk")
            unlink(record.mountpoint + "/disk")

            // A volume in use cannot go, even by a stopped container; prune keeps it too.
            let holder = try await runtime.create(shell("true").named("holder").mounting(.volume(name: "config", target: "/data")))
            #expect(try runtime.volumes.containers(using: "config") == ["holder"])
            #expect(throws: RuntimeError.self) { try runtime.volumes.remove("config") }
            try await runtime.volumes.create("spare")
            await #expect(try runtime.volumes.prune() == ["spare"])
            try await holder.remove()
            try await runtime.volumes.remove("config")
            #expect(!FileManager.default.fileExists(atPath: record.mountpoint))
            #expect(try runtime.volumes.list().isEmpty)
        }
    }

    @Test func seedingKeepsHardLinksAsLinks() async throws {
        try await withRuntime("vol-links") { runtime, dir in
            let rootfs = dir + "/linked"
            try makeBusyboxRootfs(rootfs)
            try FileManager.default.createDirectory(atPath: rootfs + "/data/sub", withIntermediateDirectories: true)
            try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: rootfs + "/data/file"))
            try FileManager.default.linkItem(atPath: rootfs + "/data/file", toPath: rootfs + "/data/sub/again")
            try await runtime.images.importRootfs(at: rootfs, name: "linked:test")
            let container = try await runtime.create(ContainerSpec(image: "linked:test", command: ["true"])
                .mounting(.volume(name: "linked", target: "/data")))
            let data = try runtime.volumes.volume("linked").mountpoint
            var first = stat(), second = stat()
            #expect(stat(data + "/file", &first) == 0 && stat(data + "/sub/again", &second) == 0)
            #expect(first.st_ino == second.st_ino && first.st_nlink == 2, "a hard link was copied as a second file")
            #expect(first.st_size == 1 << 20)
            try await container.remove()
            try await runtime.volumes.remove("linked")
            _ = try await runtime.images.remove("linked:test")
        }
    }

    @Test func volumeNamesAreChecked() async throws {
        try await withRuntime("vol-names") { runtime, _ in
            #expect(throws: RuntimeError.self) { try runtime.volumes.create("../escape") }
            try runtime.volumes.create("one")
            #expect(throws: RuntimeError.self) { try runtime.volumes.create("one") }
            #expect(throws: RuntimeError.self) { try runtime.volumes.volume("missing") }
            try runtime.volumes.remove("one")
        }
    }

    @Test func bindPropagationDecidesWhetherTheHostsLaterMountsAppear() async throws {
        try await withRuntime("vol-propagation") { runtime, dir in
            // A shared mount on the host, as / is on most systems.
            let shared = dir + "/shared"
            try FileManager.default.createDirectory(atPath: shared + "/sub", withIntermediateDirectories: true)
            try await run("mount", ["--bind", shared, shared])
            try await run("mount", ["--make-shared", shared])
            defer { _ = try? run("umount", ["-R", shared]) }

            let slave = try await runtime.create(shell("sleep 600")
                .mounting(.bind(source: shared, target: "/mnt", propagation: .rslave)))
            let isolated = try await runtime.create(shell("sleep 600").mounting(.bind(source: shared, target: "/mnt")))
            try await slave.start()
            try await isolated.start()
            try await run("mount", ["-t", "tmpfs", "tmpfs", shared + "/sub"])
            try "later\n".write(toFile: shared + "/sub/file", atomically: false, encoding: .utf8)

            func read(_ container: Container) async throws -> String {
                let process = try await container.exec(ExecSpec(["sh", "-c", "cat /mnt/sub/file 2>/dev/null || echo absent"]))
                var output = ""
                for try await chunk in process.output { output += chunk.text }
                return output
            }
            #expect(try await read(slave) == "later\n", "an rslave bind sees the host's new mount")
            #expect(try await read(isolated) == "absent\n", "an rprivate bind does not")
            // Nothing the container mounts reaches the host.
            let inside = try await slave.exec(ExecSpec(["mount", "-t", "tmpfs", "tmpfs", "/mnt"]))
            _ = await inside.wait()
            let onHost = mounts(under: shared)
            #expect(onHost.allSatisfy { $0 == shared || $0 == shared + "/sub" }, "mounts under \(shared): \(onHost)")
            try await slave.remove(force: true)
            try await isolated.remove(force: true)
        }
    }
}
