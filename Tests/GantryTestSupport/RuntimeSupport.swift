import Foundation
import OCIImage
import Runtime
import Testing

/// A state root with a busybox image (`busybox:test`) and a runtime whose
/// containers live under a cgroup parent of their own. Afterwards every
/// container, network and cgroup is gone, which the fixture checks.
public func withBusyboxRuntime<T>(_ label: String, applets: [String] = [], _ body: (ContainerRuntime, String) async throws -> T) async throws -> T {
    try await withTemporaryDirectory(label) { dir in
        let rootfs = dir + "/rootfs"
        try makeBusyboxRootfs(rootfs, applets: applets)
        let images = try ImageStore(root: StateRoot(dir + "/state"))
        try await images.importRootfs(at: rootfs, name: "busybox:test")
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        let runtime = try ContainerRuntime(images: images, cgroupParent: parent)
        func cleanUp() async throws {
            let left = try runtime.list()
            #expect(left.isEmpty, "containers left: \(left.map(\.name))")
            for record in left { try await runtime.container(record.id).remove(force: true) }
            for network in try runtime.networks.list() { try await runtime.networks.remove(network.name) }
            try runtime.cgroups.remove(parent)
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
