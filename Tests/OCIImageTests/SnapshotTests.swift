import Foundation
import GantryCore
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct SnapshotTests {
    /// An image of `count` small files in one gzip layer, made by GNU tar.
    func manyFilesImage(_ dir: String, count: Int) async throws -> ImageStore {
        for index in 0..<count { try write("file \(index)", to: "\(dir)/tree/d\(index % 10)/f\(index)") }
        try await run("tar", ["--format=pax", "-C", dir + "/tree", "-cf", dir + "/layer.tar", "."])
        let diffID = Digest.compute(try Data(file: dir + "/layer.tar"))
        try await run("gzip", ["-n", dir + "/layer.tar"])
        var layout = try Fixtures.HandmadeLayout(dir + "/layout")
        try layout.image(tag: "many", layers: [(try Data(file: dir + "/layer.tar.gz"), .ociLayerGzip, diffID)])
        let store = try ImageStore(root: StateRoot(dir + "/state"))
        try await store.importLayout(at: dir + "/layout", name: "many")
        return store
    }

    func leftovers(_ store: ImageStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.root.snapshots).filter { $0.hasPrefix(".tmp-") }
    }

    @Test func concurrentPreparationsAgree() async throws {
        try await withTemporaryDirectory("snapshot-race") { dir in
            let store = try await manyFilesImage(dir, count: 300)
            // Two stores on one root act as two processes would.
            let other = try ImageStore(root: store.root)
            let results = try await withThrowingTaskGroup(of: [Snapshot].self) { group in
                for index in 0..<6 {
                    let target = index.isMultiple(of: 2) ? store : other
                    group.addTask { try await target.prepareSnapshots("many") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(results.map { $0.map(\.chainID) }).count == 1)
            #expect(try leftovers(store).isEmpty)
            #expect(try await store.snapshots().count == 1)
            let directory = try #require(results.first?.first?.directory)
            #expect(try readText(directory + "/d7/f297") == "file 297")
        }
    }

    @Test func adoptsASnapshotLeftUnrecorded() async throws {
        try await withTemporaryDirectory("snapshot-adopt") { dir in
            let store = try await manyFilesImage(dir, count: 20)
            let first = try #require(try await store.prepareSnapshots("many").first)
            var before = stat()
            stat(first.directory, &before)
            // As if the process stopped between the rename and the record.
            try store.database.removeSnapshot(first.chainID)
            let again = try #require(try await store.prepareSnapshots("many").first)
            var after = stat()
            stat(again.directory, &after)
            #expect(again.chainID == first.chainID)
            #expect(before.st_ino == after.st_ino)
            #expect(try await store.snapshots().map(\.chainID) == [first.chainID])
        }
    }

    @Test func cancellationStopsUnpackingAndCleansUp() async throws {
        try await withTemporaryDirectory("snapshot-cancel") { dir in
            let store = try await manyFilesImage(dir, count: 500)
            let layer = try #require(try await store.inspect("many").layers.first)
            // Cancelled from the start: the unpacker stops at its first check.
            try FileManager.default.createDirectory(atPath: dir + "/direct", withIntermediateDirectories: false)
            #expect {
                try LayerUnpacker.unpack(layerAt: store.content.path(for: layer.digest), into: dir + "/direct",
                                         options: LayerUnpackOptions(isCancelled: { true }))
            } throws: { ($0 as? OCIImageError)?.code == .cancelled }

            let unpack = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await store.unpack("many", into: dir + "/out")
            }
            await #expect { try await unpack.value } throws: { ($0 as? OCIImageError)?.code == .cancelled }
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"))

            let prepare = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await store.prepareSnapshots("many")
            }
            await #expect { try await prepare.value } throws: { ($0 as? OCIImageError)?.code == .cancelled }
            #expect(try FileManager.default.contentsOfDirectory(atPath: store.root.snapshots).filter { $0 != ".user-namespace" }.isEmpty)
        }
    }

    /// An ordinary user's layers are unpacked for its mapping, which the
    /// store records: after /etc/subuid changes, the store refuses to open
    /// with its layers (saying what changed and what to do), and takes the
    /// new mapping once it has none.
    @Test func refusesLayersUnpackedForAnotherMapping() async throws {
        try await withTemporaryDirectory("snap-mapping") { dir in
            let root = StateRoot(dir + "/state")
            try root.create()
            let first = UserNamespaceMapping(uids: [IDMapping(hostID: 1000, size: 1), IDMapping(containerID: 1, hostID: 100_000, size: 65536)],
                                             gids: [IDMapping(hostID: 1000, size: 1), IDMapping(containerID: 1, hostID: 100_000, size: 65536)], helpers: nil)
            let moved = UserNamespaceMapping(uids: [IDMapping(hostID: 1000, size: 1), IDMapping(containerID: 1, hostID: 200_000, size: 65536)],
                                             gids: first.gids, helpers: nil)
            try ImageStore.checkRecordedUserNamespace(root, first)
            #expect(try readText(root.snapshots + "/.user-namespace") == "\(first)\n")
            try FileManager.default.createDirectory(atPath: root.snapshots + "/sha256-layer", withIntermediateDirectories: false)
            try ImageStore.checkRecordedUserNamespace(root, first)
            #expect { try ImageStore.checkRecordedUserNamespace(root, moved) } throws: { error in
                let message = "\(error)"
                return message.contains("1-65536→100000") && message.contains("1-65536→200000") && message.contains("/etc/subuid")
            }
            // Root's store records nothing.
            try ImageStore.checkRecordedUserNamespace(root, nil)
            try FileManager.default.removeItem(atPath: root.snapshots + "/sha256-layer")
            try ImageStore.checkRecordedUserNamespace(root, moved)
            #expect(try readText(root.snapshots + "/.user-namespace") == "\(moved)\n")
        }
    }
}
