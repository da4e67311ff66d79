import Foundation
import GantryCore
import OCIImage
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// What a `COPY` or `ADD` places: the directory it goes into, the entries
/// to stage there (with their owner and mode), archives to extract there,
/// and its cache key's parts (the entries' content and metadata, read from
/// the sources, so that a cached step copies nothing).
struct PreparedCopy: Sendable {
    var directory: String
    var owner: (uid: UInt32, gid: UInt32)?
    var mode: UInt32?
    /// What goes into `directory`, parents before children.
    var listing: [CopyEntry]
    var archives: [String]
    var keyParts: [String]
    /// For one file copied to a path not ending in `/`: its staged name
    /// (the path's last component) and its own; when the path is an
    /// existing directory, the file goes into it under its own name.
    var file: (staged: String, source: String)?
}

/// One entry a copy places: its path under the directory the copy goes
/// into, and its source (a symlink followed only for a source named as such).
struct CopyEntry: Sendable {
    var target: String
    var source: String
    var followsLink: Bool
}

extension StepRunner {
    func prepareCopy(_ instruction: Instruction, expansion: VariableExpansion, state: State, staging: Staging) async throws -> PreparedCopy {
        let isAdd = instruction.keyword == "ADD"
        let allowed: Set<String> = isAdd ? ["chown", "chmod", "link", "checksum", "keep-git-dir"] : ["from", "chown", "chmod", "link"]
        for flag in instruction.flags where !allowed.contains(flag.name) {
            throw BuildError(.instruction, "\(instruction.location): \(instruction.keyword) does not take --\(flag.name)")
        }
        var list: [String]
        switch instruction.arguments {
        case .exec(let words): list = try words.map { try expansion.word($0) }
        case .shell(let line): list = try expansion.words(line)
        }
        guard list.count >= 2, let destinationText = list.popLast() else {
            throw BuildError(.instruction, "\(instruction.location): \(instruction.keyword) needs a source and a destination")
        }
        let config = state.configuration.config
        let destination = StepRunner.absolute(destinationText, in: config?.workingDir)
        var owner: (uid: UInt32, gid: UInt32)?
        if let chown = instruction.flag("chown") {
            do {
                owner = try await userIDs(try expansion.word(chown), state: state)
            } catch let error as BuildError {
                throw BuildError(error.code, "\(instruction.location): --chown=\(chown): \(error.message)")
            }
        }
        let mode = try instruction.flag("chmod").map { text -> UInt32 in
            guard let value = UInt32(text, radix: 8), value <= 0o7777 else {
                throw BuildError(.instruction, "\(instruction.location): --chmod=\(text) is not an octal mode")
            }
            return value
        }

        // What each source is: a host path, and whether its contents (a
        // directory's) or itself are copied.
        var items: [(path: String, name: String, isDirectory: Bool)] = []
        var keyParts: [String] = []
        var gitDirectories: [String] = []
        var archives: [String] = []
        var extracted = 0
        let from = try instruction.flag("from").map { try expansion.word($0) }
        func isRemote(_ source: String) -> Bool { source.hasPrefix("http://") || source.hasPrefix("https://") || GitSource(parsing: source) != nil }
        if instruction.flag("checksum") != nil, !list.allSatisfy(isRemote) {
            throw BuildError(.instruction, "\(instruction.location): --checksum is for sources given by URL, not \(list.filter { !isRemote($0) }.joined(separator: ", "))")
        }
        let entries = try await stage.run.entries()
        for source in list {
            let heredocName = String(source.dropFirst(2).drop { $0 == "-" }.filter { $0 != "\"" && $0 != "'" })
            if source.hasPrefix("<<"), let heredoc = instruction.heredocs.first(where: { $0.delimiter == heredocName }) {
                let file = try staging.area("heredoc-\(items.count)")
                let content = heredoc.expands ? try expansion.word(heredoc.content) : heredoc.content
                try Data(content.utf8).write(to: URL(fileURLWithPath: file))
                chmod(file, 0o644)
                items.append((file, heredoc.delimiter, false))
                continue
            }
            if isAdd, let git = GitSource(parsing: source) {
                // A repository's files: its contents, as a directory's.
                let directory = try staging.area("git-\(items.count)")
                let keep = instruction.flag("keep-git-dir").map { $0.isEmpty || $0 == "true" } ?? false
                let (commit, contents) = try await offload { _ in try git.fetch(into: directory, keepGitDirectory: keep, at: instruction.location) }
                if let checksum = instruction.flag("checksum"), !commit.hasPrefix(checksum.lowercased()) {
                    throw BuildError(.instruction, "\(instruction.location): \(git.remote) is at commit \(commit), not \(checksum) as --checksum says")
                }
                items.append((contents, (contents as NSString).lastPathComponent, true))
                // A kept .git directory differs at every fetch: the commit keys it.
                gitDirectories.append(directory + "/.git")
                keyParts.append("git \(git.remote) \(commit) \(git.subdirectory ?? "") \(keep)")
                continue
            }
            if isAdd, source.hasPrefix("http://") || source.hasPrefix("https://") {
                let checksum = try instruction.flag("checksum").map { text -> Digest in
                    guard let digest = try? Digest(parsing: text) else {
                        throw BuildError(.instruction, "\(instruction.location): --checksum=\(text) is not a digest (sha256:…)")
                    }
                    return digest
                }
                let last = URL(string: source)?.lastPathComponent ?? ""
                let name = last.isEmpty || last == "/" ? "download" : last
                let directory = try staging.area("url-\(items.count)")
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try await RemoteSource.download(source, to: directory + "/" + name, checksum: checksum, at: instruction.location)
                items.append((directory + "/" + name, name, false))
                continue
            }
            if isRemote(source) {
                throw BuildError(.instruction, "\(instruction.location): COPY takes files of the context, a stage or an image, not \(source): ADD fetches URLs and git repositories")
            }
            if let from {
                let copied = try staging.area("from-\(items.count)")
                try await copyFrom(from, path: source, to: copied, instruction, state: state)
                var status = stat()
                lstat(copied, &status)
                items.append((copied, (source as NSString).lastPathComponent, status.st_mode & S_IFMT == S_IFDIR))
                continue
            }
            let matches = try contextMatches(source, entries: entries, instruction)
            for match in matches {
                if isAdd, !match.isDirectory, Staging.isArchive(match.path) {
                    archives.append(match.path)
                    extracted += 1
                } else {
                    items.append(match)
                }
            }
        }
        let intoDirectory = destinationText.hasSuffix("/") || destinationText == "." || items.count + extracted > 1
            || items.contains { $0.isDirectory } || !archives.isEmpty
        let directory: String
        var file: (staged: String, source: String)?
        var listing: [CopyEntry] = []
        if intoDirectory {
            directory = destination
            for item in items {
                listing += try self.listing(item.path, as: item.isDirectory ? "" : item.name, entries: item.isDirectory ? entries : nil)
            }
        } else {
            directory = destination == "/" ? "/" : (destination as NSString).deletingLastPathComponent
            let staged = (destination as NSString).lastPathComponent
            listing = try self.listing(items[0].path, as: staged, entries: nil)
            file = (staged, items[0].name)
        }
        keyParts += ["into " + directory, "owner \(owner.map { "\($0.uid):\($0.gid)" } ?? "-")", "mode \(mode.map { String($0, radix: 8) } ?? "-")"]
        let fingerprinted = listing.filter { entry in !gitDirectories.contains { entry.source == $0 || entry.source.hasPrefix($0 + "/") } }
        keyParts += try Staging.fingerprint(fingerprinted, owner: owner ?? (0, 0), mode: mode)
        for archive in archives { keyParts += try Staging.fingerprint([CopyEntry(target: "", source: archive, followsLink: true)], owner: nil, mode: nil) }
        return PreparedCopy(directory: directory, owner: owner, mode: mode, listing: listing, archives: archives, keyParts: keyParts, file: file)
    }

