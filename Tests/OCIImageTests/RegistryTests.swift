import Foundation
import Synchronization
import GantryTestSupport
import Testing
@testable import OCIImage

/// Pull and push against the real Distribution registry (Debian's
/// `docker-registry`), started per test on 127.0.0.1.
@Suite struct RegistryTests {
    /// A client that trusts nothing but loopback and holds `credentials`.
    func client(_ credentials: [String: RegistryCredential] = [:], chunkSize: Int? = nil, attempts: Int = 8) throws -> RegistryClient {
        try RegistryClient(options: RegistryOptions(retry: RetryPolicy(attempts: attempts, initialDelay: .milliseconds(50)), uploadChunkSize: chunkSize),
                           credentials: StaticCredentials(credentials))
    }

    func skopeoDigest(_ reference: String) throws -> String {
        let json = try run("skopeo", ["inspect", "--tls-verify=false", "docker://\(reference)"])
        return try #require((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["Digest"] as? String)
    }

    @Test func skopeoAndGantryExchangeImages() async throws {
        try await withTemporaryDirectory("registry-interop") { dir in
            try await withTestRegistry(dir) { registry in
                try await Fixtures.busyboxLayout(dir + "/layout", tag: "1.0", scratch: dir)
                try await run("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "oci:\(dir)/layout:1.0", "docker://\(registry.host)/tools/busybox:1.0"])
                let pushedBySkopeo = try skopeoDigest("\(registry.host)/tools/busybox:1.0")

                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client())
                let pulled = try await store.pull("\(registry.host)/tools/busybox:1.0")
                #expect(pulled.digest.description == pushedBySkopeo)
                #expect(pulled.downloaded == 2 && pulled.present == 0)
                let details = try await store.inspect("\(registry.host)/tools/busybox:1.0")
                #expect(details.digest.description == pushedBySkopeo)
                try await store.unpack("\(registry.host)/tools/busybox:1.0", into: dir + "/ours", keepingPrivileges: true)
                let source = try snapshotTree(dir + "/busybox-rootfs", mtimes: false)
                #expect(differences(source, try snapshotTree(dir + "/ours", mtimes: false)) == [])

                // Pulling again fetches nothing but the manifest.
                let again = try await store.pull("\(registry.host)/tools/busybox:1.0")
                #expect(again.downloaded == 0 && again.bytes == 0)

                // Gantry pushes, in chunks, an image it made itself; skopeo pulls it and umoci unpacks it.
                try write("made by gantry", to: dir + "/busybox-rootfs/etc/origin")
                try await store.importRootfs(at: dir + "/busybox-rootfs", name: "local/made:1")
                let chunked = try ImageStore(root: StateRoot(dir + "/state"), registry: try client(chunkSize: 300_000))
                let pushed = try await chunked.push("local/made:1", to: "\(registry.host)/gantry/made:v1")
                #expect(Set(pushed.blobs.values) == [.uploaded])
                #expect(try skopeoDigest("\(registry.host)/gantry/made:v1") == pushed.digest.description)
                try await run("skopeo", ["copy", "--quiet", "--src-tls-verify=false", "docker://\(registry.host)/gantry/made:v1", "oci:\(dir)/back:v1"])
                try await run("umoci", ["unpack"] + (geteuid() == 0 ? [] : ["--rootless"]) + ["--image", "\(dir)/back:v1", dir + "/bundle"])
                try await store.unpack("local/made:1", into: dir + "/made")
                let umociTree = try snapshotTree(dir + "/bundle/rootfs", directoryMtimes: false)
                #expect(differences(umociTree, try snapshotTree(dir + "/made", directoryMtimes: false)) == [])
                #expect(try readText(dir + "/bundle/rootfs/etc/origin") == "made by gantry")

                // A second repository of the same registry gets the blobs by mount.
                let mounted = try await store.push("local/made:1", to: "\(registry.host)/gantry/copy:v1")
                #expect(Set(mounted.blobs.values) == [.mounted] && mounted.bytes == 0)
                #expect(try await store.tags("\(registry.host)/gantry/copy") == ["v1"])
            }
        }
    }

