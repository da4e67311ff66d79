import Foundation
import Reconciler
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// The small languages inside compose values: durations, sizes,
/// shell-like command lines and paths (signals are `Signal(parsing:)`).
enum ComposeSyntax {
    /// A Go-style duration as compose takes it: `10s`, `1m30s`, `500ms`,
    /// `1.5h`, `100us`; a plain number counts as seconds. Nil when malformed
    /// or negative.
    static func duration(_ text: String) -> Duration? {
        let text = text.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty else { return nil }
        if text.allSatisfy({ isDigit($0) || $0 == "." }) {
            guard let seconds = Double(text), seconds.isFinite, seconds < 9e9 else { return nil }
            return .nanoseconds(Int64((seconds * 1e9).rounded()))
        }
        let scales: [Substring: Double] = ["ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9]
        var nanoseconds = 0.0
        var rest = Substring(text)
        while !rest.isEmpty {
            let number = rest.prefix { isDigit($0) || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !isDigit($0) && $0 != "." }
            guard let scale = scales[unit] else { return nil }
            rest = rest.dropFirst(unit.count)
            nanoseconds += value * scale
        }
        guard nanoseconds < 9e18 else { return nil }
        return .nanoseconds(Int64(nanoseconds.rounded()))
    }

    /// A size in bytes: a number and an optional binary unit (`b`, `k`,
    /// `kb`, `kib`, `m`, … `t`), any case. Nil when malformed or not above 0.
    static func size(_ text: String) -> Int64? {
        let lower = text.trimmingCharacters(in: .whitespaces).lowercased()
        let number = lower.prefix { isDigit($0) || $0 == "." }
        let unit = lower.dropFirst(number.count).trimmingCharacters(in: .whitespaces)
        let scales: [String: Double] = [
            "": 1, "b": 1, "k": 0x1p10, "kb": 0x1p10, "kib": 0x1p10, "m": 0x1p20, "mb": 0x1p20, "mib": 0x1p20,
            "g": 0x1p30, "gb": 0x1p30, "gib": 0x1p30, "t": 0x1p40, "tb": 0x1p40, "tib": 0x1p40,
        ]
        guard !number.isEmpty, let value = Double(number), let scale = scales[unit] else { return nil }
        let bytes = (value * scale).rounded(.down)
        guard bytes >= 1, bytes < 9e18 else { return nil }
        return Int64(bytes)
    }

    /// Splits a command line as a POSIX shell does, without expanding
    /// anything: words split at blanks, `'…'` taken literally, `"…"` with
    /// backslash escapes of `"`, `\`, `$` and `` ` ``, and a backslash
    /// elsewhere quoting the next character. Nil when a quote is not closed.
    static func shellWords(_ text: String) -> [String]? {
        var words: [String] = []
        var word = ""
        var inWord = false
        var quote: Character?
        var characters = text.makeIterator()
        while let character = characters.next() {
            if let open = quote {
                if character == open {
                    quote = nil
                } else if open == "\"", character == "\\", let next = characters.next() {
                    if next == "\n" { continue }
                    if !"\"\\$`".contains(next) { word.append("\\") }
                    word.append(next)
                } else {
                    word.append(character)
                }
            } else if character == "'" || character == "\"" {
                quote = character
                inWord = true
            } else if character == "\\" {
                guard let next = characters.next() else {
                    word.append("\\")
                    inWord = true
                    continue
                }
                if next == "\n" { continue }
                word.append(next)
                inWord = true
            } else if character.isWhitespace {
                if inWord { words.append(word) }
                word = ""
                inWord = false
            } else {
                word.append(character)
                inWord = true
            }
        }
        guard quote == nil else { return nil }
        if inWord { words.append(word) }
        return words
    }

    /// `path` made absolute against `directory` (itself made absolute
    /// against the working directory), with `.` and `..` resolved.
    static func absolutePath(_ path: String, relativeTo directory: String) -> String {
        var base = directory
        if !base.hasPrefix("/") { base = FileManager.default.currentDirectoryPath + "/" + base }
        let joined = path.hasPrefix("/") ? path : base + "/" + path
        var parts: [Substring] = []
        for part in joined.split(separator: "/") where part != "." {
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
            } else {
                parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    private static func isDigit(_ character: Character) -> Bool { character.isASCII && character.isNumber }
}
