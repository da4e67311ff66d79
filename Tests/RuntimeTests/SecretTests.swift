import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

@Suite(.requiresRoot) struct SecretTests {
    @Test func secretsAreFilesInMemoryOwnedByTheUserAndWrittenNowhereElse() async throws {
        try await withRuntime("secret-files") { runtime, dir in
            let fileValue = "file-secret-\(UUID().uuidString)"
            let variableValue = "variable-secret-\(UUID().uuidString)"
            let inlineValue = "inline-secret-\(UUID().uuidString)"
            try fileValue.write(toFile: dir + "/password.txt", atomically: true, encoding: .utf8)
            let variable = "GANTRY_TEST_SECRET_\(UUID().uuidString.prefix(8))"
            setenv(variable, variableValue, 1)
            defer { unsetenv(variable) }
            try "listen 8080\n".write(toFile: dir + "/app.conf", atomically: true, encoding: .utf8)

            // Values are compared through checksums: the container prints no
            // secret, so that its log may be searched for them too.
            var spec = shell("""
                cd /run/secrets; for f in password token; do stat -c "$f %a %u %g" $f; md5sum $f | cut -d' ' -f1; done
                stat -c "inline %a %u %g" /etc/inline.key; md5sum /etc/inline.key | cut -d' ' -f1
                stat -c "config %a %u %g" /etc/app.conf; cat /etc/app.conf; stat -c "greeting %a" /greeting; cat /greeting; echo
                echo -n "$INLINE_KEY" | md5sum | cut -d' ' -f1
                stat -f -c "fs %T" /run/secrets/password
                (echo x > /run/secrets/password) 2>/dev/null && echo written || echo refused
                """)
            spec.user = "nobody"
            spec = spec
                .secret(.init(name: "password", source: .file(path: dir + "/password.txt")))
                .secret(.init(name: "token", source: .environment(variable: variable)))
                .secret(.init(name: "inline", source: .value(Array(inlineValue.utf8)), target: "/etc/inline.key", uid: 0, gid: 65534, mode: 0o440,
                              environmentVariable: "INLINE_KEY"))
                .config(.init(name: "app", source: .file(path: dir + "/app.conf"), target: "/etc/app.conf"))
                .config(.init(name: "greeting", source: .content("hello"), mode: 0o400))
            let container = try await runtime.create(spec)
            let provided = runtime.providedDirectory(container.id)
            #expect(FileManager.default.fileExists(atPath: provided))
            try await container.start()
            let exit = try await container.wait()
            let output = try await container.logs.text()
            #expect(exit.code == 0, "\(output)")
            let expected = [
                "password 400 65534 65534", try await md5Hex(fileValue),
                "token 400 65534 65534", try await md5Hex(variableValue),
                "inline 440 0 65534", try await md5Hex(inlineValue),
                "config 444 65534 65534", "listen 8080", "greeting 400", "hello",
                try await md5Hex(inlineValue),
                "fs tmpfs",
                "refused",
            ]
            #expect(output.split(separator: "\n").map(String.init) == expected)

            // Nowhere in the state root: not in the record, the upper
            // directory, the log; not in what inspect shows.
            for value in [fileValue, variableValue, inlineValue] {
                #expect(filesHolding(value, under: dir + "/state").isEmpty, "\(value) found in the state root")
                let record = String(decoding: try JSONEncoder().encode(container.record.spec), as: UTF8.self)
                #expect(!record.contains(value))
            }
            // A record read back knows where each value came from, not the value.
            let reread = try runtime.list().first { $0.id == container.id }
            #expect(reread?.spec.secrets.map(\.source) == [.file(path: dir + "/password.txt"), .environment(variable: variable), .withheld])

            try await container.remove()
            #expect(!FileManager.default.fileExists(atPath: provided))
            #expect(!FileManager.default.fileExists(atPath: runtime.images.root.runtime), "the run-time directory is left")
        }
    }