    @Test func basicAuthentication() async throws {
        try await withTemporaryDirectory("registry-basic") { dir in
            try await withTestRegistry(dir, authentication: .htpasswd(user: "alice", password: "s3cret")) { registry in
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                let good = try ImageStore(root: StateRoot(dir + "/state"), registry: try client([registry.host: .basic(username: "alice", password: "s3cret")]))
                try await good.importRootfs(at: dir + "/rootfs", name: "local/tools:1")
                try await good.push("local/tools:1", to: "\(registry.host)/team/tools:1")

                let anonymous = try ImageStore(root: StateRoot(dir + "/anonymous"), registry: try client())
                await #expect { try await anonymous.pull("\(registry.host)/team/tools:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .unauthorized && error?.message.contains("gantry login \(registry.host)") == true
                }
                let wrong = try ImageStore(root: StateRoot(dir + "/wrong"), registry: try client([registry.host: .basic(username: "alice", password: "nope")]))
                await #expect { try await wrong.pull("\(registry.host)/team/tools:1") } throws: { ($0 as? OCIImageError)?.code == .unauthorized }
                #expect(try await wrong.list().isEmpty)
                try await wrong.importRootfs(at: dir + "/rootfs", name: "local/tools:1")
                await #expect { try await wrong.push("local/tools:1", to: "\(registry.host)/team/tools:2") } throws: { ($0 as? OCIImageError)?.code == .unauthorized }

                let fresh = try ImageStore(root: StateRoot(dir + "/fresh"), registry: try client([registry.host: .basic(username: "alice", password: "s3cret")]))
                #expect(try await fresh.pull("\(registry.host)/team/tools:1").downloaded == 2)

                // Logging in checks the credentials first.
                let checker = try client()
                try await checker.login(registry: registry.host, credential: .basic(username: "alice", password: "s3cret"))
                await #expect { try await checker.login(registry: registry.host, credential: .basic(username: "alice", password: "bad")) } throws: {
                    ($0 as? OCIImageError)?.code == .unauthorized
                }
            }
        }
    }

    @Test func tokenAuthentication() async throws {
        try await withTemporaryDirectory("registry-token") { dir in
            // The token service stumbles twice before it works.
            let tokens = try await TokenServer(directory: dir + "/token", users: ["bob": "hunter2"], failures: 2)
            defer { Task { try? await tokens.shutdown() } }
            try await withTestRegistry(dir, authentication: .token(tokens)) { registry in
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                let bob = try client([registry.host: .basic(username: "bob", password: "hunter2")])
                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: bob)
                try await store.importRootfs(at: dir + "/rootfs", name: "local/tools:1")
                try await store.push("local/tools:1", to: "\(registry.host)/bob/tools:1")
                let afterPush = tokens.requests

                let other = try ImageStore(root: StateRoot(dir + "/other"), registry: bob)
                let pulled = try await other.pull("\(registry.host)/bob/tools:1")
                #expect(pulled.downloaded == 2)
                // One token for the pull scope serves the manifest and both blobs.
                #expect(tokens.requests - afterPush == 1)
                #expect(afterPush >= 3)
                #expect(tokens.scopesRequested.last == "repository:bob/tools:pull")
                #expect(try await other.tags("\(registry.host)/bob/tools") == ["1"])

                let mallory = try ImageStore(root: StateRoot(dir + "/mallory"),
                                             registry: try client([registry.host: .basic(username: "bob", password: "guess")]))
                await #expect { try await mallory.pull("\(registry.host)/bob/tools:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .unauthorized && error?.message.contains("refused the credentials") == true
                }
                let anonymous = try ImageStore(root: StateRoot(dir + "/anonymous"), registry: try client())
                await #expect { try await anonymous.pull("\(registry.host)/bob/tools:1") } throws: { ($0 as? OCIImageError)?.code == .unauthorized }
            }
        }
    }

    @Test func resumesWhenTheRegistryDiesMidPull() async throws {
        try await withTemporaryDirectory("registry-resume") { dir in
            try await withTestRegistry(dir) { registry in
                // An incompressible 40 MB layer takes long enough to interrupt.
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                try await run("dd", ["if=/dev/urandom", "of=\(dir)/rootfs/random", "bs=1M", "count=40", "status=none"])
                let local = try ImageStore(root: StateRoot(dir + "/local"), registry: try client())
                try await local.importRootfs(at: dir + "/rootfs", name: "local/big:1")
                try await local.push("local/big:1", to: "\(registry.host)/big/image:1")

                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try client(attempts: 12))
                let killed = Once()
                let report = try await store.pull("\(registry.host)/big/image:1") { progress in
                    guard let total = progress.total, total > 10_000_000, progress.completed > total / 4,
                          killed.claim() else { return }
                    registry.kill()
                    DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { try? registry.start() }
                }
                #expect(killed.claimed)
                #expect(report.downloaded == 2)
                // Resumed with Range, not started over: every byte came once.
                let details = try await store.inspect("\(registry.host)/big/image:1")
                let configSize = try #require(store.content.size(of: details.configDigest))
                #expect(report.bytes == details.layers[0].size + configSize)
                try await store.unpack("\(registry.host)/big/image:1", into: dir + "/out")
                #expect(try Data(file: dir + "/out/random") == (try Data(file: dir + "/rootfs/random")))
            }
        }
    }
}

