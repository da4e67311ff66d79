import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct ContentStoreTests {
    func ingestLeftovers(_ store: ContentStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.ingestDirectory)
    }

    @Test func storesVerifiedContent() async throws {
        try await withTemporaryDirectory("content") { root in
            let store = try ContentStore(root: root)
            let data = Data("hello, blobs".utf8)
            let (digest, size) = try store.ingest(data, expected: Digest.compute(data))
            #expect(size == Int64(data.count))
            #expect(store.contains(digest))
            #expect(try Data(file: store.path(for: digest)) == data)
            #expect(try store.list().map(\.digest) == [digest])
            #expect(try store.document(Descriptor(mediaType: .ociConfig, digest: digest, size: size)) == data)
            // Read-only for everyone: a blob is never changed in place.
            var st = stat()
            stat(store.path(for: digest), &st)
            #expect(st.st_mode & 0o777 == 0o444)
        }
    }

    @Test func refusesWrongDigestOrSize() async throws {
        try await withTemporaryDirectory("content") { root in
            let store = try ContentStore(root: root)
            let data = Data("the real content".utf8)
            let other = Digest.compute(Data("something else".utf8))
            #expect { try store.ingest(data, expected: other) } throws: { ($0 as? OCIImageError)?.code == .digestMismatch }
            let writer = try store.writer(expected: Digest.compute(data), expectedSize: 4)
            #expect { try data.withUnsafeBytes { try writer.write($0) } } throws: { ($0 as? OCIImageError)?.code == .sizeMismatch }
            let short = try store.writer(expected: Digest.compute(data), expectedSize: Int64(data.count))
            try data.prefix(5).withUnsafeBytes { try short.write($0) }
            #expect { try short.commit() } throws: { ($0 as? OCIImageError)?.code == .sizeMismatch }
            #expect(try store.list().isEmpty)
            #expect(try ingestLeftovers(store).isEmpty)
        }
    }

    @Test func abandonedWriterLeavesNothing() async throws {
        try await withTemporaryDirectory("content") { root in
            let store = try ContentStore(root: root)
            do {
                let writer = try store.writer()
                try Data("partial".utf8).withUnsafeBytes { try writer.write($0) }
                #expect(try ingestLeftovers(store).count == 1)
            }
            #expect(try ingestLeftovers(store).isEmpty)
            #expect(try store.list().isEmpty)
        }
    }

    @Test func concurrentIngestsOfOneDigest() async throws {
        try await withTemporaryDirectory("content") { root in
            let store = try ContentStore(root: root)
            let data = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let digest = Digest.compute(data)
            let results = try await withThrowingTaskGroup(of: Digest.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let writer = try store.writer(expected: digest, expectedSize: Int64(data.count))
                        for start in stride(from: 0, to: data.count, by: 100_000) {
                            try data[start..<min(start + 100_000, data.count)].withUnsafeBytes { try writer.write($0) }
                            await Task.yield()
                        }
                        return try writer.commit().digest
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results == Array(repeating: digest, count: 8))
            #expect(try store.list().map(\.digest) == [digest])
            #expect(try Data(file: store.path(for: digest)) == data)
            #expect(try ingestLeftovers(store).isEmpty)
        }
    }

    @Test func noticesDamageOnDisk() async throws {
        try await withTemporaryDirectory("content") { root in
            let store = try ContentStore(root: root)
            let data = Data(#"{"a": 1}"#.utf8)
            let (digest, size) = try store.ingest(data)
            chmod(store.path(for: digest), 0o644)
            try Data(#"{"a": 2}"#.utf8).write(to: URL(fileURLWithPath: store.path(for: digest)))
            #expect {
                try store.document(Descriptor(mediaType: .ociConfig, digest: digest, size: size))
            } throws: { ($0 as? OCIImageError)?.code == .digestMismatch }
        }
    }
}