    /// The context's entries a source names (a path, or a pattern with
    /// `*`, `?` and `[…]` as Go's filepath.Match reads them).
    private func contextMatches(_ source: String, entries: [BuildContext.Entry], _ instruction: Instruction) throws -> [(path: String, name: String, isDirectory: Bool)] {
        let context = stage.run.context
        let clean = String(StepRunner.absolute(source, in: "/").dropFirst())
        if clean.isEmpty { return [(context.directory, ".", true)] }
        let isPattern = clean.contains { "*?[".contains($0) }
        let matched = entries.filter { entry in
            isPattern ? fnmatch(clean, entry.path, FNM_PATHNAME) == 0 : entry.path == clean
        }
        guard !matched.isEmpty else {
            throw BuildError(.instruction, "\(instruction.location): \(source) is not in the build context \(context.directory)\(context.ignore.excludes(clean) ? " (the ignore file leaves it out)" : "")")
        }
        return matched.map { entry in
            var isDirectory = entry.kind == .directory
            if entry.kind == .symlink {
                // A symlink named as a source is copied as what it points to, within the context.
                var status = stat()
                isDirectory = stat(context.directory + "/" + entry.path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR
            }
            return (context.directory + "/" + entry.path, (entry.path as NSString).lastPathComponent, isDirectory)
        }
    }

    /// The entries copying `source` places: the file itself as `name`
    /// (a symlink followed), or a directory's contents (under `name`, when
    /// not empty), without what the ignore file leaves out of the context.
    func listing(_ source: String, as name: String, entries: [BuildContext.Entry]?) throws -> [CopyEntry] {
        let context = stage.run.context
        let prefix = context.directory + "/"
        var status = stat()
        guard stat(source, &status) == 0 else {
            throw BuildError(.context, "cannot read \(source)", underlying: Errno(rawValue: errno))
        }
        guard status.st_mode & S_IFMT == S_IFDIR else { return [CopyEntry(target: name, source: source, followsLink: true)] }
        var listing = name.isEmpty ? [] : [CopyEntry(target: name, source: source, followsLink: true)]
        func target(_ tail: String) -> String { name.isEmpty ? tail : name + "/" + tail }
        if let entries, source.hasPrefix(prefix) || source == context.directory {
            let relative = source == context.directory ? "" : String(source.dropFirst(prefix.count))
            for entry in entries where relative.isEmpty || entry.path.hasPrefix(relative + "/") {
                let tail = relative.isEmpty ? entry.path : String(entry.path.dropFirst(relative.count + 1))
                listing.append(CopyEntry(target: target(tail), source: context.directory + "/" + entry.path, followsLink: false))
            }
        } else {
            let enumerator = FileManager.default.enumerator(atPath: source)
            while let relative = enumerator?.nextObject() as? String {
                listing.append(CopyEntry(target: target(relative), source: source + "/" + relative, followsLink: false))
            }
        }
        return listing
    }

    /// Copies `path` of a stage or an image to the host path `destination`.
    private func copyFrom(_ from: String, path: String, to destination: String, _ instruction: Instruction, state: State) async throws {
        let image: String
        if let index = stage.run.stageIndex(named: from, before: stage.index) {
            image = try await stage.run.stage(index).image.manifestDescriptor.digest.description
        } else {
            image = try await stage.resolve(from, platform: options.platform, at: instruction).record.reference.description
        }
        var spec = ContainerSpec(image: image, command: ["/"])
        spec.entrypoint = []
        spec.lifetime = .boundToHost
        let container = try await runtime.create(spec)
        do {
            try await container.copyOut(path, to: destination, options: CopyOptions(keepOwners: true))
        } catch {
            try? await container.remove(force: true)
            throw BuildError(.instruction, "\(instruction.location): cannot copy \(path) from \(from): \(error)", underlying: error)
        }
        try await container.remove(force: true)
    }

    /// The user and group IDs `--chown` or `USER` names: numbers, or names
    /// looked up in the image's `/etc/passwd` and `/etc/group`.
    func userIDs(_ text: String?, state: State) async throws -> (uid: UInt32, gid: UInt32)? {
        guard let text, !text.isEmpty else { return nil }
        do {
            return try await runtime.resolveOwner(text, image: state.root)
        } catch let error as RuntimeError where error.code == .invalidSpec {
            throw BuildError(.instruction, error.message, underlying: error)
        }
    }
}
