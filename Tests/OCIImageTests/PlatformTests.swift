import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct PlatformTests {
    @Test(arguments: [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm64/v9", "linux/arm64/v9"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/i386", "linux/386"),
        ("arm64", "linux/arm64"),
        ("arm/v6", "linux/arm/v6"),
        ("LINUX/AMD64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
    ])
    func parsesAndNormalises(input: String, expected: String) throws {
        #expect(try Platform(parsing: input).description == expected)
    }

    @Test(arguments: ["", "linux/", "/amd64", "linux/amd64/v8/extra", "linux/am d64"])
    func rejects(input: String) {
        #expect { try Platform(parsing: input) } throws: { ($0 as? OCIImageError)?.code == .invalidPlatform }
    }

    @Test func matchesCompatibleVariants() throws {
        let arm7 = try Platform(parsing: "linux/arm/v7")
        #expect(arm7.canRun(try Platform(parsing: "linux/arm/v6")))
        #expect(!arm7.canRun(try Platform(parsing: "linux/arm/v8")))
        #expect(!arm7.canRun(try Platform(parsing: "linux/arm64")))
        let amd64v3 = try Platform(parsing: "linux/amd64/v3")
        #expect(amd64v3.canRun(Platform(os: "linux", architecture: "x86_64")))
        #expect(!Platform(os: "linux", architecture: "amd64").canRun(amd64v3))
        #expect(Platform(os: "linux", architecture: "aarch64", variant: "v8").canRun(Platform(os: "linux", architecture: "arm64")))
        #expect(!Platform(os: "linux", architecture: "amd64").canRun(Platform(os: "windows", architecture: "amd64")))
    }

    @Test func indexPicksTheBestManifest() throws {
        func entry(_ platform: String, _ n: Int) throws -> Descriptor {
            Descriptor(mediaType: .ociManifest, digest: Digest.compute([UInt8(n)]), size: 1, platform: try Platform(parsing: platform))
        }
        let index = ImageIndex(manifests: [try entry("linux/arm/v5", 0), try entry("linux/arm/v6", 1), try entry("linux/arm64", 2), try entry("linux/amd64", 3)])
        #expect(try index.manifest(for: Platform(parsing: "linux/arm/v7")).digest == Digest.compute([1]))
        #expect(try index.manifest(for: Platform(parsing: "linux/aarch64")).digest == Digest.compute([2]))
        #expect(try index.manifest(for: Platform(parsing: "linux/amd64/v2")).digest == Digest.compute([3]))
        #expect {
            try index.manifest(for: Platform(parsing: "linux/s390x"))
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .platformNotFound && error?.message.contains("linux/arm/v5, linux/arm/v6, linux/arm64, linux/amd64") == true
        }
    }

    @Test func hostIsNormalised() {
        #expect(Platform.host.os == "linux")
        #expect(Platform.host == Platform.host.normalized)
    }
}
