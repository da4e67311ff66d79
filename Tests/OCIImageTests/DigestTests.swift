import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct DigestTests {
    @Test func parsesAndPrints() throws {
        let text = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        let digest = try Digest(parsing: text)
        #expect(digest.algorithm == .sha256)
        #expect(digest.description == text)
        #expect(digest.shortForm == "ba7816bf8f01")
        let sha512 = try Digest(parsing: "sha512:" + String(repeating: "ab", count: 64))
        #expect(sha512.algorithm == .sha512)
    }

    @Test func hashesKnownVectors() {
        #expect(Digest.compute(Array("abc".utf8)).description == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digest.compute(Array("abc".utf8), algorithm: .sha512).encoded.hasPrefix("ddaf35a193617aba"))
    }

    @Test func streamingEqualsOneShot() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var hasher = DigestHasher()
        for chunk in stride(from: 0, to: bytes.count, by: 7_777) {
            bytes[chunk..<min(chunk + 7_777, bytes.count)].withUnsafeBytes { hasher.update($0) }
        }
        #expect(hasher.finalize() == Digest.compute(bytes))
        #expect(hasher.count == 100_000)
    }

    @Test(arguments: [
        ("sha256", "algorithm:hex"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported algorithm \"md5\""),
        ("sha256:abc", "64 hex characters, not 3"),
        ("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", "lowercase hexadecimal"),
        ("sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "lowercase hexadecimal"),
        ("sha512:ab", "128 hex characters"),
    ])
    func rejects(text: String, reason: String) {
        #expect {
            try Digest(parsing: text)
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .invalidDigest && error?.message.contains(reason) == true
        }
    }

    @Test func codesAsString() throws {
        let digest = Digest.compute(Array("x".utf8))
        let data = try JSONEncoder().encode([digest])
        #expect(try JSONDecoder().decode([Digest].self, from: data) == [digest])
        #expect(throws: (any Error).self) { try JSONDecoder().decode([Digest].self, from: Data(#"["sha256:nope"]"#.utf8)) }
    }
}
