import Build
import Foundation
import GantryTestSupport
import OCIImage
import Runtime
import Testing

/// Dockerfiles built by Gantry and by `buildah bud` from the same busybox
/// base: the images must hold the same files (kind, mode, owner, content,
/// link target; times aside) and the same configuration in every field the
/// Dockerfile sets.
@Suite(.requiresRoot, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/buildah"), "needs buildah (scripts/setup.sh installs it)"))
struct BuildahComparisonTests {
    /// Configuration fields a Dockerfile sets, as Docker's configuration names them.
    static let configurationFields = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
                                      "StopSignal", "Healthcheck", "OnBuild", "Shell"]

    /// buildah with storage of its own in `dir` (vfs: nothing mounted on the host).
    struct Buildah {
        let storage: [String]

        init(_ dir: String) {
            storage = ["--root", dir + "/buildah", "--runroot", dir + "/buildah-run", "--storage-driver", "vfs"]
        }

        /// Builds in Docker's format, which keeps HEALTHCHECK, ONBUILD and SHELL.
        func build(_ dockerfile: String, tag: String, context: String) async throws {
            _ = try await GantryTestSupport.run("buildah", storage + ["bud", "-q", "--isolation", "chroot", "--format", "docker",
                                                                     "-f", dockerfile, "-t", tag, context])
        }

        func configuration(_ tag: String) async throws -> [String: Any] {
            let text = try await GantryTestSupport.run("buildah", storage + ["inspect", "--type", "image", tag])
            let inspected = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            return try #require((inspected["Docker"] as? [String: Any])?["config"] as? [String: Any])
        }

        func removeAll() {
            _ = try? GantryTestSupport.run("buildah", storage + ["rmi", "-af"])
        }
    }

    /// Builds `dockerfile` (`BASE` standing for the busybox base, `NAMED:`
    /// for an image each builder made before under that name) in `context`
    /// with both, as `tag`; compares the files and the configurations.
    /// `base` names the base in the store and as buildah reads it (by
    /// default the busybox image, through an OCI layout).
    func buildBoth(_ runtime: ContainerRuntime, _ buildah: Buildah, dir: String, dockerfile: String, context: String, tag: String,
                   base: (gantry: String, buildah: String)? = nil,
                   sourceLocation: Testing.SourceLocation = #_sourceLocation) async throws {
        if base == nil, !FileManager.default.fileExists(atPath: dir + "/base/index.json") {
            try await runtime.images.exportLayout("busybox:test", to: dir + "/base", tag: "1")
        }
        let base = base ?? ("busybox:test", "oci:\(dir)/base:1")
        let name = tag.replacingOccurrences(of: ":", with: "-")
        try dockerfile.replacingOccurrences(of: "BASE", with: base.gantry).replacingOccurrences(of: "NAMED:", with: "")
            .write(toFile: dir + "/\(name).gantry", atomically: false, encoding: .utf8)
        try dockerfile.replacingOccurrences(of: "BASE", with: base.buildah).replacingOccurrences(of: "NAMED:", with: "localhost/")
            .write(toFile: dir + "/\(name).buildah", atomically: false, encoding: .utf8)

        let ours = try await ImageBuilder(runtime: runtime).build(context: context, options: BuildOptions(dockerfile: dir + "/\(name).gantry", tags: [tag]))
        try await runtime.images.unpack(tag, into: dir + "/\(name)-ours", keepingPrivileges: true)
        try await buildah.build(dir + "/\(name).buildah", tag: tag, context: context)
        _ = try await GantryTestSupport.run("buildah", buildah.storage + ["push", "-q", tag, "oci:\(dir)/\(name)-layout:1"])
        try await runtime.images.importLayout(at: dir + "/\(name)-layout", tag: "1", name: "theirs-" + tag)
        try await runtime.images.unpack("theirs-" + tag, into: dir + "/\(name)-theirs", keepingPrivileges: true)
        try await runtime.images.remove("theirs-" + tag)

        let mine = try tree(dir + "/\(name)-ours")
        var theirs = try tree(dir + "/\(name)-theirs")
        // buildah leaves the mount points its RUN steps made, empty, in the
        // image; Gantry's steps leave none.
        for stub in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] where theirs[stub] == "100755 0:0 " { theirs[stub] = nil }
        if theirs["run"] == "40755 0:0", !theirs.keys.contains(where: { $0.hasPrefix("run/") }) { theirs["run"] = nil }
        for path in Set(mine.keys).union(theirs.keys).sorted() where mine[path] != theirs[path] {
            Issue.record("\(tag) \(path): gantry \(mine[path] ?? "missing"), buildah \(theirs[path] ?? "missing")", sourceLocation: sourceLocation)
        }

        let encoded = try JSONEncoder().encode(try #require(ours.image.configuration.config))
        let our = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        var their = try await buildah.configuration(tag)
        if var labels = their["Labels"] as? [String: Any] {
            labels["io.buildah.version"] = nil
            their["Labels"] = labels.isEmpty ? nil : labels
        }
        for field in Self.configurationFields {
            let a = our[field].map { Self.canonical($0) } ?? "-"
            let b = their[field].map { Self.canonical($0) } ?? "-"
            if a != b { Issue.record("\(tag) configuration \(field): gantry \(a), buildah \(b)", sourceLocation: sourceLocation) }
        }
    }

    /// A JSON value as sorted text, with empty collections and null as absent.
    static func canonical(_ value: Any) -> String {
        if value is NSNull || (value as? String)?.isEmpty == true { return "-" }
        if let array = value as? [Any], array.isEmpty { return "-" }
        if let object = value as? [String: Any], object.isEmpty { return "-" }
        guard JSONSerialization.isValidJSONObject([value]),
              let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys]) else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }

    func context(_ dir: String, _ files: [String: String]) throws -> String {
        try makeContext(dir, files)
    }

    @Test func filesCopiesArchivesAndRemovalsAreBuildahs() async throws {
        try await withBusyboxRuntime("build-buildah-files", applets: ["rm", "mkdir", "touch", "chmod", "ln"]) { runtime, dir in
            let context = try context(dir, [
                "src/a.txt": "alpha\n",
                "src/deeper/b.txt": "beta\n",
                "src/skip.tmp": "left out\n",
                "src/keep.tmp": "brought back\n",
                "one.txt": "one\n",
                ".dockerignore": "**/*.tmp\n!src/keep.tmp\n",
            ])
            try await makeTar(context + "/bundle.tar", of: ["inner/old": "packed\n"], in: dir + "/bundle")
            let buildah = Buildah(dir)
            defer { buildah.removeAll() }
            try await buildBoth(runtime, buildah, dir: dir, dockerfile: """
                FROM BASE
                ENV TARGET=/srv
                WORKDIR $TARGET/app
                COPY src/ ./
                COPY --chown=65534:65534 --chmod=640 one.txt ../owned/
                ADD bundle.tar /opt/
                RUN rm /etc/group && mkdir -p /var/data && echo made > /var/data/made && chmod 700 /var/data && ln -s made /var/data/link
                RUN rm -r /opt/inner && mkdir /opt/inner && echo fresh > /opt/inner/new
                COPY one.txt /srv/app
                COPY src/*.txt src/deeper /glob/
                """, context: context, tag: "files:1")
            // A container of it stands on snapshots the build made from its
            // steps' upper directories: it sees what the layers hold.
            let container = try await runtime.create(ContainerSpec(image: "files:1", command: ["true"]))
            try await container.copyOut("/.", to: dir + "/seen", options: CopyOptions(keepOwners: true))
            try await container.remove()
            let seen = try tree(dir + "/seen"), unpacked = try tree(dir + "/files-1-ours")
            for path in Set(seen.keys).union(unpacked.keys).sorted() where seen[path] != unpacked[path] {
                Issue.record("\(path): in a container \(seen[path] ?? "missing"), unpacked \(unpacked[path] ?? "missing")")
            }
            #expect(unpacked["srv/app/one.txt"] != nil && unpacked["opt/inner/new"] != nil && unpacked["etc/group"] == nil)
            try await runtime.images.remove("files:1")
        }
    }

    @Test func everyConfigurationInstructionSetsWhatBuildahSets() async throws {
        try await withBusyboxRuntime("build-buildah-config", applets: ["wget"]) { runtime, dir in
            let context = try context(dir, ["empty": ""])
            let buildah = Buildah(dir)
            defer { buildah.removeAll() }
            try await buildBoth(runtime, buildah, dir: dir, dockerfile: """
                FROM BASE
                ARG VERSION=1.2
                ENV APP_VERSION=$VERSION MODE="two words"
                ENV LEGACY form
                LABEL org.opencontainers.image.version="${VERSION}" team=build
                EXPOSE 80 8080/udp 9000/tcp
                VOLUME ["/data", "/logs"]
                VOLUME /cache
                WORKDIR /app
                WORKDIR sub
                USER nobody:nogroup
                STOPSIGNAL SIGQUIT
                SHELL ["/bin/sh", "-ec"]
                HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=2 CMD wget -q -O- http://localhost/ || exit 1
                ONBUILD RUN echo triggered > /triggered
                ENTRYPOINT ["/bin/sh", "-c"]
                CMD ["echo $APP_VERSION"]
                """, context: context, tag: "config:1")
            try await runtime.images.remove("config:1")
        }
    }

    @Test func stagesCacheMountsAndOnBuildTriggersGiveWhatBuildahGives() async throws {
        try await withBusyboxRuntime("build-buildah-stages", applets: ["cp", "mkdir", "cat"]) { runtime, dir in
            let context = try context(dir, ["note.txt": "note\n"])
            let buildah = Buildah(dir)
            defer { buildah.removeAll() }
            try await buildBoth(runtime, buildah, dir: dir, dockerfile: """
                FROM BASE AS generate
                RUN --mount=type=cache,target=/cache echo cached > /cache/value && cp /cache/value /generated
                RUN mkdir -p /out && echo from-stage > /out/made

                FROM BASE AS unused
                RUN exit 1

                FROM BASE
                COPY --from=generate /generated /out/ /collected/
                COPY --from=generate --chmod=600 /out/made /private
                ONBUILD COPY note.txt /onbuild/
                ONBUILD RUN cat /onbuild/note.txt > /onbuild/seen
                """, context: context, tag: "stages:1")
            // A build from it runs its triggers first, and does not inherit them.
            try await buildBoth(runtime, buildah, dir: dir, dockerfile: """
                FROM NAMED:stages:1
                RUN echo child > /child
                """, context: context, tag: "child:1")
            for image in ["stages:1", "child:1"] { try await runtime.images.remove(image) }
        }
    }

    /// Debian bookworm minbase as an OCI layout, which `scripts/setup.sh`
    /// (and the benchmarks) make with debootstrap.
    static let debianLayout = (ProcessInfo.processInfo.environment["GANTRY_BENCH_CACHE"] ?? "/var/tmp/gantry-bench") + "/layout"

    @Test(.enabled(if: FileManager.default.fileExists(atPath: debianLayout + "/index.json"), "needs the Debian layout scripts/setup.sh makes"))
    func aDebianDockerfileGivesWhatBuildahGives() async throws {
        try await withBusyboxRuntime("build-buildah-debian") { runtime, dir in
            try await runtime.images.importLayout(at: Self.debianLayout, tag: "bookworm", name: "debian:test")
            let context = try context(dir, ["note.txt": "for the app\n"])
            let buildah = Buildah(dir)
            defer { buildah.removeAll() }
            try await buildBoth(runtime, buildah, dir: dir, dockerfile: """
                FROM BASE
                ENV LANG=C.UTF-8
                RUN useradd --create-home --uid 1001 --shell /bin/bash app \\
                    && mkdir -p /srv/data && chown app:app /srv/data && chmod 2770 /srv/data \\
                    && rm -rf /usr/share/doc /usr/share/man && ln -sf /usr/share/zoneinfo/UTC /etc/localtime \\
                    && dpkg-query -W -f '${Package}\\n' > /srv/packages
                COPY --chown=app:app note.txt /home/app/
                USER app
                WORKDIR /home/app
                CMD ["bash", "-c", "cat note.txt"]
                """, context: context, tag: "debian-app:1", base: ("debian:test", "oci:\(Self.debianLayout):bookworm"))
            for image in ["debian-app:1", "debian:test"] { try await runtime.images.remove(image) }
        }
    }
}

/// Each file of an unpacked tree: its kind, mode, owner, and content or
/// link target (times left out: each builder writes its own).
func tree(_ root: String) throws -> [String: String] {
    var files: [String: String] = [:]
    let enumerator = FileManager.default.enumerator(atPath: root)
    while let path = enumerator?.nextObject() as? String {
        var status = stat()
        guard lstat(root + "/" + path, &status) == 0 else { continue }
        var line = "\(String(status.st_mode, radix: 8)) \(status.st_uid):\(status.st_gid)"
        switch status.st_mode & S_IFMT {
        case S_IFREG: line += " " + ((try? String(contentsOfFile: root + "/" + path, encoding: .isoLatin1)) ?? "?")
        case S_IFLNK: line += " -> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + path)) ?? "?")
        default: break
        }
        files[path] = line
    }
    return files
}
