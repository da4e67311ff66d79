import Foundation

/// The patterns of a `.dockerignore` (or `.containerignore`) file, matched
/// as Docker matches them: one pattern a line, lines that start with `#`
/// are comments, surrounding whitespace is dropped, each pattern is cleaned as a path
/// (a leading `/`, `.` and `..` segments and doubled slashes go), `*` and
/// `?` match within one path segment, `[…]` is a character class, `**`
/// matches any number of segments (none included), the escape `\` keeps
/// the next character, and a pattern that starts with `!` makes an
/// exception to those before it. The last pattern that matches a path
/// decides, and a path is excluded when one of its parent directories is.
///
/// ```swift
/// let ignore = try IgnorePatterns(parsing: "*.md\n!README.md\nbuild/**\n")
/// ignore.excludes("CHANGELOG.md")   // true
/// ignore.excludes("README.md")      // false
/// ignore.excludes("build/out/app")  // true
/// ```
public struct IgnorePatterns: Hashable, Sendable {
    /// One pattern, as written after cleaning.
    public struct Pattern: Hashable, Sendable {
        /// The cleaned pattern, without its `!`.
        public var text: String
        /// Whether it is an exception (`!pattern`).
        public var isException: Bool
        let tokens: [Token]
    }

    /// A piece of a pattern.
    enum Token: Hashable, Sendable {
        case character(Character)
        /// `?`: one character of a segment.
        case one
        /// `*`: any characters of one segment.
        case segment
        /// `**` not followed by `/`: anything.
        case anything
        /// `**/`: no segment, or any number of whole segments.
        case segments
        /// `[…]`: one character of a segment in (or, negated, not in) the ranges.
        case set([ClosedRange<Character>], negated: Bool)
    }

    /// The patterns, in order.
    public let patterns: [Pattern]

    /// Patterns read from the text of an ignore file; `file` names it in
    /// errors.
    ///
    /// - Throws: ``BuildError`` with code `syntax` for a pattern with a `[`
    ///   that is not closed, naming the file and line.
    public init(parsing text: String, file: String = ".dockerignore") throws {
        var patterns: [Pattern] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // A comment starts in the first column (and after a byte order mark).
            let line = number == 0 && line.hasPrefix("\u{FEFF}") ? line.dropFirst() : line
            if line.hasPrefix("#") { continue }
            var pattern = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if pattern.isEmpty { continue }
            var isException = false
            if pattern.hasPrefix("!") {
                isException = true
                pattern = pattern.dropFirst().trimmingCharacters(in: .whitespaces)
            }
            pattern = Self.clean(pattern)
            let tokens = try Self.tokens(of: pattern, at: SourceLocation(file: file, line: number + 1, column: 1))
            patterns.append(Pattern(text: pattern, isException: isException, tokens: tokens))
        }
        self.patterns = patterns
    }

    /// Whether the path (relative to the build context, `/`-separated) is
    /// left out of the context.
    public func excludes(_ path: String) -> Bool {
        let file = Array(Self.clean(path))
        // The path's parent directories, shortest first.
        let parents = file.indices.filter { file[$0] == "/" }.map { Array(file[..<$0]) }
        var excluded = false
        for pattern in patterns {
            // An exception matters only for what is excluded, a pattern only
            // for what is not.
            guard pattern.isException == excluded else { continue }
            let matches = Self.match(pattern.tokens, 0, file, 0) || parents.contains { Self.match(pattern.tokens, 0, $0, 0) }
            if matches { excluded = !pattern.isException }
        }
        return excluded
    }

    /// A path cleaned as Go's `filepath.Clean` cleans it, relative: no
    /// leading `/`, no `.` or empty segments, `..` resolved (at the top it
    /// is dropped); the empty path is `.`.
    static func clean(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": if !segments.isEmpty { segments.removeLast() }
            default: segments.append(segment)
            }
        }
        return segments.isEmpty ? "." : segments.joined(separator: "/")
    }

    private static func tokens(of pattern: String, at location: SourceLocation) throws -> [Token] {
        var tokens: [Token] = []
        let characters = Array(pattern)
        var index = 0
        while index < characters.count {
            switch characters[index] {
            case "*":
                if index + 1 < characters.count, characters[index + 1] == "*" {
                    index += 1
                    if index + 1 < characters.count, characters[index + 1] == "/" {
                        index += 1
                        tokens.append(.segments)
                    } else {
                        tokens.append(.anything)
                    }
                } else {
                    tokens.append(.segment)
                }
            case "?":
                tokens.append(.one)
            case "[":
                var cursor = index + 1
                var negated = false
                if cursor < characters.count, characters[cursor] == "!" || characters[cursor] == "^" {
                    negated = true
                    cursor += 1
                }
                var ranges: [ClosedRange<Character>] = []
                // A `]` first in the class is one of its characters.
                while cursor < characters.count, characters[cursor] != "]" || ranges.isEmpty {
                    var low = characters[cursor]
                    if low == "\\", cursor + 1 < characters.count {
                        cursor += 1
                        low = characters[cursor]
                    }
                    var high = low
                    if cursor + 2 < characters.count, characters[cursor + 1] == "-", characters[cursor + 2] != "]" {
                        high = characters[cursor + 2]
                        cursor += 2
                    }
                    guard low <= high else { throw BuildError(.syntax, "\(location): the pattern \(pattern) has the range \(low)-\(high), which is empty") }
                    ranges.append(low ... high)
                    cursor += 1
                }
                guard cursor < characters.count, !ranges.isEmpty else {
                    throw BuildError(.syntax, "\(location): the pattern \(pattern) has a [ that is not closed")
                }
                tokens.append(.set(ranges, negated: negated))
                index = cursor
            case "\\":
                index += 1
                if index < characters.count { tokens.append(.character(characters[index])) }
            case let character:
                tokens.append(.character(character))
            }
            index += 1
        }
        return tokens
    }

    /// Whether `tokens` from `token` on match `path` from `position` on, to its end.
    private static func match(_ tokens: [Token], _ token: Int, _ path: [Character], _ position: Int) -> Bool {
        guard token < tokens.count else { return position == path.count }
        switch tokens[token] {
        case .character(let character):
            return position < path.count && path[position] == character && match(tokens, token + 1, path, position + 1)
        case .one:
            return position < path.count && path[position] != "/" && match(tokens, token + 1, path, position + 1)
        case .set(let ranges, let negated):
            guard position < path.count, path[position] != "/" else { return false }
            return ranges.contains { $0.contains(path[position]) } != negated && match(tokens, token + 1, path, position + 1)
        case .segment:
            var end = position
            while !match(tokens, token + 1, path, end) {
                guard end < path.count, path[end] != "/" else { return false }
                end += 1
            }
            return true
        case .anything:
            return (position ... path.count).contains { match(tokens, token + 1, path, $0) }
        case .segments:
            if match(tokens, token + 1, path, position) { return true }
            return (position ..< path.count).contains { path[$0] == "/" && match(tokens, token + 1, path, $0 + 1) }
        }
    }
}
