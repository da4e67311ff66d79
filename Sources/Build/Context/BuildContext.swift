import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A build context: a directory, and the ignore file's patterns that leave
/// some of it out of the build.
///
/// The ignore file is `.containerignore` or `.dockerignore` at the top of
/// the context (the first that exists), or `<Dockerfile>.dockerignore`
/// beside the Dockerfile, which wins over both, as BuildKit reads it.
public struct BuildContext: Sendable {
    /// What a context entry is.
    public enum Kind: Hashable, Sendable {
        case file, directory, symlink
        /// A FIFO, socket or device node (copied as Docker copies them, or
        /// refused, by what uses the context).
        case other
    }

    /// One entry of a context.
    public struct Entry: Hashable, Sendable {
        /// Its path relative to the context, `/`-separated.
        public var path: String
        /// What it is (a symlink is never followed).
        public var kind: Kind
    }

    /// The context's directory, absolute.
    public let directory: String
    /// The patterns that leave entries out.
    public let ignore: IgnorePatterns

    /// The context at `directory`, its ignore file read.
    ///
    /// - Parameters:
    ///   - directory: the context's directory.
    ///   - dockerfile: the Dockerfile's path, for a
    ///     `<Dockerfile>.dockerignore` beside it.
    /// - Throws: ``BuildError`` with code `context` when the directory is
    ///   missing, `syntax` for a bad pattern.
    public init(directory: String, dockerfile: String? = nil) throws {
        var status = stat()
        guard stat(directory, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else {
            throw BuildError(.context, "the build context \(directory) is not a directory")
        }
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        let candidates = (dockerfile.map { [$0 + ".dockerignore"] } ?? []) + [self.directory + "/.containerignore", self.directory + "/.dockerignore"]
        if let file = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw BuildError(.context, "cannot read the ignore file \(file)")
            }
            ignore = try IgnorePatterns(parsing: text, file: file)
        } else {
            ignore = try IgnorePatterns(parsing: "")
        }
    }

    /// Every entry the patterns leave in, parents before their children,
    /// sorted by path. A directory the patterns leave out is not entered
    /// unless an exception may bring back something inside it; then it is
    /// listed when something is.
    public func entries() throws -> [Entry] {
        var entries: [Entry] = []
        try walk("", into: &entries)
        // The directories above an entry an exception brought back are
        // sent too, as Docker sends them, with their own metadata.
        let listed = Set(entries.map(\.path))
        var parents: Set<String> = []
        for entry in entries {
            var path = entry.path
            while let slash = path.lastIndex(of: "/") {
                path = String(path[..<slash])
                guard !listed.contains(path), parents.insert(path).inserted else { break }
            }
        }
        guard !parents.isEmpty else { return entries }
        return (entries + parents.map { Entry(path: $0, kind: .directory) }).sorted { $0.path < $1.path }
    }

    private func walk(_ relative: String, into entries: inout [Entry]) throws {
        let path = relative.isEmpty ? directory : directory + "/" + relative
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        } catch {
            throw BuildError(.context, "cannot read \(path) of the build context", underlying: error)
        }
        for name in names {
            let child = relative.isEmpty ? name : relative + "/" + name
            var status = stat()
            guard lstat(directory + "/" + child, &status) == 0 else { continue }
            let kind: Kind = switch status.st_mode & S_IFMT {
            case S_IFREG: .file
            case S_IFDIR: .directory
            case S_IFLNK: .symlink
            default: .other
            }
            let excluded = ignore.excludes(child)
            if !excluded { entries.append(Entry(path: child, kind: kind)) }
            if kind == .directory, !excluded || mayBringBack(beneath: child) {
                try walk(child, into: &entries)
            }
        }
    }

    /// Whether an exception pattern may match something inside `directory`:
    /// its literal beginning (up to its first wildcard) and the directory
    /// do not part ways.
    private func mayBringBack(beneath directory: String) -> Bool {
        ignore.patterns.contains { pattern in
            guard pattern.isException else { return false }
            let literal = String(pattern.text.prefix { !"*?[\\".contains($0) })
            return literal.hasPrefix(directory + "/") || (directory + "/").hasPrefix(literal)
        }
    }
}
