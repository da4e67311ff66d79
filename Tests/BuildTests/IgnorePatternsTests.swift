import Build
import Foundation
import Testing

/// `.dockerignore` patterns, matched as Docker matches them.
@Suite struct IgnorePatternsTests {
    func excluded(_ patterns: String, _ paths: [String]) throws -> [String] {
        let ignore = try IgnorePatterns(parsing: patterns)
        return paths.filter { ignore.excludes($0) }
    }

    @Test func starsStayInTheirSegmentAndDoubleStarsCrossThem() throws {
        let paths = ["CHANGELOG.md", "README.md", "docs/guide.md", "main.go", "cmd/tool/main.go", "build", "build/out/app", "a/b/c.log"]
        #expect(try excluded("*.md\n!README.md\n", paths) == ["CHANGELOG.md"])
        #expect(try excluded("**/*.go\n", paths) == ["main.go", "cmd/tool/main.go"])
        #expect(try excluded("build/**\n", paths) == ["build/out/app"])
        #expect(try excluded("a/**/c.log\n", paths) == ["a/b/c.log"])
        #expect(try excluded("**\n!*.md\n", paths) == ["docs/guide.md", "main.go", "cmd/tool/main.go", "build", "build/out/app", "a/b/c.log"])
    }

    @Test func aDirectoryTakesItsContentsAndExceptionsComeBack() throws {
        let paths = ["node_modules", "node_modules/left-pad/index.js", "docs/keep.md", "docs/drop.md", "src/app.swift"]
        #expect(try excluded("node_modules\ndocs\n!docs/keep.md\n", paths) == ["node_modules", "node_modules/left-pad/index.js", "docs/drop.md"])
        // The last pattern that matches decides.
        #expect(try excluded("!docs/keep.md\ndocs\n", paths) == ["docs/keep.md", "docs/drop.md"])
    }

    @Test func patternsAreCleanedAsPaths() throws {
        let paths = ["tmp/x", "tmp", "logs/a.log", "temp1", "temp12"]
        #expect(try excluded("/tmp/*\n", paths) == ["tmp/x"])
        #expect(try excluded("./logs//../logs/*.log\n", paths) == ["logs/a.log"])
        #expect(try excluded("temp?\n", paths) == ["temp1"])
        #expect(try IgnorePatterns(parsing: "/tmp/*\n!./keep\n").patterns.map(\.text) == ["tmp/*", "keep"])
    }

    @Test func commentsWhitespaceClassesAndEscapes() throws {
        let ignore = try IgnorePatterns(parsing: "\u{FEFF}# a comment\n\n   *.log   \n  # not a comment\nfile[0-9].txt\n[!a]b\n\\*.txt\n[]x]y\n")
        #expect(ignore.patterns.map(\.text) == ["*.log", "# not a comment", "file[0-9].txt", "[!a]b", "\\*.txt", "[]x]y"])
        let paths = ["debug.log", "# not a comment", "file3.txt", "filea.txt", "cb", "ab", "*.txt", "a.txt", "]y", "xy", "zy"]
        #expect(paths.filter { ignore.excludes($0) } == ["debug.log", "# not a comment", "file3.txt", "cb", "*.txt", "]y", "xy"])
    }

    @Test func anUnclosedClassIsAnErrorNamingTheLine() throws {
        let error = try #require(throws: BuildError.self) { try IgnorePatterns(parsing: "*.o\nsrc/[abc\n", file: "app/.dockerignore") }
        #expect(error.code == .syntax && error.message == "app/.dockerignore:2:1: the pattern src/[abc has a [ that is not closed")
        #expect(throws: BuildError.self) { try IgnorePatterns(parsing: "[z-a]\n") }
    }
}

/// A build context's entries, with its ignore file applied.
@Suite struct BuildContextTests {
    /// A context directory made for `body`, removed after.
    func withContext(_ files: [String: String], links: [String: String] = [:], _ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gantry-context-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (path, content) in files {
            let url = URL(fileURLWithPath: directory + "/" + path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(content.utf8).write(to: url)
        }
        for (path, target) in links { try FileManager.default.createSymbolicLink(atPath: directory + "/" + path, withDestinationPath: target) }
        try body(directory)
    }

    @Test func entriesLeaveOutWhatTheIgnoreFileSays() throws {
        let files = [".dockerignore": "*.log\nnode_modules\n.git\nsecrets/**\n!secrets/public.pem\n", "app.swift": "", "debug.log": "",
                     "node_modules/x/index.js": "", ".git/HEAD": "", "secrets/private.pem": "", "secrets/public.pem": "", "src/a.log": ""]
        try withContext(files, links: ["escape": "../../etc"]) { directory in
            let context = try BuildContext(directory: directory)
            let entries = try context.entries()
            #expect(entries.map(\.path) == [".dockerignore", "app.swift", "escape", "secrets", "secrets/public.pem", "src", "src/a.log"])
            #expect(entries.first { $0.path == "escape" }?.kind == .symlink && entries.first { $0.path == "src" }?.kind == .directory)
        }
    }

    @Test func theDockerfilesOwnIgnoreFileWinsAndContainerignoreComesFirst() throws {
        let files = [".dockerignore": "a\n", ".containerignore": "b\n", "build.Dockerfile.dockerignore": "c\n", "a": "", "b": "", "c": ""]
        try withContext(files) { directory in
            #expect(try BuildContext(directory: directory).entries().map(\.path).filter { $0.count == 1 } == ["a", "c"])
            let own = try BuildContext(directory: directory, dockerfile: directory + "/build.Dockerfile")
            #expect(try own.entries().map(\.path).filter { $0.count == 1 } == ["a", "b"])
        }
        let error = try #require(throws: BuildError.self) { try BuildContext(directory: "/nonexistent/context") }
        #expect(error.code == .context)
    }
}
