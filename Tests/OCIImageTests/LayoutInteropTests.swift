import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct LayoutInteropTests {
    func layoutDigest(_ layout: String, tag: String) throws -> Digest {
        let index = try ImageLayout(opening: layout).descriptors(tagged: tag)
        return try #require(index.first).digest
    }

    func umociUnpack(_ image: String, _ bundle: String) throws {
        try run("umoci", ["unpack"] + (geteuid() == 0 ? [] : ["--rootless"]) + ["--image", image, bundle])
    }

    @Test func importsLayoutsWrittenByUmociAndSkopeo() async throws {
        try await withTemporaryDirectory("interop-in") { dir in
            try await Fixtures.busyboxLayout(dir + "/umoci", tag: "1.0", scratch: dir)
            try await run("skopeo", ["copy", "--quiet", "oci:\(dir)/umoci:1.0", "oci:\(dir)/skopeo:copied"])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            let fromUmoci = try await store.importLayout(at: dir + "/umoci", tag: "1.0", name: "bb:umoci")
            let fromSkopeo = try await store.importLayout(at: dir + "/skopeo", tag: "copied", name: "bb:skopeo")
            #expect(fromUmoci.first?.descriptor.digest == (try layoutDigest(dir + "/umoci", tag: "1.0")))
            #expect(fromSkopeo.first?.descriptor.digest == (try layoutDigest(dir + "/skopeo", tag: "copied")))
            #expect(try await store.inspect("bb:umoci").config.config?.cmd == ["/bin/sh"])

            // Without a name, the directory and the layout tag make one.
            let unnamed = try await store.importLayout(at: dir + "/umoci")
            #expect(unnamed.map(\.reference.familiarDescription) == ["umoci:1.0"])

            // umoci rounds times to whole seconds when it packs, so only the
            // rest is compared with the source; times are compared with
            // umoci's own unpacking elsewhere.
            let source = try snapshotTree(dir + "/busybox-rootfs", mtimes: false)
            for name in ["bb:umoci", "bb:skopeo"] {
                try await store.unpack(name, into: "\(dir)/out-\(name)", keepingPrivileges: true)
                let unpacked = try snapshotTree("\(dir)/out-\(name)", mtimes: false)
                #expect(differences(source, unpacked) == [], "\(name)")
            }
        }
    }

    @Test func exportedLayoutsAreReadBySkopeoAndUmoci() async throws {
        try await withTemporaryDirectory("interop-out") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            let first = try await store.importRootfs(at: dir + "/rootfs", name: "tools:1",
                                                     options: RootfsImportOptions(config: RunConfiguration(cmd: ["/bin/sh"])))
            try write("second", to: dir + "/rootfs/etc/version")
            let second = try await store.importRootfs(at: dir + "/rootfs", name: "tools:2")

            try await store.exportLayout("tools:1", to: dir + "/exported")
            try await store.exportLayout("tools:2", to: dir + "/exported", tag: "two")
            #expect(try ImageLayout(opening: dir + "/exported").tags().sorted() == ["1", "two"])

            for (tag, record) in [("1", first), ("two", second)] {
                let inspected = try await run("skopeo", ["inspect", "oci:\(dir)/exported:\(tag)"])
                let json = try #require(try JSONSerialization.jsonObject(with: Data(inspected.utf8)) as? [String: Any])
                #expect(json["Digest"] as? String == record.descriptor.digest.description)
            }
            try await run("skopeo", ["copy", "--quiet", "oci:\(dir)/exported:1", "oci:\(dir)/copied:1"])
            #expect(try layoutDigest(dir + "/copied", tag: "1") == first.descriptor.digest)

            try umociUnpack("\(dir)/exported:two", dir + "/bundle")
            try await store.unpack("tools:2", into: dir + "/ours", keepingPrivileges: true)
            let umociTree = try snapshotTree(dir + "/bundle/rootfs", directoryMtimes: false)
            let ours = try snapshotTree(dir + "/ours", directoryMtimes: false)
            #expect(differences(umociTree, ours) == [])
            #expect(try readText(dir + "/bundle/rootfs/etc/version") == "second")

            // And back again, unchanged.
            let other = try ImageStore(root: StateRoot(dir + "/state2"))
            let back = try await other.importLayout(at: dir + "/copied", tag: "1", name: "tools:back")
            #expect(back.first?.descriptor.digest == first.descriptor.digest)
        }
    }

    @Test func exportRefusesADirectoryThatIsNotALayout() async throws {
        try await withTemporaryDirectory("interop-refuse") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importRootfs(at: dir + "/rootfs", name: "tools:1")
            try write("mine", to: dir + "/busy/file")
            await #expect { try await store.exportLayout("tools:1", to: dir + "/busy") } throws: {
                ($0 as? OCIImageError)?.code == .invalidLayout && ($0 as? OCIImageError)?.message.contains("not empty") == true
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/busy") == ["file"])
        }
    }
}

@Suite struct LayoutConcurrencyTests {
    @Test func concurrentExportsKeepEveryTag() async throws {
        try await withTemporaryDirectory("layout-concurrent") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importRootfs(at: dir + "/rootfs", name: "tools:1")
            _ = try ImageLayout(creatingAt: dir + "/layout")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for tag in 0..<12 {
                    group.addTask { try await store.exportLayout("tools:1", to: dir + "/layout", tag: "t\(tag)") }
                }
                try await group.waitForAll()
            }
            #expect(try ImageLayout(opening: dir + "/layout").tags().sorted() == (0..<12).map { "t\($0)" }.sorted())
        }
    }
}