    @Test func filesLostFromTheRunTimeDirectoryAreGivenAgainWhileTheirValuesAreKnown() async throws {
        try await withRuntime("secret-reboot") { runtime, dir in
            try "from-file".write(toFile: dir + "/value", atomically: true, encoding: .utf8)
            let spec = shell("cat /run/secrets/a; echo; cat /run/secrets/b")
                .secret(.init(name: "a", source: .file(path: dir + "/value")))
                .secret(.init(name: "b", source: .value(Array("inline".utf8))))
            let container = try await runtime.create(spec)
            // As after a restart of the machine: the run-time directory is empty.
            umount2(runtime.providedDirectory(container.id), Int32(MNT_DETACH))
            try Sys.removeTree(runtime.providedDirectory(container.id))
            // The creating process still holds the value given inline.
            try await container.start()
            #expect(try await container.wait().code == 0)
            #expect(try await container.logs.text() == "from-file\ninline")
            // Another process (another runtime over the root) reads a record
            // without the value: it cannot give that secret again.
            let other = try ContainerRuntime(images: runtime.images, cgroupParent: runtime.cgroupParent)
            let record = try #require(try other.list().first { $0.id == container.id })
            #expect(record.spec.secrets.map(\.source) == [.file(path: dir + "/value"), .withheld])
            umount2(runtime.providedDirectory(container.id), Int32(MNT_DETACH))
            try Sys.removeTree(runtime.providedDirectory(container.id))
            #expect { _ = try other.providedMounts(record) } throws: {
                ($0 as? RuntimeError)?.message.contains("secret b of container \(container.name) was given as a value, which is kept in memory only") == true
            }
            try await container.remove()
            #expect(!FileManager.default.fileExists(atPath: runtime.providedDirectory(container.id)))
        }
    }

    @Test func badSecretsAreRefusedNamingWhatIsWrong() async throws {
        try await withRuntime("secret-bad") { runtime, dir in
            let variable = "GANTRY_TEST_UNSET_\(UUID().uuidString.prefix(8))"
            try Data([0x61, 0, 0x62]).write(to: URL(fileURLWithPath: dir + "/binary"))
            let cases: [(ContainerSpec.Secret?, ContainerSpec.Config?, String)] = [
                (.init(name: "missing", source: .file(path: dir + "/nothing")), nil, "secret missing of container bad is read from \(dir)/nothing, which cannot be read"),
                (.init(name: "unset", source: .environment(variable: variable)), nil, "environment variable \(variable), which is not set"),
                (.init(name: "bad/name", source: .value([1])), nil, "\"bad/name\" is not a valid secret name"),
                (.init(name: "up", source: .value([1]), target: "../../etc/passwd"), nil, "the target /run/secrets/../../etc/passwd is not a file path without . and .."),
                (.init(name: "nul", source: .file(path: dir + "/binary"), environmentVariable: "NUL"), nil, "is given as the variable NUL, but it is not text"),
                (.init(name: "nowhere", source: .value([1]), mounted: false), nil, "secret nowhere is neither mounted nor given as a variable"),
                (.init(name: "mode", source: .value([1]), mode: 0o4755), nil, "the mode 4755 is not permission bits"),
                (.init(name: "same", source: .value([1]), target: "/etc/x"), .init(name: "same", source: .content("c"), target: "/etc/x"), "another secret or config is given at /etc/x"),
                (nil, .init(name: "big", source: .content(String(repeating: "x", count: ProvidedFile.limit + 1))), "config big of container bad is larger than"),
            ]
            for (secret, config, message) in cases {
                var spec = shell("true").named("bad")
                if let secret { spec = spec.secret(secret) }
                if let config { spec = spec.config(config) }
                await #expect { _ = try await runtime.create(spec) } throws: { error in
                    (error as? RuntimeError)?.message.contains(message) == true
                }
            }
            #expect(try runtime.list().isEmpty)
            // Nothing is left in the run-time directory.
            #expect(!FileManager.default.fileExists(atPath: runtime.images.root.runtime + "/provided"))
        }
    }
}
