import CGantrySystem
import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct UnpackTests {
    /// Everything under `directory` whose name contains `fragment`.
    func find(_ fragment: String, under directory: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: directory)
        var found: [String] = []
        while let path = enumerator?.nextObject() as? String {
            if Sys.lastComponent(of: path).contains(fragment) { found.append(path) }
        }
        return found
    }

    @Test(.requiresRoot) func mergedUnpackMatchesUmoci() async throws {
        try await withTemporaryDirectory("rich") { dir in
            try await Fixtures.layers("rich", into: dir)
            try await Fixtures.umociLayout(dir + "/layout", tag: "rich", layers: ["layer1", "layer2", "layer3"].map { "\(dir)/\($0).tar" })
            try await run("umoci", ["unpack", "--image", dir + "/layout:rich", dir + "/bundle"])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importLayout(at: dir + "/layout", tag: "rich", name: "rich:1")
            let report = try await store.unpack("rich:1", into: dir + "/ours", keepingPrivileges: true)
            #expect(report.layers == 3)

            let expected = try snapshotTree(dir + "/bundle/rootfs")
            let actual = try snapshotTree(dir + "/ours")
            #expect(differences(expected, actual) == [])

            // What the layers were made to exercise is really there.
            #expect(actual["file-to-remove"] == nil && actual["dir-to-remove/inner"] == nil)
            #expect(actual["dir-to-remove/reborn"]?.type == "file")
            #expect(actual.keys.filter { $0.hasPrefix("dir-opaque/") }.sorted() == ["dir-opaque/new"])
            #expect(actual["usr/lib/libthrough.so"]?.type == "file")
            #expect(actual["usr/lib"]?.mode == 0o750 && actual["usr/lib"]?.uid == 3)
            #expect(actual["usr/bin/setuid"]?.mode == 0o4755)
            #expect(actual["usr/bin/setgid"]?.mode == 0o2755 && actual["usr/bin/setgid"]?.gid == 50)
            #expect(actual["usr/bin/ping"]?.xattrs["security.capability"] != nil)
            #expect(actual["opt/app/owned"]?.xattrs.keys.sorted() == ["trusted.gantry", "user.comment"])
            #expect(actual["opt/app/owned"]?.uid == 1000)
            #expect(actual["var/lib/fifo"]?.type == "fifo")
            #expect(actual["dev/null-copy"]?.type == "char" && actual["dev/loop-copy"]?.type == "block")
            #expect(actual["symlink-becomes-file"]?.type == "symlink" && actual["file-becomes-symlink"]?.type == "file")
            #expect(actual["tmp"]?.mode == 0o1777)
            #expect(actual.keys.contains { $0.hasSuffix(String(repeating: "n", count: 200)) })
            #expect(actual.keys.contains("usr/share/doc/na\u{ef}ve-\u{6587}\u{5b57}.txt"))
            var hardlinks = (stat(), stat())
            stat(dir + "/ours/usr/bin/tool", &hardlinks.0)
            stat(dir + "/ours/usr/bin/tool-hardlink", &hardlinks.1)
            #expect(hardlinks.0.st_ino == hardlinks.1.st_ino)
        }
    }

    @Test(.requiresRoot) func overlaySnapshotsMatchUmoci() async throws {
        try await withTemporaryDirectory("overlay") { dir in
            try await Fixtures.layers("rich", into: dir)
            try await Fixtures.umociLayout(dir + "/layout", tag: "rich", layers: ["layer1", "layer2", "layer3"].map { "\(dir)/\($0).tar" })
            try await run("umoci", ["unpack", "--image", dir + "/layout:rich", dir + "/bundle"])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importLayout(at: dir + "/layout", tag: "rich", name: "rich:1")
            let snapshots = try await store.prepareSnapshots("rich:1")
            #expect(snapshots.count == 3)

            // Whiteouts are overlayfs's own.
            var whiteout = stat()
            #expect(lstat(snapshots[1].directory + "/file-to-remove", &whiteout) == 0)
            #expect(whiteout.st_mode & S_IFMT == S_IFCHR && whiteout.st_rdev == 0)
            #expect(try snapshotTree(snapshots[1].directory + "/dir-opaque").isEmpty == false)
            var value = [UInt8](repeating: 0, count: 4)
            #expect(gantry_lgetxattr(snapshots[1].directory + "/dir-opaque", "trusted.overlay.opaque", &value, 4) == 1 && value[0] == UInt8(ascii: "y"))

            // Stacked, they show what umoci's merged unpack shows.
            let mountPoint = dir + "/merged"
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
            let lowers = snapshots.reversed().map(\.directory).joined(separator: ":")
            try await run("mount", ["-t", "overlay", "overlay", "-o", "ro,lowerdir=\(lowers)", mountPoint])
            defer { _ = try? run("umount", [mountPoint]) }
            let expected = try snapshotTree(dir + "/bundle/rootfs")
            let actual = try snapshotTree(mountPoint)
            #expect(differences(expected, actual) == [])

            // A second preparation reuses the snapshots.
            let again = try await store.prepareSnapshots("rich:1")
            #expect(again == snapshots)
        }
    }

    @Test func everyCompressionUnpacksAlike() async throws {
        try await withTemporaryDirectory("compression") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            try write("x", to: dir + "/rootfs/etc/" + String(repeating: "long-name-", count: 20))
            try await run("tar", ["--format=pax", "-C", dir + "/rootfs", "-cf", dir + "/layer.tar", "."])
            try await run("gzip", ["-k", dir + "/layer.tar"])
            try await run("zstd", ["-q", "-k", dir + "/layer.tar"])
            let diffID = Digest.compute(try Data(file: dir + "/layer.tar"))
            let source = try snapshotTree(dir + "/rootfs")
            for name in ["layer.tar", "layer.tar.gz", "layer.tar.zst"] {
                let target = dir + "/out-" + name
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
                let report = try LayerUnpacker.unpack(layerAt: dir + "/" + name, into: target, options: LayerUnpackOptions(expectedDiffID: diffID))
                #expect(report.diffID == diffID)
                #expect(differences(source, try snapshotTree(target)) == [], "\(name)")
            }
        }
    }

    @Test func refusesEscapesAndTouchesNothingOutside() async throws {
        try await withTemporaryDirectory("malicious") { dir in
            let outside = dir + "/outside"
            try write("original", to: outside + "/victim")
            let before = try snapshotTree(outside)
            try await Fixtures.layers("malicious", into: dir, outside: outside)
            let escape = String(repeating: "../", count: 12) + outside.dropFirst()

            func refused(_ layer: String, into target: String, whiteouts: WhiteoutMode = .apply) throws -> Set<String> {
                do {
                    try LayerUnpacker.unpack(layerAt: "\(dir)/\(layer).tar", into: target, options: LayerUnpackOptions(whiteouts: whiteouts))
                    return []
                } catch let error as OCIImageError where error.code == .unsafeLayerEntries {
                    for entry in error.refusedEntries { #expect(error.message.contains(entry.path)) }
                    return Set(error.refusedEntries.map(\.path))
                }
            }
            let target = dir + "/target"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
            #expect(try refused("absolute", into: target) == ["\(outside)/absolute-pwned"])
            #expect(try refused("dotdot", into: target) == ["\(escape)/dotdot-pwned", "a/../../dotdot-pwned-2"])
            #expect(FileManager.default.fileExists(atPath: target + "/fine"))
            #expect(try refused("symlink", into: target) == ["escape/symlink-pwned"])
            #expect(try refused("hardlink", into: target) == ["hardlink-absolute", "hardlink-dotdot", "hardlink-through-symlink"])
            // A symlink planted by one layer is not a way out for the next.
            #expect(try refused("plant", into: target) == [])
            #expect(try refused("through", into: target) == ["planted-absolute/through-pwned", "planted-relative/through-pwned"])
            // Nor when the layers are unpacked separately for overlayfs.
            let lower = dir + "/lower"
            let upper = dir + "/upper"
            try FileManager.default.createDirectory(atPath: lower, withIntermediateDirectories: false)
            try FileManager.default.createDirectory(atPath: upper, withIntermediateDirectories: false)
            #expect(try refused("plant", into: lower, whiteouts: .overlay(lowerLayers: [])) == [])
            #expect(try refused("through", into: upper, whiteouts: .overlay(lowerLayers: [lower]))
                == ["planted-absolute/through-pwned", "planted-relative/through-pwned"])

            #expect(try snapshotTree(outside) == before)
            #expect(find("pwned", under: dir).isEmpty)
        }
    }

    @Test func refusesDeviceNodesWithoutPrivileges() async throws {
        try await withTemporaryDirectory("device") { dir in
            try await Fixtures.layers("malicious", into: dir, outside: dir + "/outside")
            let target = dir + "/target"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
            #expect {
                try LayerUnpacker.unpack(layerAt: dir + "/device.tar", into: target, options: LayerUnpackOptions(privileged: false))
            } throws: { error in
                let error = error as? OCIImageError
                return error?.code == .unsafeLayerEntries && error?.refusedEntries.map(\.path) == ["evil-device"]
                    && error?.refusedEntries.first?.reason.contains("root") == true
            }
            #expect(FileManager.default.fileExists(atPath: target + "/fine"))
            #expect(!FileManager.default.fileExists(atPath: target + "/evil-device"))
        }
    }

    @Test func neverAppliesOverlayAttributes() async throws {
        try await withTemporaryDirectory("xattr") { dir in
            try await Fixtures.layers("malicious", into: dir, outside: dir + "/outside")
            let target = dir + "/target"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
            let report = try LayerUnpacker.unpack(layerAt: dir + "/overlay-xattr.tar", into: target)
            #expect(report.skippedAttributes.isSuperset(of: ["trusted.overlay.opaque", "user.overlay.redirect"]))
            let tree = try snapshotTree(target)
            #expect(tree["sneaky"]?.xattrs.keys.sorted() == ["user.ok"])
        }
    }
}
