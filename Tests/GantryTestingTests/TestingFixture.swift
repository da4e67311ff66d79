import Foundation
import GantryTestSupport
import GantryTesting
import Runtime
import Testing

/// A session over a state root of its own holding `busybox:test`, its
/// containers under a cgroup parent of their own. Afterwards the fixture
/// checks that the test left no container, network or volume, and
/// removes the cgroup parent.
func withTestingSession<T>(_ label: String, _ body: (TestSession, String) async throws -> T) async throws -> T {
    try await withTemporaryDirectory(label) { dir in
        try makeBusyboxRootfs(dir + "/rootfs", applets: ["nc", "touch", "grep", "test", "timeout"])
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        return try await withSessionReleased(dir: dir, parent: parent, body)
    }
}

/// The session lives only in here, so that its database is closed before
/// the temporary directory checks for open descriptors.
private func withSessionReleased<T>(dir: String, parent: String, _ body: (TestSession, String) async throws -> T) async throws -> T {
    let session = try TestSession(root: StateRoot(dir + "/state"), cgroupParent: parent)
    try await session.gantry.images.importRootfs(at: dir + "/rootfs", name: "busybox:test")
    func cleanUp() async throws {
        let runtime = try session.runtime
        let left = try runtime.list()
        #expect(left.isEmpty, "containers left: \(left.map(\.name))")
        for record in left { try await runtime.container(record.id).remove(force: true) }
        let networks = try runtime.networks.list().filter { $0.name != Networks.defaultName }
        #expect(networks.isEmpty, "networks left: \(networks.map(\.name))")
        for network in try runtime.networks.list() { try await runtime.networks.remove(network.name) }
        let volumes = try runtime.volumes.list()
        #expect(volumes.isEmpty, "volumes left: \(volumes.map(\.name))")
        for volume in volumes { try await runtime.volumes.remove(volume.name) }
        try runtime.cgroups.remove(parent)
    }
    do {
        let result = try await body(session, dir)
        try await cleanUp()
        return result
    } catch {
        try? await cleanUp()
        throw error
    }
}

/// A busybox web server that serves `text` as its index page on port 80.
func webServer(_ text: String = "hello from the container") -> TestContainer {
    TestContainer(image: "busybox:test", command: ["httpd", "-f", "-p", "80", "-h", "/www"])
        .copying(contents: text, to: "/www/index.html")
}
