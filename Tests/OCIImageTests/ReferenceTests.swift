import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct ImageReferenceTests {
    @Test(arguments: [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:5000/team/app:v2", "127.0.0.1:5000/team/app:v2", "127.0.0.1:5000/team/app:v2"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
        ("ghcr.io/org/sub/app:1.0-rc_1", "ghcr.io/org/sub/app:1.0-rc_1", "ghcr.io/org/sub/app:1.0-rc_1"),
        ("Registry.Example/app", "Registry.Example/app:latest", "Registry.Example/app:latest"),
        ("a__b/c---d/e.f", "docker.io/a__b/c---d/e.f:latest", "a__b/c---d/e.f:latest"),
        ("busybox@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
         "docker.io/library/busybox@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
         "busybox@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("busybox:1@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
         "docker.io/library/busybox:1@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
         "busybox:1@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ])
    func normalises(input: String, full: String, familiar: String) throws {
        let reference = try ImageReference(parsing: input)
        #expect(reference.description == full)
        #expect(reference.familiarDescription == familiar)
        #expect(try ImageReference(parsing: reference.description) == reference)
    }

    @Test(arguments: [
        ("", "it is empty"),
        ("Busybox", "the repository name \"Busybox\" must be lowercase"),
        ("docker.io/Library/busybox", "must be lowercase"),
        ("busybox:", "the tag after ':' is empty"),
        ("busybox:-x", "the tag \"-x\" must start with a letter, digit or '_'"),
        ("busybox:a+b", "may contain only letters, digits, '_', '.' and '-'"),
        ("busybox:" + String(repeating: "t", count: 129), "the tag is 129 characters long; at most 128"),
        ("busybox@sha256:123", "the digest is wrong"),
        ("busybox@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported algorithm"),
        ("a//b", "has an empty path component"),
        ("a/b_-c", "the path component \"b_-c\""),
        ("a/.b", "the path component \".b\""),
        ("a/b.", "the path component \"b.\""),
        ("a/b___c", "the path component \"b___c\""),
        ("exa_mple.com:5000/app", "invalid label \"exa_mple\""),
        ("example.com:99999/app", "invalid port \"99999\""),
        ("example.com:/app", "invalid port"),
        ("[zz::1]/app", "malformed IPv6 address"),
        ("with space", "printable ASCII characters without spaces"),
        ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "is an image ID"),
        ("r.io/" + String(repeating: "a", count: 251), "at most 255 are allowed"),
    ])
    func rejects(input: String, reason: String) {
        #expect {
            try ImageReference(parsing: input)
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .invalidReference && error?.message.contains(reason) == true
        }
    }

    @Test func nameLengthLimitCountsTheRegistry() throws {
        let repository = String(repeating: "a", count: 255 - "r.io/".count)
        #expect(try ImageReference(parsing: "r.io/" + repository).name.count == 255)
    }
}
