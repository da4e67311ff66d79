import CGantrySystem
import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

/// Layers that once went wrong: replacing and whiting out directories below
/// the root, stale paths after symlinks change, metadata through symlinked
/// parents, errors with much of the layer unread, and more.
@Suite struct UnpackEdgeCaseTests {
    func unpack(_ dir: String, _ layer: String, into target: String, _ options: LayerUnpackOptions = LayerUnpackOptions()) throws {
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try LayerUnpacker.unpack(layerAt: "\(dir)/\(layer).tar", into: target, options: options)
    }

    func attributes(_ path: String) -> [String] {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = gantry_llistxattr(path, &buffer, buffer.count)
        guard length > 0 else { return [] }
        return buffer[..<length].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            .filter { !$0.contains("overlay.") && !$0.hasPrefix("security.selinux") }.sorted()
    }

    func mode(_ path: String) -> mode_t {
        var st = stat()
        lstat(path, &st)
        return st.st_mode & 0o7777
    }

    @Test func replacesDirectoriesBelowTheRoot() async throws {
        try await withTemporaryDirectory("edge-replace") { dir in
            try await Fixtures.layers("edge", into: dir)
            try unpack(dir, "replace-deep-directory", into: dir + "/t")
            #expect(try readText(dir + "/t/a/b") == "now a file")
            try unpack(dir, "deep", into: dir + "/deep")
            #expect(try readText(dir + "/deep/a") == "flat again")
        }
    }

    @Test func layersAppliedInOrder() async throws {
        try await withTemporaryDirectory("edge-apply") { dir in
            try await Fixtures.layers("edge", into: dir)
            let target = dir + "/t"
            try unpack(dir, "lower-doc", into: target)
            try unpack(dir, "upper-doc", into: target)
            // A whiteout of a directory below the root.
            #expect(!FileManager.default.fileExists(atPath: target + "/usr/share/doc"))
            // An opaque directory keeps what this layer wrote, even below
            // directories it did not list.
            #expect(try readText(target + "/d/sub/new") == "new")
            #expect(!FileManager.default.fileExists(atPath: target + "/d/old"))
            // A directory declared again has only the attributes it is given.
            #expect(attributes(target + "/etc") == ["user.b"])
            // A directory declared through a symlinked parent gets its mode and time.
            #expect(mode(target + "/usr/lib/plugins") == 0o751)
            var st = stat()
            lstat(target + "/usr/lib/plugins", &st)
            #expect(st.st_mtim.tv_sec == 1_600_000_000)
            #expect(try readText(target + "/x/y") == "y" && !FileManager.default.fileExists(atPath: target + "/x/old"))
        }
    }

    @Test func overlaySnapshotsOfTheSameLayers() async throws {
        try await withTemporaryDirectory("edge-overlay") { dir in
            try await Fixtures.layers("edge", into: dir)
            let lower = dir + "/lower"
            let upper = dir + "/upper"
            try unpack(dir, "lower-doc", into: lower, LayerUnpackOptions(whiteouts: .overlay(lowerLayers: [])))
            try unpack(dir, "upper-doc", into: upper, LayerUnpackOptions(whiteouts: .overlay(lowerLayers: [lower])))
            // The whiteout became a directory hiding the lower one.
            var st = stat()
            lstat(upper + "/x", &st)
            #expect(st.st_mode & S_IFMT == S_IFDIR)
            var value: UInt8 = 0
            let opaque = geteuid() == 0 && Sys.isPrivileged ? "trusted.overlay.opaque" : "user.overlay.opaque"
            #expect(gantry_lgetxattr(upper + "/x", opaque, &value, 1) == 1 && value == UInt8(ascii: "y"))
            // Implicit parents take the lower layer's metadata; the one under
            // the symlink lands where the symlink leads.
            #expect(mode(upper + "/ro") == 0o555)
            #expect(mode(upper + "/usr/lib/plugins") == 0o751)
            // A hard link into the lower layer copies the file up with its attributes.
            #expect(attributes(upper + "/bin-ping") == ["user.note"])
            var pair = (stat(), stat())
            lstat(upper + "/bin-ping", &pair.0)
            lstat(upper + "/bin-ping2", &pair.1)
            #expect(pair.0.st_ino == pair.1.st_ino)
        }
    }

