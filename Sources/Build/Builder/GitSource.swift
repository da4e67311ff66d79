import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A git repository `ADD` takes, written as BuildKit reads it:
/// `URL[#REF[:SUBDIR]]`, where the URL is `git@host:path`, `git://…`,
/// `ssh://…`, or `http(s)://…` ending in `.git` (before the fragment).
/// It is fetched with the host's `git` at `REF` (a branch, a tag or a
/// commit; the remote's `HEAD` by default), shallowly where the server
/// allows, with its submodules.
struct GitSource: Equatable {
    var remote: String
    var reference: String?
    var subdirectory: String?

    init?(parsing source: String) {
        let parts = source.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let remote = parts[0]
        let isWeb = remote.hasPrefix("http://") || remote.hasPrefix("https://")
        guard remote.hasPrefix("git@") || remote.hasPrefix("git://") || remote.hasPrefix("ssh://")
              || isWeb && (remote.hasSuffix(".git") || remote.hasSuffix(".git/")) else { return nil }
        self.remote = remote
        if parts.count > 1 {
            let fragment = parts[1].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            reference = fragment[0].isEmpty ? nil : fragment[0]
            subdirectory = fragment.count > 1 && !fragment[1].isEmpty ? fragment[1] : nil
        }
    }

    /// Fetches the repository into the new directory `directory` and
    /// checks out the reference; the `.git` directory is removed unless
    /// `keepGitDirectory`. Returns the commit checked out and the directory
    /// whose contents `ADD` places (the subdirectory, when one is named).
    func fetch(into directory: String, keepGitDirectory: Bool, at location: SourceLocation) throws -> (commit: String, contents: String) {
        guard FileManager.default.isExecutableFile(atPath: Self.git) else {
            throw BuildError(.instruction, "\(location): ADD of the git repository \(remote) needs git, which is not installed (\(Self.git))")
        }
        func git(_ arguments: [String]) throws -> String {
            do {
                // No maintenance after a fetch: a detached one would hold the output pipe.
                return try Staging.runTool(Self.git, ["-C", directory, "-c", "maintenance.auto=false", "-c", "gc.auto=0"] + arguments,
                                           environment: Self.environment)
            } catch let error as BuildError {
                throw BuildError(.instruction, "\(location): ADD cannot fetch \(remote)\(reference.map { "#" + $0 } ?? ""): \(error.message)", underlying: error)
            }
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = try git(["init", "-q"])
        let wanted = reference ?? "HEAD"
        do {
            _ = try git(["fetch", "-q", "--depth", "1", "--no-tags", remote, wanted])
        } catch {
            // Servers that cannot serve a shallow fetch (the "dumb" HTTP protocol).
            _ = try git(["fetch", "-q", "--no-tags", remote, wanted])
        }
        _ = try git(["-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"])
        if FileManager.default.fileExists(atPath: directory + "/.gitmodules") {
            _ = try git(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"])
        }
        let commit = try git(["rev-parse", "HEAD"]).trimmingCharacters(in: .whitespacesAndNewlines)
        if !keepGitDirectory {
            try FileManager.default.removeItem(atPath: directory + "/.git")
        }
        guard let subdirectory else { return (commit, directory) }
        let inside = StepRunner.absolute(subdirectory, in: "/")
        var status = stat()
        guard inside != "/", lstat(directory + inside, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else {
            throw BuildError(.instruction, "\(location): the repository \(remote) has no directory \(subdirectory) at \(wanted)")
        }
        return (commit, directory + inside)
    }

    static let git = "/usr/bin/git"

    /// The process's environment (its credential helpers and SSH agent
    /// serve), with no prompt: a build does not wait for a password.
    static var environment: [String: String] {
        ProcessInfo.processInfo.environment.merging(["GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"]) { $1 }
    }
}

