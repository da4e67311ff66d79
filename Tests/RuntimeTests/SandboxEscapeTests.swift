import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

/// Hostile images and containers must not reach the host.
@Suite(.requiresRoot) struct SandboxEscapeTests {
    @Test func refusesMagicLinksAsWorkingDirectoryAndProgram() async throws {
        try await withRuntime("escape-links") { runtime, dir in
            var cwd = shell("ls ..")
            cwd.workingDirectory = "/proc/self/fd/3"
            await #expect { try await runtime.run(cwd) } throws: { ($0 as? RuntimeError)?.message.contains("working directory") == true }
            // The host's own binary, run inside, could be rewritten from there.
            let exe = ContainerSpec(image: "busybox:test", command: ["/proc/self/exe"])
            await #expect { try await runtime.run(exe) } throws: { ($0 as? RuntimeError)?.message.contains("exec") == true }
            let rootfs = dir + "/script-root"
            try makeBusyboxRootfs(rootfs)
            try write("#!/proc/self/exe\n", to: rootfs + "/bin/evil")
            chmod(rootfs + "/bin/evil", 0o755)
            await #expect { try await runtime.run(ContainerSpec(root: .directory(rootfs), command: ["/bin/evil"])) } throws: {
                ($0 as? RuntimeError)?.message.contains("exec") == true
            }
        }
    }

    @Test func deviceNodesMadeInsideOpenNothing() async throws {
        try await withRuntime("escape-mknod") { runtime, _ in
            var disk = stat()
            #expect(stat("/", &disk) == 0)
            let major = (disk.st_dev >> 8) & 0xfff
            let minor = (disk.st_dev & 0xff) | ((disk.st_dev >> 12) & 0xfff00)
            let script = """
            mknod /disk b \(major) \(minor) && echo made
            head -c 1 /disk >/dev/null 2>&1 && echo READ-HOST-DISK || echo refused
            mknod /dev/disk b \(major) \(minor) && head -c 1 /dev/disk >/dev/null 2>&1 && echo READ-HOST-DISK || echo refused
            echo x > /dev/null && echo null-works
            """
            let (_, output) = try await runCollecting(runtime, shell(script))
            #expect(!output.contains("READ-HOST-DISK"), "\(output)")
            #expect(output.contains("null-works"))
        }
    }

    @Test func symlinkedDevStaysInsideTheRoot() async throws {
        try await withRuntime("escape-dev") { runtime, dir in
            let outside = dir + "/outside"
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            let rootfs = dir + "/dev-root"
            try makeBusyboxRootfs(rootfs)
            try FileManager.default.createSymbolicLink(atPath: rootfs + "/dev", withDestinationPath: outside)
            // A dangling /dev (its target resolved inside the root) is refused;
            // either way nothing lands outside.
            await #expect { try await runtime.run(ContainerSpec(root: .directory(rootfs), command: ["true"])) } throws: {
                ($0 as? RuntimeError)?.message.contains("mounts") == true
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
            // Pointing inside the root, it works, and the nodes are made there.
            try FileManager.default.removeItem(atPath: rootfs + "/dev")
            try FileManager.default.createDirectory(atPath: rootfs + "/real-dev", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: rootfs + "/dev", withDestinationPath: "/real-dev")
            let (exit, output) = try await runCollecting(runtime, ContainerSpec(root: .directory(rootfs), command: ["sh", "-c", "echo ok > /dev/null && echo fine"]))
            #expect(exit.code == 0 && output == "fine\n")
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
        }
    }
}
