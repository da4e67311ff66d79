import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

/// Runs the example CLI, built beside this test bundle.
@Suite struct CLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    func gantry(_ root: String, _ arguments: String...) async throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try await runWithStatus(binary, ["--root", root] + arguments)
    }

    func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    @Test func imageCommandsEndToEnd() async throws {
        try await withTemporaryDirectory("cli") { dir in
            let root = dir + "/state"
            try Fixtures.busyboxRootfs(dir + "/rootfs")

            let imported = try await gantry(root, "image", "import-rootfs", dir + "/rootfs", "--name", "tools:1", "--cmd", "sh -c 'echo hi'", "--format", "json")
            #expect(imported.status == 0, "\(imported.error)")
            let records = try #require(try json(imported.output) as? [[String: Any]])
            #expect(records.first?["reference"] as? String == "docker.io/library/tools:1")

            let table = try await gantry(root, "image", "ls")
            #expect(table.output.split(separator: "\n").first?.hasPrefix("REPOSITORY") == true)
            #expect(table.output.contains("tools") && table.output.contains("linux/"))
            let list = try #require(try json(try await gantry(root, "image", "ls", "--format", "json").output) as? [[String: Any]])
            #expect(list.map { $0["familiarName"] as? String } == ["tools:1"])

            let inspected = try #require(try json(try await gantry(root, "image", "inspect", "tools:1", "--format", "json").output) as? [String: Any])
            let config = try #require((inspected["config"] as? [String: Any])?["config"] as? [String: Any])
            #expect(config["Cmd"] as? [String] == ["sh", "-c", "echo hi"])
            #expect(try await gantry(root, "image", "inspect", "tools:1").output.contains("Layer 1"))

            #expect(try await gantry(root, "image", "unpack", "tools:1", dir + "/out").status == 0)
            #expect(FileManager.default.isExecutableFile(atPath: dir + "/out/bin/busybox"))

            #expect(try await gantry(root, "image", "export-layout", "tools:1", dir + "/layout:v1").status == 0)
            let other = dir + "/other"
            let reimported = try await gantry(other, "image", "import-layout", dir + "/layout:v1", "--name", "copy:v1")
            #expect(reimported.status == 0, "\(reimported.error)")
            #expect(reimported.output.contains(try #require(inspected["digest"] as? String)))

            let removed = try #require(try json(try await gantry(root, "image", "rm", "tools:1", "--format", "json").output) as? [[String: Any]])
            #expect((removed.first?["freed"] as? [String: Any])?["blobs"] as? Int == 3)
            let pruned = try #require(try json(try await gantry(root, "image", "prune", "--format", "json").output) as? [String: Any])
            #expect(pruned["blobs"] as? Int == 0)
            #expect(try await gantry(root, "image", "ls", "--quiet").output.isEmpty)
        }
    }

    @Test(arguments: [
        (["image", "inspect", "missing:1"], "no image named \"missing:1\""),
        (["image", "import-rootfs", "/nonexistent-dir", "--name", "x"], "/nonexistent-dir is not a directory"),
        (["image", "import-rootfs", "/tmp", "--name", "Bad Name"], "invalid image reference \"Bad Name\""),
        (["image", "import-layout", "/tmp"], "/tmp is not an OCI image layout"),
        (["image", "inspect", "x", "--platform", "linux/"], "invalid platform"),
    ])
    func errorsAreOneLine(arguments: [String], message: String) async throws {
        try await withTemporaryDirectory("cli-error") { dir in
            try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
            let result = try await runWithStatus(binary, ["--root", dir] + arguments)
            #expect(result.status == 1)
            #expect(result.output.isEmpty)
            let lines = result.error.split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.first?.hasPrefix("gantry: error: ") == true)
            #expect(result.error.contains(message), "\(result.error)")
        }
    }

    @Test func globalOptionsGoAnywhere() async throws {
        try await withTemporaryDirectory("cli-global") { dir in
            try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
            let before = try await runWithStatus(binary, ["--root", dir + "/a", "image", "ls", "--format", "json"])
            let after = try await runWithStatus(binary, ["image", "ls", "--format", "json", "--root", dir + "/b"])
            #expect(before.status == 0 && after.status == 0)
            #expect(FileManager.default.fileExists(atPath: dir + "/a/gantry.sqlite"))
            #expect(FileManager.default.fileExists(atPath: dir + "/b/gantry.sqlite"))
            let environment = try await runWithStatus(binary, ["image", "ls"], environment: ["GANTRY_ROOT": dir + "/c"])
            #expect(environment.status == 0)
            #expect(FileManager.default.fileExists(atPath: dir + "/c/gantry.sqlite"))
        }
    }
}

@Suite struct CLIRegistryTests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path

    @Test func pullPushLoginAndTags() async throws {
        try await withTemporaryDirectory("cli-registry") { dir in
            try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
            try await withTestRegistry(dir, authentication: .htpasswd(user: "carol", password: "pa55")) { registry in
                let auth = dir + "/auth.json"
                func gantry(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String, error: String) {
                    try await runWithStatus(binary, ["--root", dir + "/state"] + arguments, input: input.map { Data($0.utf8) }, environment: ["GANTRY_AUTH_FILE": auth])
                }
                let refused = try await gantry(["login", registry.host, "-u", "carol", "--password-stdin"], input: "wrong\n")
                #expect(refused.status == 1 && refused.error.contains("refused"))
                #expect(!FileManager.default.fileExists(atPath: auth))
                let login = try await gantry(["login", registry.host, "-u", "carol", "--password-stdin"], input: "pa55\n")
                #expect(login.status == 0, "\(login.error)")
                var st = stat()
                stat(auth, &st)
                #expect(st.st_mode & 0o777 == 0o600)

                try Fixtures.busyboxRootfs(dir + "/rootfs")
                #expect(try await gantry(["image", "import-rootfs", dir + "/rootfs", "--name", "local/tools:1"]).status == 0)
                let push = try await gantry(["image", "push", "local/tools:1", "\(registry.host)/team/tools:1", "--format", "json"])
                #expect(push.status == 0, "\(push.error)")
                let pushed = try #require(try JSONSerialization.jsonObject(with: Data(push.output.utf8)) as? [String: Any])
                let digest = try #require(pushed["digest"] as? String)

                #expect(try await gantry(["image", "rm", "local/tools:1"]).status == 0)
                let pull = try await gantry(["image", "pull", "\(registry.host)/team/tools:1"])
                #expect(pull.status == 0, "\(pull.error)")
                #expect(pull.output.contains(digest))
                // Without a terminal, progress is a plain line per blob.
                #expect(pull.error.split(separator: "\n").filter { $0.hasPrefix("downloading") }.count == 2)
                let inspected = try #require(try JSONSerialization.jsonObject(with: Data(try await gantry(["image", "inspect", "\(registry.host)/team/tools:1", "--format", "json"]).output.utf8)) as? [String: Any])
                #expect(inspected["digest"] as? String == digest)
                #expect(try await gantry(["image", "tags", "\(registry.host)/team/tools"]).output == "1\n")

                #expect(try await gantry(["logout", registry.host]).status == 0)
                let anonymous = try await gantry(["image", "pull", "\(registry.host)/team/tools:1"])
                #expect(anonymous.status == 1)
                #expect(anonymous.error.hasPrefix("gantry: error: ") && anonymous.error.contains("gantry login \(registry.host)"))
            }
        }
    }
}
