import Foundation
import GantryTestSupport
import Testing
import CGantrySystem
@testable import Runtime

@Suite struct LauncherTests {
    /// Launches `command` in busybox with every namespace but the user's;
    /// returns the exit and standard output.
    func launch(_ dir: String, _ command: String, configure: (inout LaunchPlan) -> Void = { _ in }) async throws -> (ProcessExit, String) {
        let rootfs = dir + "/rootfs"
        if !FileManager.default.fileExists(atPath: rootfs) { try makeBusyboxRootfs(rootfs, applets: ["hostname", "mount", "ps"]) }
        var output: [Int32] = [0, 0]
        #expect(gantry_pipe(&output) == 0)
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        let flags = Namespaces.isolated.rawValue
        var plan = LaunchPlan(executables: ["/bin/sh"], arguments: ["sh", "-c", command], environment: [ContainerDefaults.path],
                              workingDirectory: "/", cloneFlags: flags, hostname: "box", rootfs: rootfs,
                              stdin: null, stdout: output[1], stderr: output[1])
        plan.mounts = ContainerDefaults.mounts(ownNetwork: true)
        plan.maskedPaths = ContainerDefaults.maskedPaths
        plan.readonlyPaths = ContainerDefaults.readonlyPaths
        plan.capabilities = CapabilitySets.container(0x0000_0000_a804_25fb)
        configure(&plan)
        let process = try Launcher.launch(plan, what: "busybox")
        close(output[1])
        let handle = FileHandle(fileDescriptor: output[0], closeOnDealloc: true)
        let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        let exit = await ProcessSupervisor.shared.exit(of: process.pidfd)
        close(process.pidfd)
        if process.mountNamespace >= 0 { close(process.mountNamespace) }
        return (exit, text)
    }

    @Test(.requiresRoot) func runsInItsOwnNamespaces() async throws {
        try await withTemporaryDirectory("launch") { dir in
            let host = getpid()
            let (exit, output) = try await launch(dir, "echo hello; echo pid=$$; hostname; test -d /proc/\(host) || echo host-hidden; exit 3")
            #expect(exit == .exited(3))
            #expect(output == "hello\npid=1\nbox\nhost-hidden\n")
        }
    }

    @Test(.requiresRoot) func appliesTheDefaultsOfASandbox() async throws {
        try await withTemporaryDirectory("launch-sandbox") { dir in
            let script = """
            grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
            touch /sys/x 2>/dev/null || echo sys-read-only
            cat /proc/kcore 2>/dev/null | wc -c
            echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-read-only
            ls /dev | tr '\\n' ' '
            """
            let (exit, output) = try await launch(dir, script)
            #expect(exit == .exited(0))
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.contains("CapEff:\t00000000a80425fb"))
            #expect(lines.contains("NoNewPrivs:\t1"))
            #expect(lines.contains("sys-read-only"))
            #expect(lines.contains("0"))
            #expect(lines.contains("proc-sys-read-only"))
            let devices = Set((lines.last ?? "").split(separator: " ").map(String.init))
            #expect(devices.isSuperset(of: ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd"]))
        }
    }

    @Test(.requiresRoot) func reportsTheFailingStep() async throws {
        try await withTemporaryDirectory("launch-fail") { dir in
            await #expect {
                _ = try await launch(dir, "true") { $0.executables = ["/bin/no-such-program"] }
            } throws: { error in
                let error = error as? RuntimeError
                return error?.code == .launch && error?.message.contains("exec") == true && error?.systemError == .noSuchFileOrDirectory
            }
            await #expect {
                _ = try await launch(dir, "true") { $0.workingDirectory = "/etc/passwd/x" }
            } throws: { ($0 as? RuntimeError)?.message.contains("working directory") == true }
        }
    }
}
