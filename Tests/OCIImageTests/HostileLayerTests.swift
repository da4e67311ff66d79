import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

/// Layers built to exhaust the host: decompression bombs, and blobs that
/// are not the size their descriptors say.
@Suite struct HostileLayerTests {
    /// A gzip layer holding one file of `megabytes` MiB of zeros: about a
    /// thousandth of that compressed.
    func zeroBomb(_ dir: String, megabytes: Int) throws -> String {
        try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
        _ = try run("/usr/bin/truncate", ["-s", "\(megabytes)M", dir + "/src/zeros"])
        _ = try run("/bin/tar", ["-C", dir + "/src", "-czf", dir + "/bomb.tar.gz", "zeros"])
        return dir + "/bomb.tar.gz"
    }

    @Test func stopsALayerThatExpandsPastItsAllowance() async throws {
        try await withTemporaryDirectory("bomb") { dir in
            let layer = try zeroBomb(dir, megabytes: 256)
            let compressed = try #require(try FileManager.default.attributesOfItem(atPath: layer)[.size] as? Int)
            #expect(compressed < 1 << 20, "the bomb is small: \(compressed) bytes")
            try FileManager.default.createDirectory(atPath: dir + "/t", withIntermediateDirectories: true)
            let limit = LayerExpansionLimit(maximumRatio: 10, minimumAllowance: 8 << 20)
            let error = try #require(throws: OCIImageError.self) {
                try LayerUnpacker.unpack(layerAt: layer, into: dir + "/t", options: LayerUnpackOptions(expansionLimit: limit))
            }
            #expect(error.code == .layerTooLarge)
            #expect(error.description.contains(layer))
            // It stopped near its allowance, not after the whole file.
            let written = (try? FileManager.default.attributesOfItem(atPath: dir + "/t/zeros")[.size] as? Int) ?? 0
            #expect(written <= 16 << 20)

            // The same layer within an allowance that fits it unpacks.
            let generous = LayerExpansionLimit(maximumBytes: 512 << 20)
            try FileManager.default.createDirectory(atPath: dir + "/u", withIntermediateDirectories: true)
            let report = try LayerUnpacker.unpack(layerAt: layer, into: dir + "/u", options: LayerUnpackOptions(expansionLimit: generous))
            #expect(report.uncompressedSize > 256 << 20)
        }
    }

    @Test func theDefaultAllowanceBoundsBombsButNotOrdinaryLayers() {
        let limit = LayerExpansionLimit.default
        // A 10 MB gzip that would expand to 10 GiB is stopped at 2 GB.
        #expect(limit.allowance(compressedSize: 10_000_000) == 2_000_000_000)
        // A small layer always gets at least 1 GiB.
        #expect(limit.allowance(compressedSize: 1000) == 1 << 30)
        // Sizes past Int64 saturate instead of trapping.
        #expect(limit.allowance(compressedSize: Int64.max / 2) == Int64.max)
        #expect(LayerExpansionLimit.unlimited.allowance(compressedSize: 1) == nil)
        #expect(LayerExpansionLimit(maximumBytes: 5, maximumRatio: nil).allowance(compressedSize: 1) == 5)
    }

    @Test func anUncompressedLayerIsNeverLimited() async throws {
        try await withTemporaryDirectory("plain-tar") { dir in
            try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
            try Data(repeating: 7, count: 4 << 20).write(to: URL(fileURLWithPath: dir + "/src/data"))
            _ = try run("/bin/tar", ["-C", dir + "/src", "-cf", dir + "/layer.tar", "data"])
            try FileManager.default.createDirectory(atPath: dir + "/t", withIntermediateDirectories: true)
            let tight = LayerExpansionLimit(maximumBytes: 1 << 20, maximumRatio: 1, minimumAllowance: 0)
            let report = try LayerUnpacker.unpack(layerAt: dir + "/layer.tar", into: dir + "/t", options: LayerUnpackOptions(expansionLimit: tight))
            #expect(report.uncompressedSize >= 4 << 20)
        }
    }

    @Test func refusesABlobOfAnotherSizeThanItsDescriptorSays() async throws {
        try await withTemporaryDirectory("size") { dir in
            let layer = try zeroBomb(dir, megabytes: 1)
            let size = try #require(try FileManager.default.attributesOfItem(atPath: layer)[.size] as? Int)
            try FileManager.default.createDirectory(atPath: dir + "/t", withIntermediateDirectories: true)
            for declared in [size - 1, size + 1] {
                let error = try #require(throws: OCIImageError.self) {
                    try LayerUnpacker.unpack(layerAt: layer, into: dir + "/t", options: LayerUnpackOptions(expectedSize: Int64(declared)))
                }
                #expect(error.code == .sizeMismatch)
                #expect(error.description.contains("\(declared)"))
            }
            try LayerUnpacker.unpack(layerAt: layer, into: dir + "/t", options: LayerUnpackOptions(expectedSize: Int64(size)))
        }
    }

    @Test(.requiresRoot) func anImageUnpackedOntoTheHostHasNoSetIDProgramsOrDevices() async throws {
        try await withTemporaryDirectory("host-unpack") { dir in
            try await Fixtures.layers("rich", into: dir)
            try await Fixtures.umociLayout(dir + "/layout", tag: "rich", layers: ["layer1", "layer2", "layer3"].map { "\(dir)/\($0).tar" })
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importLayout(at: dir + "/layout", tag: "rich", name: "rich:1")
            func mode(_ path: String) -> mode_t? {
                var info = stat()
                return lstat(path, &info) == 0 ? info.st_mode : nil
            }
            let safe = try await store.unpack("rich:1", into: dir + "/safe")
            #expect(mode(dir + "/safe/usr/bin/setuid").map { $0 & 0o7777 } == 0o755)
            #expect(mode(dir + "/safe/usr/bin/setgid").map { $0 & 0o7777 } == 0o755)
            #expect(mode(dir + "/safe/dev/null-copy") == nil)
            #expect(safe.skippedDeviceNodes >= 1)
            let faithful = try await store.unpack("rich:1", into: dir + "/faithful", keepingPrivileges: true)
            #expect(mode(dir + "/faithful/usr/bin/setuid").map { $0 & 0o7777 } == 0o4755)
            #expect(mode(dir + "/faithful/dev/null-copy").map { $0 & S_IFMT } == S_IFCHR)
            #expect(faithful.skippedDeviceNodes == 0)
        }
    }
}

