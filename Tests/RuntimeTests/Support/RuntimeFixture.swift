import Foundation
import GantryTestSupport
import OCIImage
import Testing
@testable import Runtime

/// Busybox applets the runtime tests use.
let busyboxApplets = [
    "hostname", "tty", "mount", "unshare", "mknod", "ps", "grep", "head", "tail", "tr", "seq", "wc", "touch", "stat", "mkdir", "dd",
    "yes", "date", "pwd", "sed", "cut", "sort", "xargs", "kill", "nproc", "rm", "printf", "test", "[", "ip", "timeout", "nslookup", "readlink",
]

/// A state root with a busybox image (`busybox:test`) and a runtime over
/// it whose containers live under a cgroup parent of their own; afterwards
/// every container, cgroup and file is gone, which the fixture checks.
func withRuntime<T>(_ label: String, probe: Bool = false, fixtures: [String] = [], nameservers: [String]? = nil,
                   _ body: (ContainerRuntime, String) async throws -> T) async throws -> T {
    try await withTemporaryDirectory(label) { dir in
        let rootfs = dir + "/rootfs"
        try makeBusyboxRootfs(rootfs, applets: busyboxApplets)
        if probe { try await compileProbe(into: rootfs + "/bin/syscall-probe") }
        for fixture in fixtures { try await compileFixture(fixture, into: rootfs + "/bin/" + fixture) }
        let images = try ImageStore(root: StateRoot(dir + "/state"))
        try await images.importRootfs(at: rootfs, name: "busybox:test")
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        let runtime = try ContainerRuntime(images: images, cgroupParent: parent, nameservers: nameservers)
        func cleanUp() async throws {
            for record in try runtime.list() {
                try await runtime.container(record.id).remove(force: true)
            }
            #expect(try runtime.list().isEmpty)
            for pod in try runtime.pods.list() { try await runtime.pods.remove(pod.name) }
            // Networks are the host's bridges and rules: none may outlive the test.
            for damaged in runtime.networks.damaged() { try? runtime.networks.removeDamaged(damaged.name) }
            for network in try runtime.networks.list() {
                try await runtime.networks.remove(network.name)
                #expect(try RouteNetlink().link(network.bridge) == nil, "bridge \(network.bridge) is left")
                #expect(!(try Firewall.listRules()).contains { $0.comment == Firewall.networkTag(network.id) })
            }
            try removeCgroupParent(parent, runtime: runtime)
        }
        do {
            let result = try await body(runtime, dir)
            try await cleanUp()
            return result
        } catch {
            try? await cleanUp()
            throw error
        }
    }
}

/// The directories of a cgroup in every hierarchy the driver uses.
func cgroupDirectories(_ name: String, runtime: ContainerRuntime) -> [String] {
    if let v1 = runtime.cgroups as? CgroupV1Driver {
        return Set(v1.controllerMounts.values).sorted().map { $0 + "/" + name }
    }
    if let v2 = runtime.cgroups as? CgroupV2Driver { return [v2.mountPoint + "/" + name] }
    return []
}

/// Checks that no container cgroup is left under `parent`, then removes it.
func removeCgroupParent(_ parent: String, runtime: ContainerRuntime) throws {
    for directory in cgroupDirectories(parent, runtime: runtime) where FileManager.default.fileExists(atPath: directory) {
        let children = try FileManager.default.contentsOfDirectory(atPath: directory).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + $0, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        #expect(children.isEmpty, "cgroups left under \(directory): \(children)")
        rmdir(directory)
    }
}

/// Builds the static syscall probe into a root file system.
func compileProbe(into path: String) async throws {
    try await compileFixture("syscall-probe", into: path)
}

/// Builds a C program of `Fixtures/` statically into a root file system.
func compileFixture(_ name: String, into path: String) async throws {
    let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/\(name).c").path
    _ = try await run("cc", ["-static", "-O1", "-o", path, source])
}

/// Runs `spec` to its end in `runtime`; returns its exit and all its output.
func runCollecting(_ runtime: ContainerRuntime, _ spec: ContainerSpec) async throws -> (ContainerExit, String) {
    let (text, exit) = try await runtime.run(spec) { try await $0.output.text() }
    return (exit, text)
}

/// A busybox container running `script` with `sh -c`.
func shell(_ script: String) -> ContainerSpec {
    ContainerSpec(image: "busybox:test", command: ["sh", "-c", script])
}

/// Waits (up to 20 s, however busy the machine) until the container has printed `text`.
func waitForOutput(_ container: Container, _ text: String) async throws {
    for _ in 0 ..< 2000 {
        if try await container.logs.text().contains(text) { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("container \(container.name) did not print \(text)")
}