@Suite struct RegistryUploadFaultTests {
    @Test func pushStartsUploadsOverWhenTheRegistryDies() async throws {
        try await withTemporaryDirectory("registry-push-restart") { dir in
            try await withTestRegistry(dir) { registry in
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                try await run("dd", ["if=/dev/urandom", "of=\(dir)/rootfs/random", "bs=1M", "count=40", "status=none"])
                let options = RegistryOptions(retry: RetryPolicy(attempts: 12, initialDelay: .milliseconds(50)))
                let store = try ImageStore(root: StateRoot(dir + "/state"), registry: try RegistryClient(options: options, credentials: StaticCredentials()))
                try await store.importRootfs(at: dir + "/rootfs", name: "local/big:1")
                let killed = Once()
                let report = try await store.push("local/big:1", to: "\(registry.host)/big/pushed:1") { progress in
                    guard let total = progress.total, total > 10_000_000, progress.completed > total / 4, killed.claim() else { return }
                    registry.kill()
                    DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { try? registry.start() }
                }
                #expect(killed.claimed)
                #expect(Set(report.blobs.values) == [.uploaded])
                let fresh = try ImageStore(root: StateRoot(dir + "/fresh"), registry: try RegistryClient(options: options, credentials: StaticCredentials()))
                let pulled = try await fresh.pull("\(registry.host)/big/pushed:1")
                #expect(pulled.digest == report.digest)
            }
        }
    }

    @Test func aLocalReadErrorIsNotBlamedOnTheRegistry() async throws {
        try await withTemporaryDirectory("registry-short-file") { dir in
            try await withTestRegistry(dir) { registry in
                try write("short", to: dir + "/blob")
                let client = try RegistryClient(credentials: StaticCredentials())
                let descriptor = Descriptor(mediaType: .ociLayer, digest: Digest.compute(Data("longer content".utf8)), size: 14)
                await #expect {
                    try await client.upload(descriptor, from: dir + "/blob", registry: registry.host, repository: "a/b")
                } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .systemCall && error?.message.contains("\(dir)/blob") == true
                }
            }
        }
    }
}

/// True for the first caller of ``claim()`` only.
final class Once: Sendable {
    private let state = Mutex(false)
    func claim() -> Bool { state.withLock { claimed in defer { claimed = true }; return !claimed } }
    var claimed: Bool { state.withLock { $0 } }
}

@Suite struct RegistryTLSTests {
    @Test func httpsWithAnExtraCertificateAuthority() async throws {
        try await withTemporaryDirectory("registry-tls") { dir in
            let pki = try makeCertificates(dir + "/pki")
            try await withTestRegistry(dir, tls: (pki.certificate, pki.key)) { registry in
                func store(_ name: String, authority: String?) throws -> ImageStore {
                    let options = RegistryOptions(loopbackIsInsecure: false, certificateAuthority: authority,
                                                  retry: RetryPolicy(attempts: 2, initialDelay: .milliseconds(10), connectionWindow: .seconds(1)),
                                                  connectTimeout: .seconds(1))
                    return try ImageStore(root: StateRoot(dir + "/" + name), registry: try RegistryClient(options: options, credentials: StaticCredentials()))
                }
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                let trusting = try store("trusting", authority: pki.authority)
                try await trusting.importRootfs(at: dir + "/rootfs", name: "local/tools:1")
                let pushed = try await trusting.push("local/tools:1", to: "\(registry.host)/secure/tools:1")
                let pulled = try await store("fresh", authority: pki.authority).pull("\(registry.host)/secure/tools:1")
                #expect(pulled.digest == pushed.digest)

                // Without the authority, the certificate is not trusted.
                let doubting = try store("doubting", authority: nil)
                await #expect { try await doubting.pull("\(registry.host)/secure/tools:1") } throws: { error in
                    let error = error as? OCIImageError
                    return error?.code == .network && error?.message.contains("certificate is not trusted") == true
                }
            }
        }
    }
}
