import Foundation
import GantryTestSupport
import OCIImage
import SystemPackage
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Copies into and out of containers (`gantry cp`), running, created and
/// stopped, and what a container that plants symlinks cannot make them do.
@Suite(.requiresRoot) struct CopyTests {
    /// A container that prepares `/data` and then waits.
    static func waiting(_ script: String = "true") -> ContainerSpec {
        shell("mkdir -p /data && \(script) && echo ready && exec sleep 600")
    }

    @Test func copiesFilesAndTreesIntoARunningContainer() async throws {
        try await withRuntime("cp-in") { runtime, dir in
            let source = dir + "/source"
            try write("hello\n", to: source + "/file.txt")
            try write("echo from-a\n", to: source + "/tree/a.sh")
            try write("secret\n", to: source + "/tree/sub/b.txt")
            try FileManager.default.createSymbolicLink(atPath: source + "/tree/link", withDestinationPath: "a.sh")
            try FileManager.default.createSymbolicLink(atPath: source + "/tree/sub/up", withDestinationPath: "../..")
            chmod(source + "/file.txt", 0o640)
            chmod(source + "/tree/a.sh", 0o751)
            chmod(source + "/tree/sub/b.txt", 0o600)
            chmod(source + "/tree", 0o750)
            chown(source + "/file.txt", 1234, 1234)

            let container = try await runtime.create(Self.waiting())
            try await container.start()
            try await waitForOutput(container, "ready")
            try await container.copyIn(from: source + "/file.txt", to: "/data/")
            try await container.copyIn(from: source + "/file.txt", to: "/data/renamed.txt", options: CopyOptions(keepOwners: true))
            try await container.copyIn(from: source + "/tree", to: "/data")
            try await container.copyIn(from: source + "/tree", to: "/data/copy")
            try await container.copyIn(from: source + "/tree/.", to: "/data")

            let (status, output) = try await execText(container, """
                cat /data/file.txt /data/renamed.txt
                stat -c '%a %u:%g %n' /data/file.txt /data/renamed.txt /data/tree /data/tree/a.sh /data/tree/sub/b.txt
                busybox readlink /data/tree/link; busybox readlink /data/tree/sub/up
                sh /data/tree/link
                cat /data/copy/sub/b.txt
                test -f /data/a.sh && test -L /data/link && test ! -e /data/copy/tree && echo contents-only
                """)
            #expect(status == 0, "\(output)")
            #expect(output == """
                hello
                hello
                640 0:0 /data/file.txt
                640 1234:1234 /data/renamed.txt
                750 0:0 /data/tree
                751 0:0 /data/tree/a.sh
                600 0:0 /data/tree/sub/b.txt
                a.sh
                ../..
                from-a
                secret
                contents-only

                """)

            // A trailing slash on a missing destination: a directory that must exist.
            let error = await #expect(throws: RuntimeError.self) {
                try await container.copyIn(from: source + "/file.txt", to: "/data/missing/")
            }
            #expect(error?.message.contains("/data/missing/") == true && error?.message.contains(container.name) == true, "\(String(describing: error))")
            await #expect(throws: RuntimeError.self) { try await container.copyIn(from: dir + "/nothing", to: "/data") }
            try await container.remove(force: true)
        }
    }

    @Test func copiesOutWhileRunningAfterStoppingAndIntoACreatedContainer() async throws {
        try await withRuntime("cp-out") { runtime, dir in
            let container = try await runtime.create(Self.waiting("""
                mkdir -p /out/sub && echo one > /out/a.txt && echo two > /out/sub/b.txt && busybox chmod 600 /out/a.txt \
                && busybox ln -s a.txt /out/link && busybox chown 1234:1234 /out/sub/b.txt
                """))
            try await container.start()
            try await waitForOutput(container, "ready")

            try await container.copyOut("/out", to: dir + "/running")
            #expect(try readText(dir + "/running/a.txt") == "one\n")
            #expect(try readText(dir + "/running/sub/b.txt") == "two\n")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/running/link") == "a.txt")
            #expect(mode(dir + "/running/a.txt") == 0o600)
            #expect(owner(dir + "/running/sub/b.txt") == [geteuid(), getegid()])
            try FileManager.default.createDirectory(atPath: dir + "/kept", withIntermediateDirectories: false)
            try await container.copyOut("/out/sub/b.txt", to: dir + "/kept", options: CopyOptions(keepOwners: true))
            #expect(owner(dir + "/kept/b.txt") == [1234, 1234])

            try await container.stop(grace: .milliseconds(100))
            #expect(try container.status == .stopped)
            try await container.copyOut("/out/sub/b.txt", to: dir + "/after.txt")
            #expect(try readText(dir + "/after.txt") == "two\n")
            // Written into the stopped container's upper layer, and read back.
            try write("late\n", to: dir + "/late.txt")
            try await container.copyIn(from: dir + "/late.txt", to: "/out/")
            try await container.copyOut("/out/late.txt", to: dir + "/late-back.txt")
            #expect(try readText(dir + "/late-back.txt") == "late\n")
            #expect(try FileManager.default.contentsOfDirectory(atPath: runtime.containerDirectory(container.id) + "/upper/out").contains("late.txt"))
            #expect(!(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).contains(container.id), "no overlay is left mounted")
            try await container.remove()

            // A container that never ran sees what was copied in before its start.
            let created = try await runtime.create(shell("cat /data/late.txt /data/again.txt"))
            try FileManager.default.createDirectory(atPath: dir + "/tree", withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: dir + "/late.txt", toPath: dir + "/tree/late.txt")
            await #expect(throws: RuntimeError.self) { try await created.copyIn(from: dir + "/late.txt", to: "/data/") }
            try await created.copyIn(from: dir + "/tree", to: "/data")
            try await created.copyIn(from: dir + "/late.txt", to: "/data/again.txt")
            try await created.start()
            let exit = try await created.wait()
            #expect(exit.code == 0)
            #expect(try await created.logs.text() == "late\nlate\n")
            try await created.remove()
        }
    }

    @Test func aContainerDoesNotStartWhileACopyHasItsOverlay() async throws {
        try await withRuntime("cp-start") { runtime, _ in
            let container = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["true"]))
            // What a copy into a created container holds while its overlay is mounted.
            let held = try container.lockOverlay(what: "copy files of")
            await #expect(throws: RuntimeError.self) { try await container.start() }
            #expect(try container.status == .created)
            close(held)
            try await container.start()
            #expect(try await container.wait().code == 0)
            try await container.remove()
        }
    }

    @Test func followsDockerRulesForDestinationsAndContents() async throws {
        try await withRuntime("cp-rules") { runtime, dir in
            let container = try await runtime.create(Self.waiting("mkdir -p /d/y && echo x > /d/x && echo z > /d/y/z && echo f > /f"))
            try await container.start()
            try await waitForOutput(container, "ready")
            let existing = dir + "/existing"
            try FileManager.default.createDirectory(atPath: existing, withIntermediateDirectories: false)

            try await container.copyOut("/d/.", to: existing)
            #expect(try FileManager.default.contentsOfDirectory(atPath: existing).sorted() == ["x", "y"])
            try await container.copyOut("/d", to: existing)
            #expect(try readText(existing + "/d/y/z") == "z\n")
            try await container.copyOut("/d", to: dir + "/created")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/created").sorted() == ["x", "y"])
            try await container.copyOut("/d/.", to: dir + "/created-contents")
            #expect(try readText(dir + "/created-contents/y/z") == "z\n")

            let missing = await #expect(throws: RuntimeError.self) { try await container.copyOut("/f", to: dir + "/nowhere/") }
            #expect(missing?.message.contains(dir + "/nowhere/") == true, "\(String(describing: missing))")
            #expect(!FileManager.default.fileExists(atPath: dir + "/nowhere"))
            try write("old\n", to: dir + "/file")
            try await container.copyOut("/f", to: dir + "/file")
            #expect(try readText(dir + "/file") == "f\n")
            await #expect(throws: RuntimeError.self) { try await container.copyOut("/d", to: dir + "/file") }
            let absent = await #expect(throws: RuntimeError.self) { try await container.copyOut("/nope", to: dir) }
            #expect(absent?.code == .notFound && absent?.message.contains("\(container.name):/nope") == true)
            await #expect(throws: RuntimeError.self) { try await container.copyOut("/f/.", to: dir) }

            // The stream forms: a tar archive out, and back in elsewhere.
            let archive = dir + "/d.tar"
            let output = try FileDescriptor.open(archive, .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: .ownerReadWrite)
            try await container.archive("/d", to: output)
            try output.close()
            #expect(try await run("tar", ["-tf", archive]).split(separator: "\n").sorted() == ["d/", "d/x", "d/y/", "d/y/z"])
            let input = try FileDescriptor.open(archive, .readOnly, options: .closeOnExec)
            defer { try? input.close() }
            try await container.extract(from: input, into: "/tmp")
            #expect(try await execText(container, "cat /tmp/d/y/z") == (0, "z\n"))
            try await container.remove(force: true)
        }
    }

    @Test func symlinksPlantedByTheContainerCannotReachTheHost() async throws {
        try await withRuntime("cp-escape") { runtime, dir in
            let canary = dir + "/canary"
            try write("host secret\n", to: canary)
            let hostSide = dir + "/host-side"
            try FileManager.default.createDirectory(atPath: hostSide, withIntermediateDirectories: false)
            let before = try FileManager.default.attributesOfItem(atPath: canary)
            try write("mine\n", to: dir + "/payload")
            let unique = "gantry-pwned-\(UUID().uuidString.prefix(8))"

            let container = try await runtime.create(Self.waiting("""
                busybox ln -s / /escape && busybox ln -s \(canary) /etc/x && mkdir -p /box \
                && busybox ln -s \(hostSide) /box/out && busybox ln -s ../../../../../../.. /box/up
                """))
            try await container.start()
            try await waitForOutput(container, "ready")

            // Reading: every path stays inside the container's root.
            await #expect(throws: RuntimeError.self) { try await container.copyOut("/escape" + canary, to: dir + "/got1") }
            await #expect(throws: RuntimeError.self) {
                try await container.copyOut("/etc/x", to: dir + "/got2", options: CopyOptions(followSymlink: true))
            }
            try await container.copyOut("/escape/etc/passwd", to: dir + "/passwd")
            #expect(try readText(dir + "/passwd").hasPrefix("root:x:0:0:root:/root:/bin/sh\nnobody"), "the container's, not the host's")
            try await container.copyOut("/etc/x", to: dir + "/got3")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/got3") == canary, "a symlink is copied as a symlink")
            try await container.copyOut("/box", to: dir + "/box")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/box").sorted() == ["out", "up"])
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/box/up") == "../../../../../../..")
            try await container.copyOut("/", to: dir + "/whole")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/whole/escape") == "/")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/whole/proc").isEmpty, "other file systems are not entered")

            // Writing: through the same symlinks, nothing lands on the host.
            try await container.copyIn(from: dir + "/payload", to: "/etc/x")
            await #expect(throws: RuntimeError.self) { try await container.copyIn(from: dir + "/payload", to: "/escape" + hostSide + "/written") }
            await #expect(throws: RuntimeError.self) { try await container.copyIn(from: dir + "/payload", to: "/box/out/") }
            try await container.copyIn(from: dir + "/payload", to: "/box/up/" + unique)
            #expect(!FileManager.default.fileExists(atPath: "/" + unique))
            let (status, inside) = try await execText(container, "test ! -L /etc/x && cat /etc/x /\(unique)")
            #expect(status == 0 && inside == "mine\nmine\n", "\(inside)")

            // An archive whose own entries try to lead out, in and out of the container.
            let evil = dir + "/evil.tar"
            _ = try await run("python3", ["-c", Self.evilArchive, evil, hostSide])
            let input = try FileDescriptor.open(evil, .readOnly, options: .closeOnExec)
            let refused = await #expect(throws: RuntimeError.self) { try await container.extract(from: input, into: "/box") }
            try input.close()
            #expect(refused?.code == .invalidState && refused?.message.contains("../evil") == true, "\(String(describing: refused))")
            let landing = dir + "/landing"
            try FileManager.default.createDirectory(atPath: landing, withIntermediateDirectories: false)
            let archive = open(evil, O_RDONLY | O_CLOEXEC)
            let landingFD = open(landing, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            defer { close(archive); close(landingFD) }
            let policy = PlainArchivePolicy(owner: (geteuid(), getegid()), allowsDevices: false, keepsSetIDBits: false)
            #expect(throws: RuntimeError.self) {
                try Container.extract(archive, from: evil, into: landingFD, named: landing, policy: policy)
            }
            #expect(mode(landing + "/setuid") == 0o755, "set-ID bits are dropped on the host")
            #expect(!FileManager.default.fileExists(atPath: landing + "/null"), "no device node is made on the host")

            #expect(try FileManager.default.contentsOfDirectory(atPath: hostSide).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: dir + "/evil"))
            #expect(try readText(canary) == "host secret\n")
            let after = try FileManager.default.attributesOfItem(atPath: canary)
            #expect(after[.modificationDate] as? Date == before[.modificationDate] as? Date)
            try await container.remove(force: true)
        }
    }

    /// Writes a tar archive (argv[1]) with entries that lead out: `..`, an
    /// absolute name, a symlink to a host directory (argv[2]) and a file
    /// through it, a device node and a set-user-ID file.
    static let evilArchive = """
        import io, sys, tarfile
        with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tar:
            def add(name, data=b"pwned\\n", **fields):
                info = tarfile.TarInfo(name)
                for key, value in fields.items(): setattr(info, key, value)
                if info.type == tarfile.REGTYPE: info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
            add("../evil")
            add("/evil-absolute")
            add("lnk", type=tarfile.SYMTYPE, linkname=sys.argv[2])
            add("lnk/evil")
            add("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
            add("setuid", mode=0o4755)
        """

    /// Runs `script` in the running container; returns its status and output.
    func execText(_ container: Container, _ script: String) async throws -> (Int32, String) {
        let process = try await container.exec(ExecSpec(["sh", "-c", script]))
        var output = ""
        for try await chunk in process.output { output += String(decoding: chunk.bytes, as: UTF8.self) }
        return (await process.wait().code, output)
    }

    func mode(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
    }

    func owner(_ path: String) -> [UInt32]? {
        var st = stat()
        return lstat(path, &st) == 0 ? [st.st_uid, st.st_gid] : nil
    }
}
