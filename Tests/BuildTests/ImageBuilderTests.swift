import Build
import Foundation
import GantryTestSupport
import OCIImage
import Runtime
import Synchronization
import Testing

/// Builds on the real runtime: containers run the steps, layers come from
/// their overlay upper directories.
@Suite(.requiresRoot)
struct ImageBuilderTests {
    /// Writes a context: files by relative path.
    func context(_ dir: String, _ files: [String: String]) throws -> String {
        try makeContext(dir, files)
    }

    /// Runs `command` in `image` and returns its standard output.
    func output(_ runtime: ContainerRuntime, _ image: String, _ command: [String]) async throws -> String {
        var spec = ContainerSpec(image: image, command: command)
        spec.entrypoint = []
        let result = try await runtime.run(spec, input: [UInt8]())
        #expect(result.exit.code == 0, "\(command): \(String(decoding: result.stderr, as: UTF8.self))")
        return String(decoding: result.stdout, as: UTF8.self)
    }

    @Test func aMultiStageDockerfileBuildsAnImageThatRunsAsWritten() async throws {
        try await withBusyboxRuntime("build-multi", applets: ["rm", "mkdir", "stat"]) { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": """
                # syntax=docker/dockerfile:1
                ARG BASE=busybox:test
                FROM ${BASE} AS base
                ENV GREETING=hi
                RUN echo "$GREETING" > /greeting && rm /bin/stat
                WORKDIR /app
                COPY src/ ./
                COPY --chown=65534:65534 --chmod=600 src/a.txt /home/nobody/a.txt
                RUN <<EOT
                echo from-heredoc > /app/here
                EOT

                FROM scratch AS files
                COPY src/sub /data/

                FROM busybox:test AS unused
                RUN exit 1

                FROM base
                COPY --from=files /data/b.txt /final-b.txt
                COPY <<EOF /app/config.ini
                greeting=${GREETING}
                EOF
                LABEL org.example.kind=test
                EXPOSE 8080
                USER nobody
                CMD ["cat", "/greeting"]
                """,
                "src/a.txt": "alpha\n",
                "src/sub/b.txt": "beta\n",
                "src/debug.log": "left out\n",
                ".dockerignore": "**/*.log\n",
            ])
            let builder = ImageBuilder(runtime: runtime)
            let result = try await builder.build(context: context, options: BuildOptions(tags: ["app:1"]))
            #expect(result.tags == ["app:1"])
            // The unused stage (whose RUN fails) was never built.
            #expect(!result.steps.contains { $0.stage == "unused" })
            // FROM is shown as resolved.
            #expect(result.steps.contains { $0.instruction == "FROM busybox:test AS base" }, "\(result.steps)")

            let config = try #require(result.image.configuration.config)
            #expect(config.cmd == ["cat", "/greeting"])
            #expect(config.workingDir == "/app")
            #expect(config.user == "nobody")
            #expect(config.env?.contains("GREETING=hi") == true)
            #expect(config.labels?["org.example.kind"] == "test")
            #expect(config.exposedPorts == ["8080/tcp"])

            let listing = try await output(runtime, "app:1", ["sh", "-c", """
                cat /greeting /app/a.txt /app/sub/b.txt /final-b.txt /app/here /app/config.ini
                ls /app/debug.log 2>&1; ls /bin/stat 2>&1
                ls -ln /home/nobody/a.txt
                """])
            #expect(listing.contains("hi\nalpha\nbeta\nbeta\nfrom-heredoc\ngreeting=hi\n"), "\(listing)")
            #expect(listing.contains("/app/debug.log: No such file"), "\(listing)")
            #expect(listing.contains("/bin/stat: No such file"), "\(listing)")
            #expect(listing.contains("-rw-------    1 65534    65534"), "\(listing)")

            // A layer per step that changed files; ENV, LABEL and the like add none.
            let history = result.image.configuration.history ?? []
            #expect(history.filter { $0.emptyLayer != true }.count == result.image.manifest.layers.count)
            #expect(try await output(runtime, "app:1", ["cat", "/greeting"]) == "hi\n")
            try await runtime.images.remove("app:1")
        }
    }

    @Test func unchangedStepsComeFromTheCacheAndAChangedFileRunsWhatFollows() async throws {
        try await withBusyboxRuntime("build-cache") { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": "FROM busybox:test\nRUN echo one > /one\nCOPY file.txt /file.txt\nRUN cat /file.txt > /copy\n",
                "file.txt": "first\n",
            ])
            let builder = ImageBuilder(runtime: runtime)
            let first = try await builder.build(context: context)
            #expect(first.steps.filter { $0.cached }.isEmpty)
            let second = try await builder.build(context: context)
            #expect(second.steps.dropFirst().allSatisfy { $0.cached }, "\(second.steps)")
            #expect(second.image.manifestDescriptor == first.image.manifestDescriptor)

            try "second\n".write(toFile: context + "/file.txt", atomically: false, encoding: .utf8)
            let third = try await builder.build(context: context, options: BuildOptions(tags: ["cache:3"]))
            #expect(third.steps.map { $0.cached } == [false, true, false, false], "\(third.steps)")
            #expect(try await output(runtime, "cache:3", ["cat", "/copy"]) == "second\n")

            let uncached = try await builder.build(context: context, options: BuildOptions(useCache: false))
            #expect(uncached.steps.filter { $0.cached }.isEmpty)

            // Pruning the cache leaves what names keep: the named image still runs.
            let pruned = try await runtime.images.pruneBuildCache()
            #expect(pruned.entries > 0 && pruned.freed.blobs > 0, "\(pruned)")
            #expect(try await output(runtime, "cache:3", ["cat", "/copy"]) == "second\n")
            try await runtime.images.remove("cache:3")
        }
    }

    @Test func aTimestampMakesTheSameImageBitForBit() async throws {
        try await withBusyboxRuntime("build-repro") { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": "FROM busybox:test\nRUN echo $RANDOM > /noise; rm /noise; echo same > /same\nCOPY . /context/\n",
                "a.txt": "a\n",
            ])
            let builder = ImageBuilder(runtime: runtime)
            let options = BuildOptions(useCache: false, timestamp: Date(timeIntervalSince1970: 1_700_000_000))
            let first = try await builder.build(context: context, options: options)
            try await Task.sleep(for: .milliseconds(1100))
            let second = try await builder.build(context: context, options: options)
            #expect(first.image.manifestDescriptor.digest == second.image.manifestDescriptor.digest)
            #expect(first.image.configuration.created == "2023-11-14T22:13:20Z")
        }
    }

    @Test func aFailingStepNamesItsLineExitAndOutputAndLeavesNoContainer() async throws {
        try await withBusyboxRuntime("build-fail") { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": "FROM busybox:test\nRUN echo about to fail; exit 3\n",
            ])
            let builder = ImageBuilder(runtime: runtime)
            let error = await #expect(throws: BuildError.self) { try await builder.build(context: context) }
            #expect(error?.code == .stepFailed)
            #expect(error?.message.contains("Dockerfile:2") == true, "\(String(describing: error))")
            #expect(error?.message.contains("about to fail") == true, "\(String(describing: error))")
            #expect(error?.message.contains("3") == true)
            #expect(try runtime.list().isEmpty)

            // A source outside the context, and a missing one, are refused by name.
            try "FROM busybox:test\nCOPY missing.txt /\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let missing = await #expect(throws: BuildError.self) { try await builder.build(context: context) }
            #expect(missing?.message.contains("missing.txt") == true && missing?.message.contains("Dockerfile:2") == true)
            try "FROM busybox:test\nRUN --network=bridge true\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let network = await #expect(throws: BuildError.self) { try await builder.build(context: context) }
            #expect(network?.code == .instruction)
        }
    }

    @Test func filesCopiedOntoManyLayersAndAContainerCommitted() async throws {
        try await withBusyboxRuntime("build-layers") { runtime, dir in
            // Enough layers that their paths pass the 256 bytes one overlay
            // option may hold: the copy's overlay takes them one by one.
            let runs = (1...6).map { "RUN echo \($0) > /layer-\($0)" }.joined(separator: "\n")
            let context = try context(dir, ["Dockerfile": "FROM busybox:test\n\(runs)\nCOPY f.txt /f.txt\n", "f.txt": "copied\n"])
            let result = try await ImageBuilder(runtime: runtime).build(context: context, options: BuildOptions(tags: ["layers:1"]))
            #expect(result.image.manifest.layers.count == 8)
            #expect(try await output(runtime, "layers:1", ["cat", "/layer-6", "/f.txt"]) == "6\ncopied\n")

            // docker commit: a container's changes as one more layer.
            let container = try await runtime.create(ContainerSpec(image: "layers:1", command: ["sh", "-c", "echo changed > /f.txt"]))
            try await container.start()
            _ = try await container.wait()
            let committed = try await container.commit(as: "committed:1")
            try await container.remove()
            #expect(try await output(runtime, committed.reference.description, ["cat", "/f.txt"]) == "changed\n")
            try await runtime.images.remove("committed:1")
            try await runtime.images.remove("layers:1")
        }
    }

    @Test func independentStagesRunAtTheSameTime() async throws {
        try await withBusyboxRuntime("build-parallel", applets: ["touch", "rm"]) { runtime, dir in
            // Each stage waits (for at most 20 s) for the other's mark in a
            // cache mount both share: built one after the other, the first
            // would wait in vain and fail.
            func waiting(_ mine: String, _ theirs: String) -> String {
                "RUN --mount=type=cache,id=meeting,target=/meeting touch /meeting/\(mine); i=0; "
                    + "while [ ! -e /meeting/\(theirs) ]; do i=$((i+1)); [ $i -lt 200 ] || exit 7; sleep 0.1; done; echo \(mine) > /\(mine)"
            }
            let context = try context(dir, ["Dockerfile": """
                FROM busybox:test AS left
                \(waiting("left", "right"))
                FROM busybox:test AS right
                \(waiting("right", "left"))
                FROM busybox:test
                COPY --from=left /left /
                COPY --from=right /right /
                """])
            let result = try await ImageBuilder(runtime: runtime).build(context: context, options: BuildOptions(tags: ["both:1"]))
            #expect(Set(result.steps.map { $0.stage }) == ["left", "right", "2"])
            #expect(try await output(runtime, "both:1", ["cat", "/left", "/right"]) == "left\nright\n")
            try await runtime.images.remove("both:1")
        }
    }

    @Test func configurationMountsArchivesAndCopyRulesAsDockerHasThem() async throws {
        try await withBusyboxRuntime("build-rules", applets: ["mkdir", "tar", "touch"]) { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": """
                FROM busybox:test
                SHELL ["/bin/sh", "-c"]
                RUN mkdir /app
                COPY a.txt /app
                COPY docs/ /docs/
                ADD bundle.tar /unpacked/
                RUN --mount=type=secret,id=token cat /run/secrets/token > /seen-secret
                RUN --mount=type=cache,target=/cache touch /cache/mark; ls /cache > /cache-listing
                RUN --mount=type=bind,source=docs,target=/mnt cat /mnt/keep.md > /bound
                HEALTHCHECK --interval=5s --retries=2 CMD wget -q -O- http://127.0.0.1/ || exit 1
                ONBUILD RUN echo triggered > /onbuild
                ENTRYPOINT ["sh", "-c"]
                STOPSIGNAL SIGINT
                MAINTAINER someone@example.com
                """,
                "a.txt": "alpha\n",
                "docs/keep.md": "kept\n",
                "docs/drop.md": "dropped\n",
                "token.txt": "s3cret\n",
                ".dockerignore": "docs\n!docs/keep.md\ntoken.txt\n",
            ])
            // An archive ADD extracts, made with the host's tar.
            try await makeTar(context + "/bundle.tar", of: ["inner/file": "packed\n"], in: dir + "/bundle")
            // What a killed build left in the staging area goes with the next build.
            let leftover = dir + "/state/build-staging/0-1-1"
            try FileManager.default.createDirectory(atPath: leftover, withIntermediateDirectories: true)

            let builder = ImageBuilder(runtime: runtime)
            var options = BuildOptions(tags: ["rules:1"])
            options.secrets = ["token": context + "/token.txt"]
            let result = try await builder.build(context: context, options: options)
            #expect(!FileManager.default.fileExists(atPath: leftover))
            #expect((try FileManager.default.contentsOfDirectory(atPath: dir + "/state/build-staging")).isEmpty)
            let config = try #require(result.image.configuration.config)
            #expect(config.entrypoint == ["sh", "-c"] && config.cmd == nil)
            #expect(config.healthcheck?.test == ["CMD-SHELL", "wget -q -O- http://127.0.0.1/ || exit 1"])
            #expect(config.healthcheck?.interval == 5_000_000_000 && config.healthcheck?.retries == 2)
            #expect(config.onBuild == ["RUN echo triggered > /onbuild"])
            #expect(config.stopSignal == "SIGINT" && config.labels?["maintainer"] == "someone@example.com")

            let listing = try await output(runtime, "rules:1", ["sh", "-c", """
                cat /app/a.txt /docs/keep.md /unpacked/inner/file /seen-secret /cache-listing /bound
                ls /docs/drop.md /run/secrets/token /cache/mark 2>&1 | sort
                """])
            #expect(listing.hasPrefix("alpha\nkept\npacked\ns3cret\nmark\nkept\n"), "\(listing)")
            #expect(listing.contains("/docs/drop.md: No such file"), "\(listing)")
            #expect(listing.contains("/cache/mark: No such file"), "\(listing)")

            // ONBUILD runs in the image built on it, and is not inherited.
            try "FROM rules:1\n".write(toFile: context + "/Dockerfile.child", atomically: false, encoding: .utf8)
            let child = try await builder.build(context: context, options: BuildOptions(dockerfile: context + "/Dockerfile.child", tags: ["child:1"]))
            #expect(child.image.configuration.config?.onBuild == nil)
            #expect(try await output(runtime, "child:1", ["cat", "/onbuild"]) == "triggered\n")
            for image in ["rules:1", "child:1"] { try await runtime.images.remove(image) }
            try await runtime.images.pruneBuildCache()
            #expect(!FileManager.default.fileExists(atPath: dir + "/state/build-cache-mounts"))
        }
    }

    @Test func anImageOfSixtyLayersBuildsAndRuns() async throws {
        try await withBusyboxRuntime("build-many-layers", applets: ["ls", "grep"]) { runtime, dir in
            let steps = (1 ... 60).map { "RUN echo \($0) > /layer-\($0)" }.joined(separator: "\n")
            let context = try context(dir, ["Dockerfile": "FROM busybox:test\n" + steps + "\n"])
            let result = try await ImageBuilder(runtime: runtime).build(context: context, options: BuildOptions(tags: ["many:1"]))
            #expect(result.image.manifest.layers.count == 61)
            // mount(2) reads one page of options, which these lower
            // directories exceed: the overlay is made through fsopen.
            #expect(try await output(runtime, "many:1", ["sh", "-c", "cat /layer-1 /layer-60; ls / | grep -c layer-"]) == "1\n60\n60\n")
            try await runtime.images.remove("many:1")
        }
    }

    @Test func aWorkingImageIsBuiltStepByStepFromSwift() async throws {
        try await withBusyboxRuntime("build-working", applets: ["mkdir"]) { runtime, dir in
            try "{\"mode\": 1}\n".write(toFile: dir + "/config.json", atomically: false, encoding: .utf8)
            var image = try await WorkingImage(from: "busybox:test", runtime: runtime)
            try await image.run(["sh", "-c", "mkdir -p /srv && echo ready > /srv/state"])
            try await image.run(["true"])  // changes nothing: no layer
            try await image.copy(dir + "/config.json", to: "/srv/conf/config.json")
            image.configuration.cmd = ["cat", "/srv/state", "/srv/conf/config.json"]
            image.configuration.env = (image.configuration.env ?? []) + ["MODE=worker"]
            let failing = await #expect(throws: BuildError.self) { try await image.run(["sh", "-c", "echo nope; exit 4"]) }
            #expect(failing?.code == .stepFailed && failing?.message.contains("nope") == true)
            let made = try await image.commit(as: "worker:1")
            #expect(made.manifest.layers.count == 3)
            #expect(made.configuration.config?.env?.contains("MODE=worker") == true)
            var spec = ContainerSpec(image: "worker:1")
            spec.entrypoint = nil
            let result = try await runtime.run(spec, input: [UInt8]())
            #expect(String(decoding: result.stdout, as: UTF8.self) == "ready\n{\"mode\": 1}\n")
            // The steps' cache entries went with the commit.
            #expect(try await runtime.images.pruneBuildCache().entries == 0)
            try await runtime.images.remove("worker:1")
        }
    }

    @Test func addDownloadsAURLAndChecksIt() async throws {
        try await withBusyboxRuntime("build-url", applets: ["stat"]) { runtime, dir in
            // A server on the loopback, on a port of the kernel's choosing.
            try FileManager.default.createDirectory(atPath: dir + "/www/files", withIntermediateDirectories: true)
            try "downloaded\n".write(toFile: dir + "/www/files/tool.txt", atomically: false, encoding: .utf8)
            let server = Process()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            server.arguments = ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir + "/www"]
            let pipe = Pipe()
            server.standardOutput = pipe
            server.standardError = FileHandle.nullDevice
            try server.run()
            defer {
                kill(server.processIdentifier, SIGKILL)
                server.waitUntilExit()
            }
            var banner = Data()
            while !banner.contains(UInt8(ascii: "\n")) {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                banner += chunk
            }
            let words = String(decoding: banner, as: UTF8.self).components(separatedBy: " ")
            let port = try #require(words.first { !$0.isEmpty && $0.allSatisfy(\.isNumber) && $0.count > 2 })
            let url = "http://127.0.0.1:\(port)/files/tool.txt"
            let digest = Digest.compute(Array("downloaded\n".utf8))

            let context = try context(dir, ["Dockerfile": "FROM busybox:test\nADD --checksum=\(digest) \(url) /opt/\n"])
            let builder = ImageBuilder(runtime: runtime)
            try await builder.build(context: context, options: BuildOptions(tags: ["url:1"]))
            #expect(try await output(runtime, "url:1", ["stat", "-c", "%a %u %n", "/opt/tool.txt"]) == "600 0 /opt/tool.txt\n")
            #expect(try await output(runtime, "url:1", ["cat", "/opt/tool.txt"]) == "downloaded\n")

            // A wrong checksum, and a missing file, are refused by name.
            try "FROM busybox:test\nADD --checksum=sha256:\(String(repeating: "0", count: 64)) \(url) /opt/\n"
                .write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let wrong = await #expect(throws: BuildError.self) { try await builder.build(context: context) }
            #expect(wrong?.message.contains("hashes to \(digest)") == true, "\(String(describing: wrong))")
            try "FROM busybox:test\nADD \(url).missing /opt/\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            let missing = await #expect(throws: BuildError.self) { try await builder.build(context: context) }
            #expect(missing?.message.contains("404") == true, "\(String(describing: missing))")
            try await runtime.images.remove("url:1")
        }
    }

    @Test func bindMountsShowTheContextAsSentAndAStagesFiles() async throws {
        try await withBusyboxRuntime("build-bind", applets: ["rm", "ls"]) { runtime, dir in
            let context = try context(dir, [
                "Dockerfile": """
                FROM busybox:test AS tools
                RUN echo from-stage > /tool

                FROM busybox:test
                RUN --mount=type=bind,target=/src,rw ls -A /src > /listing && cat /src/code.txt > /code && rm /src/code.txt
                RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool cat /mnt/tool > /copied
                """,
                "code.txt": "v1\n",
                ".env": "SECRET=1\n",
                ".dockerignore": ".env\n",
            ])
            let builder = ImageBuilder(runtime: runtime)
            try await builder.build(context: context, options: BuildOptions(tags: ["bind:1"]))
            // The ignore file's choice holds; writes went to a copy.
            let listing = try await output(runtime, "bind:1", ["cat", "/listing", "/code", "/copied"])
            #expect(listing == ".dockerignore\nDockerfile\ncode.txt\nv1\nfrom-stage\n", "\(listing)")
            #expect(FileManager.default.fileExists(atPath: context + "/code.txt"))

            // A change in the bound files reruns the step.
            try "v2\n".write(toFile: context + "/code.txt", atomically: false, encoding: .utf8)
            let again = try await builder.build(context: context, options: BuildOptions(tags: ["bind:1"]))
            #expect(again.steps.first { $0.instruction.contains("target=/src") }?.cached == false, "\(again.steps)")
            #expect(try await output(runtime, "bind:1", ["cat", "/code"]) == "v2\n")
            try await runtime.images.remove("bind:1")
        }
    }

    @Test func aRegistrysBuildCacheServesABuildInAnotherStore() async throws {
        try await withBusyboxRuntime("build-remote-cache", applets: ["cat"]) { runtime, dir in
            try await withLocalRegistry(dir) { registry in
                let context = try context(dir, [
                    "Dockerfile": """
                    FROM busybox:test AS tool
                    RUN cat /proc/sys/kernel/random/uuid > /tool

                    FROM busybox:test
                    COPY a.txt /a.txt
                    RUN cat /proc/sys/kernel/random/uuid > /random
                    COPY --from=tool /tool /tool
                    CMD ["cat", "/random"]
                    """,
                    "a.txt": "alpha\n",
                ])
                let cache = "\(registry.host)/cache/app:build"
                let base = "\(registry.host)/base/busybox:test"
                try await runtime.images.push("busybox:test", to: base)
                var options = BuildOptions(tags: ["made-here:1"], timestamp: Date(timeIntervalSince1970: 1_700_000_000))
                options.cacheTo = BuildOptions.CacheExport(reference: cache, mode: .max)
                let builder = ImageBuilder(runtime: runtime)
                let notices = Notices()
                let first = try await builder.build(context: context, options: options) { if case .notice(let text) = $0 { notices.add(text) } }
                #expect(notices.all.contains { $0.contains("pushed the build cache") }, "\(notices.all)")
                let random = try await output(runtime, "made-here:1", ["cat", "/random", "/tool"])

                // Another store, with the same base from the registry and nothing built.
                let store = try ImageStore(root: StateRoot(dir + "/elsewhere"))
                try await store.pull(base)
                try await store.tag(base, as: "busybox:test")
                let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
                let elsewhere = try ContainerRuntime(images: store, cgroupParent: parent)
                defer { try? elsewhere.cgroups.remove(parent) }
                var reading = BuildOptions(tags: ["made-there:1"], timestamp: Date(timeIntervalSince1970: 1_700_000_000))
                reading.cacheFrom = ["\(registry.host)/cache/missing:none", cache]
                let second = try await ImageBuilder(runtime: elsewhere).build(context: context, options: reading) {
                    if case .notice(let text) = $0 { notices.add(text) }
                }
                // Every file step came from the registry: the RUN steps' random output is the first build's.
                let steps = second.steps.filter { $0.instruction.hasPrefix("RUN") || $0.instruction.hasPrefix("COPY") }
                #expect(steps.allSatisfy { $0.cached }, "\(second.steps)")
                #expect(second.image.manifestDescriptor.digest == first.image.manifestDescriptor.digest)
                #expect(try await output(elsewhere, "made-there:1", ["cat", "/random", "/tool"]) == random)
                // The cache that cannot be read is named, and passed over.
                #expect(notices.all.contains { $0.contains("cache/missing:none") }, "\(notices.all)")
                #expect(try elsewhere.list().isEmpty)

                // A Dockerfile changed below a step: that step and those after it run.
                try "FROM busybox:test\nCOPY a.txt /a.txt\nRUN echo changed > /changed\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
                let third = try await ImageBuilder(runtime: elsewhere).build(context: context, options: reading)
                #expect(third.steps.map { $0.cached } == [false, true, false], "\(third.steps)")
                try await runtime.images.remove("made-here:1")
            }
        }
    }

    @Test func addFetchesAGitRepositoryAtARefWithItsSubdirectory() async throws {
        try await withBusyboxRuntime("build-git", applets: ["cat", "ls", "test"]) { runtime, dir in
            let repository = dir + "/repositories/app"
            try FileManager.default.createDirectory(atPath: repository + "/src", withIntermediateDirectories: true)
            func git(_ arguments: [String]) throws {
                _ = try run("/usr/bin/git", ["-C", repository, "-c", "user.name=Test", "-c", "user.email=test@example.com"] + arguments)
            }
            try git(["init", "-q", "-b", "main"])
            try "one\n".write(toFile: repository + "/README", atomically: false, encoding: .utf8)
            try "first\n".write(toFile: repository + "/src/main.txt", atomically: false, encoding: .utf8)
            try git(["add", "-A"])
            try git(["commit", "-q", "-m", "one"])
            try git(["tag", "v1"])
            try "two\n".write(toFile: repository + "/README", atomically: false, encoding: .utf8)
            try git(["commit", "-q", "-am", "two"])
            let port = try freePort()
            let daemon = try ChildProcess("/usr/bin/git", ["daemon", "--reuseaddr", "--export-all", "--base-path=\(dir)/repositories",
                                                          "--listen=127.0.0.1", "--port=\(port)", "--informative-errors", dir + "/repositories"],
                                          stdout: .null, stderr: .null)
            defer { daemon.terminate(); daemon.waitUntilExit() }
            for _ in 0 ..< 250 {
                if isListening(port) { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let remote = "git://127.0.0.1:\(port)/app"
            let context = try context(dir, [
                "Dockerfile": """
                FROM busybox:test
                ADD \(remote)#v1 /v1
                ADD \(remote)#main:src /src
                ADD --keep-git-dir=true \(remote) /head
                """,
            ])
            let builder = ImageBuilder(runtime: runtime)
            try await builder.build(context: context, options: BuildOptions(tags: ["git:1"]))
            let seen = try await output(runtime, "git:1", ["sh", "-c", "cat /v1/README /src/main.txt /head/README; ls -A /v1 /src; test -d /head/.git && echo kept"])
            #expect(seen == "one\nfirst\ntwo\n/src:\nmain.txt\n\n/v1:\nREADME\nsrc\nkept\n", "\(seen)")

            // Unchanged repositories: cached. A new commit: what it changed runs again.
            let again = try await builder.build(context: context, options: BuildOptions(tags: ["git:1"]))
            #expect(again.steps.filter { $0.instruction.hasPrefix("ADD") }.allSatisfy { $0.cached }, "\(again.steps)")
            try "second\n".write(toFile: repository + "/src/main.txt", atomically: false, encoding: .utf8)
            try git(["commit", "-q", "-am", "three"])
            let changed = try await builder.build(context: context, options: BuildOptions(tags: ["git:1"]))
            #expect(changed.steps.map { $0.cached } == [false, true, false, false], "\(changed.steps)")
            #expect(try await output(runtime, "git:1", ["cat", "/src/main.txt"]) == "second\n")

            // A reference the repository lacks, and COPY of a repository, are named.
            try "FROM busybox:test\nADD \(remote)#no-such-branch /x\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            await #expect { try await builder.build(context: context) } throws: { error in
                "\(error)".contains("Dockerfile:2") && "\(error)".contains("no-such-branch")
            }
            try "FROM busybox:test\nCOPY \(remote) /x\n".write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            await #expect { try await builder.build(context: context) } throws: { error in
                "\(error)".contains("ADD fetches URLs and git repositories")
            }
            try await runtime.images.remove("git:1")
        }
    }
}

/// Notices a build reported, from its event handler.
final class Notices: Sendable {
    private let texts = Mutex<[String]>([])
    func add(_ text: String) { texts.withLock { $0.append(text) } }
    var all: [String] { texts.withLock { $0 } }
}
