import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage
#if canImport(Glibc)
import Glibc
#endif

/// `kill -9` of `gantry image pull` (and of the prune that follows a failed
/// one) at random moments: the store opens again, holds no half-written
/// blob under a digest, pulls the image anew, and gives back every byte
/// once the image is removed.
@Suite(.serialized) struct CrashedPullTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ root: String, _ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        try await runWithStatus(binary, ["--root", root] + arguments)
    }

    func files(under path: String) -> [String] {
        (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).filter { name in
            var info = stat()
            return lstat(path + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) != S_IFDIR
        }
    }

    @Test func pullKilledAtRandomMomentsLeavesAStoreThatPullsAgainAndEmptiesClean() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        try await withTemporaryDirectory("crashed-pull") { dir in
            try await withTestRegistry(dir) { registry in
                // Three layers, one of them 24 MiB that gzip cannot shrink, so
                // that a pull lasts long enough for kills to land inside it.
                let source = dir + "/source"
                try Fixtures.busyboxRootfs(dir + "/rootfs")
                #expect(try await gantry(source, ["image", "import-rootfs", dir + "/rootfs", "--name", "base:1"]).status == 0)
                let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
                try random.readData(ofLength: 24 << 20).write(to: URL(fileURLWithPath: dir + "/rootfs/noise"))
                try random.close()
                #expect(try await gantry(source, ["image", "import-rootfs", dir + "/rootfs", "--name", "big:1"]).status == 0)
                let reference = "\(registry.host)/team/big:1"
                let pushed = try await gantry(source, ["image", "push", "big:1", reference])
                #expect(pushed.status == 0, "\(pushed.error)")

                let root = dir + "/state"
                // Kills land anywhere within the time a whole pull takes here.
                let start = ContinuousClock.now
                #expect(try await gantry(root, ["image", "pull", reference]).status == 0)
                let whole = ContinuousClock.now - start
                #expect(try await gantry(root, ["image", "rm", reference]).status == 0)
                #expect(try await gantry(root, ["image", "prune"]).status == 0)
                func microseconds(_ duration: Duration) -> UInt32 {
                    UInt32(clamping: duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)
                }
                // At most 3 s, and never longer than a pull that ended before its kill.
                var window = min(max(microseconds(whole), 50_000), 3_000_000)
                var generator = SystemRandomNumberGenerator()
                var killed = 0
                let rounds = 30
                for round in 0 ..< rounds {
                    let started = ContinuousClock.now
                    if try killAtRandom(binary, ["--root", root, "image", "pull", reference], window: window, using: &generator) {
                        killed += 1
                    } else {
                        window = max(min(window, microseconds(ContinuousClock.now - started)), 50_000)
                    }
                    if round % 3 == 2, try killAtRandom(binary, ["--root", root, "image", "prune"], window: 100_000, using: &generator) { killed += 1 }
                    // Whatever was cut short, the store opens and lists.
                    let listed = try await gantry(root, ["image", "ls"])
                    #expect(listed.status == 0, "round \(round): \(listed.error)")
                    if try await gantry(root, ["image", "inspect", reference]).status == 0 {
                        // A pull that finished: take it away so the next one starts over.
                        #expect(try await gantry(root, ["image", "rm", reference]).status == 0)
                    }
                }
                #expect(killed > rounds / 3, "only \(killed) commands were killed before they ended")
                print("crash recovery: \(killed) pulls and prunes of \(rounds) rounds killed with SIGKILL (a whole pull: \(whole))")

                // No blob is stored under a digest its content does not have.
                let checked = try await gantry(root, ["check"])
                #expect(checked.status == 0 && checked.output.contains("nothing is damaged"), "\(checked.output)\(checked.error)")
                let pulled = try await gantry(root, ["image", "pull", reference])
                #expect(pulled.status == 0, "\(pulled.error)")
                let unpacked = try await gantry(root, ["image", "unpack", reference, dir + "/out"])
                #expect(unpacked.status == 0, "\(unpacked.error)")
                #expect(FileManager.default.contents(atPath: dir + "/out/noise") == FileManager.default.contents(atPath: dir + "/rootfs/noise"))
                // Removed and pruned, the store holds nothing: no blob, snapshot or scratch file.
                #expect(try await gantry(root, ["image", "rm", reference]).status == 0)
                #expect(try await gantry(root, ["image", "prune"]).status == 0)
                for area in ["blobs", "snapshots", "ingest", "tmp"] {
                    // (But the mapping an ordinary user's layers are for.)
                    let kept = files(under: root + "/" + area).filter { $0 != ImageStore.userNamespaceRecord }
                    #expect(kept.isEmpty, "\(area) keeps \(kept.prefix(5))")
                }
            }
        }
    }
}
