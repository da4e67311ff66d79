import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct ImageStoreTests {
    func gzipLayer(_ dir: String, files: [String: String]) async throws -> (Data, Digest) {
        try await Fixtures.gzipLayer(in: dir, files: files)
    }

    func snapshotDirectoryNames(_ store: ImageStore) throws -> [String] {
        // (An ordinary user's store records its mapping there too.)
        try FileManager.default.contentsOfDirectory(atPath: store.root.snapshots).filter { $0 != ".user-namespace" }
    }

    /// Each state root has a run-time directory of its own, under
    /// `/run/gantry` for root and the user's run-time directory otherwise.
    @Test func eachRootHasItsOwnRuntimeDirectory() throws {
        let first = StateRoot("/srv/a/gantry"), second = StateRoot("/srv/b/gantry")
        #expect(first.runtime != second.runtime && first.runtime == StateRoot("/srv/a/gantry/").runtime)
        #expect(first.runtime.split(separator: "/").last?.count == 16)
        let environment = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"]
        if geteuid() == 0 {
            #expect(first.runtime.hasPrefix("/run/gantry/"))
        } else if let environment, StateRoot.isOwnPrivateDirectory(environment) {
            #expect(first.runtime.hasPrefix(environment + "/gantry/"))
        } else {
            #expect(first.runtime.hasPrefix("/run/user/\(geteuid())/gantry/") || first.runtime.hasPrefix("/tmp/gantry-run-\(geteuid())/"))
        }
    }

    @Test func importsADirectoryAndUnpacksItBack() async throws {
        try await withTemporaryDirectory("rootfs") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            try write("hard", to: dir + "/rootfs/etc/hard")
            try FileManager.default.linkItem(atPath: dir + "/rootfs/etc/hard", toPath: dir + "/rootfs/etc/hard2")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            let created = Date(timeIntervalSince1970: 1_700_000_000)
            let options = RootfsImportOptions(config: RunConfiguration(env: ["PATH=/bin"], cmd: ["/bin/sh"]), created: created)
            let record = try await store.importRootfs(at: dir + "/rootfs", name: "busybox:test", options: options)
            #expect(record.reference.description == "docker.io/library/busybox:test")

            // The same tree and time give the same digests.
            let again = try await store.importRootfs(at: dir + "/rootfs", name: "busybox:again", options: options)
            #expect(again.descriptor.digest == record.descriptor.digest)

            let details = try await store.inspect("busybox:test")
            #expect(details.config.config?.cmd == ["/bin/sh"])
            #expect(details.config.created == "2023-11-14T22:13:20Z")
            #expect(details.layers.count == 1 && details.layers[0].mediaType == .ociLayerGzip)
            #expect(details.platform == Platform.host)

            try await store.unpack("busybox:test", into: dir + "/out")
            let expected = try snapshotTree(dir + "/rootfs", directoryMtimes: false)
            #expect(differences(expected, try snapshotTree(dir + "/out", directoryMtimes: false)) == [])
            var links = (stat(), stat())
            stat(dir + "/out/etc/hard", &links.0)
            stat(dir + "/out/etc/hard2", &links.1)
            #expect(links.0.st_ino == links.1.st_ino)
        }
    }

    @Test func findsImagesByNameAndDigest() async throws {
        try await withTemporaryDirectory("lookup") { dir in
            try Fixtures.busyboxRootfs(dir + "/rootfs")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            let record = try await store.importRootfs(at: dir + "/rootfs", name: "127.0.0.1:5000/team/tools:1")
            try await store.tag("127.0.0.1:5000/team/tools:1", as: "tools")
            #expect(try await store.image("tools:latest").descriptor == record.descriptor)
            #expect(try await store.image("docker.io/library/tools").descriptor == record.descriptor)
            #expect(try await store.image(record.descriptor.digest.description).descriptor == record.descriptor)
            #expect(try await store.image(String(record.descriptor.digest.encoded.prefix(8))).descriptor == record.descriptor)
            await #expect { try await store.image("tools:2") } throws: {
                ($0 as? OCIImageError)?.code == .imageNotFound && ($0 as? OCIImageError)?.message.contains("tools:2") == true
            }
            await #expect { try await store.tag("tools", as: "x@\(record.descriptor.digest)") } throws: {
                ($0 as? OCIImageError)?.code == .invalidReference
            }
            #expect(try await store.list().map(\.reference.familiarDescription) == ["127.0.0.1:5000/team/tools:1", "tools:latest"])
        }
    }

    @Test func removingAndPruningCollectsOnlyUnusedContent() async throws {
        try await withTemporaryDirectory("gc") { dir in
            var layout = try Fixtures.HandmadeLayout(dir + "/layout")
            let (shared, sharedID) = try await gzipLayer(dir, files: ["shared": "both images"])
            let (first, firstID) = try await gzipLayer(dir, files: ["first": "one"])
            let (second, secondID) = try await gzipLayer(dir, files: ["second": "two"])
            try layout.image(tag: "one", layers: [(shared, .ociLayerGzip, sharedID), (first, .ociLayerGzip, firstID)])
            try layout.image(tag: "two", layers: [(shared, .ociLayerGzip, sharedID), (second, .ociLayerGzip, secondID)])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            let records = try await store.importLayout(at: dir + "/layout", name: "app")
            #expect(records.map(\.reference.familiarDescription) == ["app:one", "app:two"])
            _ = try await store.prepareSnapshots("app:one")
            _ = try await store.prepareSnapshots("app:two")
            #expect(try snapshotDirectoryNames(store).count == 3)
            #expect(try store.content.list().count == 7)

            // Leftovers of interrupted work go with the next collection.
            try write("partial", to: store.content.ingestDirectory + "/deadbeef")
            try FileManager.default.createDirectory(atPath: store.root.snapshots + "/.tmp-cafe", withIntermediateDirectories: false)

            let (_, freed) = try await store.remove("app:one")
            let report = try #require(freed)
            #expect(report.blobs == 3)
            #expect(report.snapshots == 1)
            #expect(report.leftovers == 2)
            #expect(try snapshotDirectoryNames(store).count == 2)
            #expect(try store.content.list().count == 4)
            let survivor = try await store.snapshots()
            #expect(survivor.count == 2)
            try await store.unpack("app:two", into: dir + "/two")
            #expect(try readText(dir + "/two/shared") == "both images")

            try await store.remove("app:two", prune: false)
            #expect(try store.content.list().count == 4)
            let last = try await store.prune()
            #expect(last.blobs == 4 && last.snapshots == 2)
            #expect(try store.content.list().isEmpty)
            #expect(try snapshotDirectoryNames(store).isEmpty)
        }
    }

    @Test func corruptLayersLeaveNoPartialResult() async throws {
        try await withTemporaryDirectory("corrupt") { dir in
            let (good, goodID) = try await gzipLayer(dir, files: ["a": String(repeating: "content ", count: 50_000)])
            var layout = try Fixtures.HandmadeLayout(dir + "/layout")
            // Truncated: its digest matches the bytes, but it ends early.
            try layout.image(tag: "truncated", layers: [(good.prefix(good.count / 2), .ociLayerGzip, goodID)])
            // Intact, but the configuration promises other content.
            try layout.image(tag: "wrong-diffid", layers: [(good, .ociLayerGzip, Digest.compute(Data("other".utf8)))])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importLayout(at: dir + "/layout", name: "broken")

            for (tag, code) in [("truncated", OCIImageError.Code.corruptLayer), ("wrong-diffid", .digestMismatch)] {
                await #expect("\(tag) unpack") {
                    try await store.unpack("broken:\(tag)", into: dir + "/out-\(tag)")
                } throws: { ($0 as? OCIImageError)?.code == code }
                #expect(!FileManager.default.fileExists(atPath: dir + "/out-\(tag)"))
                await #expect("\(tag) snapshot") {
                    try await store.prepareSnapshots("broken:\(tag)")
                } throws: { ($0 as? OCIImageError)?.code == code }
                #expect(try snapshotDirectoryNames(store).isEmpty)
                #expect(try await store.snapshots().isEmpty)
            }

            // Unpacking into an existing empty directory leaves it empty.
            try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: false)
            await #expect(throws: OCIImageError.self) { try await store.unpack("broken:truncated", into: dir + "/empty") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/empty").isEmpty)
            // …and a directory with data in it is refused before anything is written.
            try write("keep me", to: dir + "/full/file")
            await #expect { try await store.unpack("broken:wrong-diffid", into: dir + "/full") } throws: {
                ($0 as? OCIImageError)?.code == .invalidArgument
            }
            #expect(try readText(dir + "/full/file") == "keep me")
        }
    }

    @Test func damagedLayoutBlobsAreRefusedAtImport() async throws {
        try await withTemporaryDirectory("damaged") { dir in
            let (good, goodID) = try await gzipLayer(dir, files: ["a": "a"])
            var layout = try Fixtures.HandmadeLayout(dir + "/layout")
            let manifest = try layout.image(tag: "v1", layers: [(good, .ociLayerGzip, goodID)])
            let layer = Digest.compute(good)
            var damaged = good
            damaged[damaged.count / 2] ^= 0xff
            try damaged.write(to: URL(fileURLWithPath: "\(dir)/layout/blobs/sha256/\(layer.encoded)"))
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            await #expect {
                try await store.importLayout(at: dir + "/layout", tag: "v1", name: "damaged")
            } throws: { error in
                let error = error as? OCIImageError
                return error?.code == .digestMismatch && error?.message.contains(layer.description) == true
            }
            #expect(try await store.list().isEmpty)
            #expect(!store.content.contains(layer))
            #expect(try FileManager.default.contentsOfDirectory(atPath: store.content.ingestDirectory).isEmpty)

            // A missing blob is named too.
            try FileManager.default.removeItem(atPath: "\(dir)/layout/blobs/sha256/\(layer.encoded)")
            await #expect { try await store.importLayout(at: dir + "/layout", tag: "v1") } throws: {
                ($0 as? OCIImageError)?.code == .blobNotFound && ($0 as? OCIImageError)?.message.contains(layer.description) == true
            }
            await #expect { try await store.importLayout(at: dir + "/layout", tag: "v2") } throws: {
                ($0 as? OCIImageError)?.code == .tagNotFound && ($0 as? OCIImageError)?.message.contains("tags: v1") == true
            }
            _ = manifest
        }
    }

    @Test func multiPlatformIndexesResolvePerPlatform() async throws {
        try await withTemporaryDirectory("index") { dir in
            let (amd, amdID) = try await gzipLayer(dir, files: ["arch": "amd64"])
            let (arm, armID) = try await gzipLayer(dir, files: ["arch": "arm64"])
            var layout = try Fixtures.HandmadeLayout(dir + "/layout")
            let amd64 = try layout.image(tag: nil, layers: [(amd, .ociLayerGzip, amdID)], platform: Platform(os: "linux", architecture: "amd64"), addToIndex: false)
            let arm64 = try layout.image(tag: nil, layers: [(arm, .ociLayerGzip, armID)], platform: Platform(os: "linux", architecture: "arm64"), addToIndex: false)
            try layout.index(tag: "multi", entries: [arm64, amd64])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importLayout(at: dir + "/layout", tag: "multi", name: "multi")
            let armDetails = try await store.inspect("multi", platform: Platform(parsing: "linux/aarch64"))
            #expect(armDetails.manifestDigest == arm64.digest)
            #expect(armDetails.mediaType == .ociIndex)
            #expect(armDetails.platforms?.map(\.description) == ["linux/arm64", "linux/amd64"])
            try await store.unpack("multi", into: dir + "/arm", platform: Platform(parsing: "linux/arm64"))
            #expect(try readText(dir + "/arm/arch") == "arm64")
            await #expect { try await store.unpack("multi", into: dir + "/s390x", platform: Platform(parsing: "linux/s390x")) } throws: {
                ($0 as? OCIImageError)?.code == .platformNotFound && ($0 as? OCIImageError)?.message.contains("linux/arm64, linux/amd64") == true
            }
        }
    }

    @Test func refusesImportOfNonImages() async throws {
        try await withTemporaryDirectory("artifact") { dir in
            var layout = try Fixtures.HandmadeLayout(dir + "/layout")
            let (layer, diffID) = try await gzipLayer(dir, files: ["a": "a"])
            try layout.image(tag: "odd", layers: [(layer, MediaType("application/vnd.example.thing"), diffID)])
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            await #expect { try await store.importLayout(at: dir + "/layout") } throws: { error in
                let error = error as? OCIImageError
                return error?.code == .invalidMediaType && error?.message.contains("application/vnd.example.thing") == true
            }
            await #expect { try await store.importLayout(at: dir) } throws: {
                ($0 as? OCIImageError)?.code == .invalidLayout && ($0 as? OCIImageError)?.message.contains("oci-layout") == true
            }
        }
    }
}