/// A damaged state root loses nothing: what cannot be read is reported,
/// naming the file, and never taken for empty.
@Suite struct DamagedStoreTests {
    @Test func anEmptiedImageDatabaseIsReportedNotTakenForANewOne() async throws {
        try await withTemporaryDirectory("emptied-db") { dir in
            try makeBusyboxRootfs(dir + "/rootfs")
            let root = StateRoot(dir + "/state")
            // Made and closed (its database goes with the last reference).
            func importImage() async throws -> Int {
                let store = try ImageStore(root: root)
                try await store.importRootfs(at: dir + "/rootfs", name: "kept:1")
                return try store.content.list().count
            }
            let blobs = try await importImage()
            let content = try ContentStore(root: root.path)
            // Truncated, as a full disk or a careless copy leaves it.
            for suffix in ["", "-wal", "-shm"] { _ = truncate(root.database + suffix, 0) }
            let error = try #require(throws: OCIImageError.self) { try ImageStore(root: root) }
            #expect(error.code == .damagedState)
            #expect(error.description.contains(root.database))
            #expect(try content.list().count == blobs, "no blob was deleted")
            // A new state root, with no blobs, opens as before.
            _ = try ImageStore(root: StateRoot(dir + "/fresh"))
        }
    }

    @Test func aGarbledImageDatabaseIsReportedAsDamagedWithWhatToDo() async throws {
        try await withTemporaryDirectory("garbled-db") { dir in
            try makeBusyboxRootfs(dir + "/rootfs")
            let root = StateRoot(dir + "/state")
            try await ImageStore(root: root).importRootfs(at: dir + "/rootfs", name: "kept:1")
            let blobs = try ContentStore(root: root.path).list().count
            try Data(repeating: 0x7B, count: 4096).write(to: URL(fileURLWithPath: root.database))
            for suffix in ["-wal", "-shm"] { unlink(root.database + suffix) }
            let error = try #require(throws: OCIImageError.self) { try ImageStore(root: root) }
            #expect(error.code == .damagedState && error.description.contains(root.database) && error.description.contains("Move it aside"), "\(error)")
            #expect(try ContentStore(root: root.path).list().count == blobs)
        }
    }
}

@Suite struct ImageStoreCheckTests {
    @Test func aCorruptBlobIsFoundAndOnlyItIsRemovedOnRepair() async throws {
        try await withTemporaryDirectory("store-check") { dir in
            try makeBusyboxRootfs(dir + "/rootfs")
            let store = try ImageStore(root: StateRoot(dir + "/state"))
            try await store.importRootfs(at: dir + "/rootfs", name: "checked:1")
            let clean = try await store.check()
            #expect(clean.corruptBlobs.isEmpty && clean.brokenImages.isEmpty)
            let blobs = try store.content.list().map(\.digest)
            #expect(clean.blobsChecked == blobs.count)
            // One byte of the configuration changed, as a bad disk or a careless edit does.
            let record = try #require(try await store.list().first)
            let manifest = try Manifest.decode(try store.content.document(record.descriptor))
            let path = store.content.path(for: manifest.config.digest)
            var bytes = try #require(FileManager.default.contents(atPath: path))
            bytes[bytes.count / 2] ^= 0x20
            // Blobs are read-only; the owner who edits one makes it writable first.
            chmod(path, 0o644)
            try Data(bytes).write(to: URL(fileURLWithPath: path))

            let found = try await store.check()
            #expect(found.corruptBlobs == [manifest.config.digest])
            #expect(found.brokenImages.map(\.reference.familiarDescription) == ["checked:1"])
            #expect(found.brokenImages.first?.problem.contains(manifest.config.digest.description) == true)
            #expect(found.removedBlobs.isEmpty)
            #expect(try store.content.list().count == blobs.count, "a check without repair removes nothing")

            let repaired = try await store.check(repair: true)
            #expect(repaired.removedBlobs == [manifest.config.digest])
            #expect(Set(try store.content.list().map(\.digest)) == Set(blobs).subtracting([manifest.config.digest]))
            let after = try await store.check()
            #expect(after.corruptBlobs.isEmpty)
            #expect(after.brokenImages.first?.problem.contains("is missing") == true, "\(after.brokenImages)")
        }
    }
}