    @Test func pathsFollowSymlinksAsTheyAreNow() async throws {
        try await withTemporaryDirectory("edge-relink") { dir in
            try await Fixtures.layers("edge", into: dir)
            try unpack(dir, "relink", into: dir + "/t")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/t/usr/lib") == ["a"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/t/lib") == ["b"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/t/x") == ["1"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/t/y") == ["2"])
        }
    }

    @Test func directoryModesAreSetChildrenFirst() async throws {
        try await withTemporaryDirectory("edge-modes") { dir in
            try await Fixtures.layers("edge", into: dir)
            try unpack(dir, "children-first", into: dir + "/t")
            #expect(mode(dir + "/t/p") == 0o500 && mode(dir + "/t/p/q") == 0o500 && mode(dir + "/t/p/q/r") == 0o700)
            chmod(dir + "/t/p", 0o700)
            chmod(dir + "/t/p/q", 0o700)
        }
    }

    @Test func failuresWithMuchOfTheLayerUnreadEndCleanly() async throws {
        try await withTemporaryDirectory("edge-abort") { dir in
            try await Fixtures.layers("edge", into: dir)
            #expect {
                try unpack(dir, "long-name-then-data", into: dir + "/t1")
            } throws: { error in
                let error = error as? OCIImageError
                return error?.code == .unsafeLayerEntries && error?.refusedEntries.first?.reason.contains("longer than 255") == true
            }
            #expect {
                try unpack(dir, "many-then-big", into: dir + "/t2", LayerUnpackOptions(isCancelled: { true }))
            } throws: { ($0 as? OCIImageError)?.code == .cancelled }
        }
    }

    @Test func refusesDamagedArchivesAndForeignCompressions() async throws {
        try await withTemporaryDirectory("edge-damaged") { dir in
            try await Fixtures.layers("edge", into: dir)
            #expect {
                try unpack(dir, "damaged-header", into: dir + "/t1")
            } throws: { ($0 as? OCIImageError)?.code == .corruptLayer }
            #expect(!FileManager.default.fileExists(atPath: dir + "/t1/hidden"))
            // Only gzip, zstd and plain tar are layer formats.
            try await run("bzip2", ["-k", dir + "/relink.tar"])
            try FileManager.default.moveItem(atPath: dir + "/relink.tar.bz2", toPath: dir + "/bzip2.tar")
            #expect {
                try unpack(dir, "bzip2", into: dir + "/t2")
            } throws: { ($0 as? OCIImageError)?.code == .corruptLayer }
        }
    }

    @Test func copyUpKeepsHoles() async throws {
        try await withTemporaryDirectory("edge-sparse") { dir in
            let tree = dir + "/tree"
            try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
            let fd = open(tree + "/sparse", O_WRONLY | O_CREAT, 0o644)
            ftruncate(fd, 1 << 30)
            _ = pwrite(fd, "end", 3, (1 << 30) - 3)
            close(fd)
            try await run("tar", ["--format=pax", "--sparse", "-C", tree, "-cf", dir + "/lower.tar", "sparse"])
            try FileManager.default.createDirectory(atPath: dir + "/link", withIntermediateDirectories: true)
            try await run("python3", ["-c", """
                import tarfile
                with tarfile.open("\(dir)/upper.tar", "w", format=tarfile.PAX_FORMAT) as archive:
                    info = tarfile.TarInfo("again"); info.type = tarfile.LNKTYPE; info.linkname = "sparse"
                    archive.addfile(info)
                """])
            try unpack(dir, "lower", into: dir + "/lower-snapshot", LayerUnpackOptions(whiteouts: .overlay(lowerLayers: [])))
            try unpack(dir, "upper", into: dir + "/upper-snapshot", LayerUnpackOptions(whiteouts: .overlay(lowerLayers: [dir + "/lower-snapshot"])))
            var st = stat()
            lstat(dir + "/upper-snapshot/sparse", &st)
            #expect(st.st_size == 1 << 30)
            #expect(Int(st.st_blocks) * 512 < 1 << 20)
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: dir + "/upper-snapshot/again"))
            try handle.seek(toOffset: (1 << 30) - 3)
            #expect(try handle.readToEnd() == Data("end".utf8))
            try handle.close()
        }
    }
}

@Suite struct UnprivilegedUnpackTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    /// A user who is not root unpacks an image in which one layer makes a
    /// directory read-only and the next writes into it.
    @Test(.requiresRoot) func laterLayersWriteIntoReadOnlyDirectories() async throws {
        try await withTemporaryDirectory("unprivileged") { dir in
            try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
            chmod(dir, 0o777)
            try await Fixtures.layers("edge", into: dir)
            try await Fixtures.umociLayout(dir + "/layout", tag: "ro", layers: [dir + "/lower-doc.tar", dir + "/upper-doc.tar"])
            try await run("chmod", ["-R", "a+rX", dir + "/layout"])
            let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "--root", dir + "/state"]
            let imported = try await runWithStatus("setpriv", asNobody + ["image", "import-layout", dir + "/layout:ro", "--name", "ro:1"])
            #expect(imported.status == 0, "\(imported.error)")
            let unpacked = try await runWithStatus("setpriv", asNobody + ["image", "unpack", "ro:1", dir + "/out"])
            #expect(unpacked.status == 0, "\(unpacked.error)")
            #expect(try readText(dir + "/out/ro/y") == "y")
            var st = stat()
            lstat(dir + "/out/ro", &st)
            #expect(st.st_mode & 0o7777 == 0o555)
            chmod(dir + "/out/ro", 0o755)
        }
    }
}
