import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct RegistryFaultTests {
    func client(attempts: Int = 3) throws -> RegistryClient {
        try RegistryClient(options: RegistryOptions(retry: RetryPolicy(attempts: attempts, initialDelay: .milliseconds(20), connectionWindow: .seconds(2)),
                                                    connectTimeout: .seconds(1)),
                           credentials: StaticCredentials())
    }

    func leftovers(_ store: ImageStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.content.ingestDirectory)
    }

    @Test func missingThingsAreNamed() async throws {
        try await withTemporaryDirectory("registry-404") { dir in
            try await withTestRegistry(dir) { registry in
                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                await #expect { try await store.pull("\(registry.host)/nothing/here:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .notFound && error?.message.contains("\(registry.host)/nothing/here:1") == true
                        && error?.message.contains("MANIFEST_UNKNOWN") == true
                }
                await #expect { try await store.tags("\(registry.host)/nothing/here") } throws: { ($0 as? OCIImageError)?.code == .notFound }
                #expect(try await store.list().isEmpty)
            }
        }
    }

    @Test func aBlobThatDoesNotMatchItsDigestIsNotStored() async throws {
        try await withTemporaryDirectory("registry-corrupt") { dir in
            try await withTestRegistry(dir) { registry in
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                let local = try ImageStore(root: StateRoot(dir + "/local"), registry: try client())
                try await local.importRootfs(at: dir + "/rootfs", name: "local/tools:1")
                try await local.push("local/tools:1", to: "\(registry.host)/tools/corrupt:1")
                let layer = try #require(try await local.inspect("local/tools:1").layers.first)
                // Damage the registry's copy, keeping its size.
                var bytes = try Data(file: registry.blobFile(layer.digest))
                bytes[bytes.count / 2] ^= 0x55
                try bytes.write(to: URL(fileURLWithPath: registry.blobFile(layer.digest)))

                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                await #expect { try await store.pull("\(registry.host)/tools/corrupt:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .digestMismatch && error?.message.contains(layer.digest.description) == true
                }
                #expect(!store.content.contains(layer.digest))
                #expect(try await store.list().isEmpty)
                #expect(try leftovers(store).isEmpty)
            }
        }
    }

    @Test func schema1IsRefused() async throws {
        try await withTemporaryDirectory("registry-schema1") { dir in
            try await withTestRegistry(dir, schema1: true) { registry in
                try await Fixtures.busyboxLayout(dir + "/layout", tag: "1", scratch: dir)
                try await run("skopeo", ["copy", "--quiet", "--format", "v2s1", "--dest-tls-verify=false", "oci:\(dir)/layout:1", "docker://\(registry.host)/old/image:1"])
                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                await #expect { try await store.pull("\(registry.host)/old/image:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .unsupportedSchemaVersion && error?.message.contains("schema 1") == true
                }
                #expect(try store.content.list().isEmpty)
            }
        }
    }

    @Test func anUnreachableRegistryFailsAfterRetries() async throws {
        try await withTemporaryDirectory("registry-down") { dir in
            let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
            let port = try freePort()
            await #expect { try await store.pull("127.0.0.1:\(port)/any/image:1") } throws: { error in
                let error = error as? OCIImageError
                return error?.code == .network && error?.message.contains("127.0.0.1:\(port)") == true
            }
        }
    }

    @Test func cancellationLeavesNoTemporaryFiles() async throws {
        try await withTemporaryDirectory("registry-cancel") { dir in
            try await withTestRegistry(dir) { registry in
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                try await run("dd", ["if=/dev/urandom", "of=\(dir)/rootfs/random", "bs=1M", "count=30", "status=none"])
                let local = try ImageStore(root: StateRoot(dir + "/local"), registry: try client())
                try await local.importRootfs(at: dir + "/rootfs", name: "local/big:1")
                try await local.push("local/big:1", to: "\(registry.host)/big/cancel:1")

                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                let started = Once()
                let pull = Task {
                    try await store.pull("\(registry.host)/big/cancel:1") { progress in
                        if let total = progress.total, total > 1_000_000, progress.completed > 0, started.claim() {
                            // Hold the download here so that the cancellation lands midway.
                            usleep(300_000)
                        }
                    }
                }
                while !started.claimed { try await Task.sleep(for: .milliseconds(1)) }
                pull.cancel()
                await #expect(throws: (any Error).self) { try await pull.value }
                #expect(try leftovers(store).isEmpty)
                #expect(try await store.list().isEmpty)
            }
        }
    }

    @Test func indexesPullOnePlatformAndTagsPaginate() async throws {
        try await withTemporaryDirectory("registry-index") { dir in
            try await withTestRegistry(dir) { registry in
                func gzipLayer(_ content: String) async throws -> (Data, Digest) {
                    try await Fixtures.gzipLayer(in: dir, files: ["file": content])
                }
                var layout = try Fixtures.HandmadeLayout(dir + "/layout")
                let (amd, amdID) = try await gzipLayer("amd64")
                let (arm, armID) = try await gzipLayer("arm64")
                let amd64 = try layout.image(tag: nil, layers: [(amd, .ociLayerGzip, amdID)], platform: Platform(os: "linux", architecture: "amd64"), addToIndex: false)
                let arm64 = try layout.image(tag: nil, layers: [(arm, .ociLayerGzip, armID)], platform: Platform(os: "linux", architecture: "arm64"), addToIndex: false)
                try layout.index(tag: "multi", entries: [amd64, arm64])
                let local = try ImageStore(root: StateRoot(dir + "/local"), registry: try client())
                try await local.importLayout(at: dir + "/layout", tag: "multi", name: "local/multi:1")
                for tag in ["1", "2", "3", "4", "5"] {
                    try await local.push("local/multi:1", to: "\(registry.host)/multi/image:\(tag)")
                }
                let tags = try await local.registry.tags(registry: registry.host, repository: "multi/image", pageSize: 2)
                #expect(tags.sorted() == ["1", "2", "3", "4", "5"])
                #expect(try await local.registry.catalog(registry: registry.host, pageSize: 1) == ["multi/image"])

                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                let report = try await store.pull("\(registry.host)/multi/image:3", platform: Platform(parsing: "linux/arm64"))
                #expect(report.digest != report.manifestDigest && report.manifestDigest == arm64.digest)
                #expect(report.downloaded == 2)
                #expect(!store.content.contains(Digest.compute(amd)))
                try await store.unpack("\(registry.host)/multi/image:3", into: dir + "/out", platform: Platform(parsing: "linux/arm64"))
                #expect(try readText(dir + "/out/file") == "arm64")

                // By digest: the digest is checked, and names the image.
                let byDigest = "\(registry.host)/multi/image@\(report.digest)"
                let pinned = try await store.pull(byDigest, platform: Platform(parsing: "linux/arm64"))
                #expect(pinned.digest == report.digest)
                #expect(try await store.image(byDigest).descriptor.digest == report.digest)
                let wrong = "\(registry.host)/multi/image:3@\(Digest.compute(Data("other".utf8)))"
                await #expect { try await store.pull(wrong) } throws: { ($0 as? OCIImageError)?.code == .notFound || ($0 as? OCIImageError)?.code == .digestMismatch }
            }
        }
    }
}
