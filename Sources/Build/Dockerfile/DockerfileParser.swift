import Foundation

/// Reads a Dockerfile as BuildKit's front end does: parser directives at
/// the top, comments (also between continuation lines), continuation
/// lines ending in the escape character, here-documents after `RUN`,
/// `COPY` and `ADD`, flags before the arguments, and the JSON (exec) form
/// where an instruction allows it.
struct DockerfileParser {
    let text: String
    let file: String

    /// Every instruction Docker knows.
    static let keywords: Set<String> = ["FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                                        "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"]
    /// Those whose arguments may be a JSON array.
    static let execForms: Set<String> = ["RUN", "CMD", "ENTRYPOINT", "SHELL", "ADD", "COPY", "VOLUME"]
    /// Those that take `--name=value` flags before their arguments.
    static let flagged: Set<String> = ["FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"]
    /// Those that may name here-documents.
    static let heredocs: Set<String> = ["RUN", "COPY", "ADD"]

    func parse() throws -> Dockerfile {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
        if let first = lines.first, first.hasPrefix("\u{FEFF}") { lines[0] = String(first.dropFirst()) }
        var index = 0
        var directives: [String: String] = [:]
        while index < lines.count, let (name, value) = Self.directive(lines[index]) {
            guard directives[name] == nil else {
                throw error("the parser directive \(name) is given twice", line: index + 1, column: 1)
            }
            directives[name] = value
            index += 1
        }
        let escape: Character
        switch directives["escape"] {
        case nil, "\\": escape = "\\"
        case "`": escape = "`"
        case let other?: throw error("the escape directive must be \\ or `, not \(other)", line: 1, column: 1)
        }
        var instructions: [Instruction] = []
        while index < lines.count {
            let line = lines[index]
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            index += 1
            if trimmed.isEmpty || trimmed.first == "#" { continue }
            let location = SourceLocation(file: file, line: index, column: line.count - trimmed.count + 1)
            var logical = String(trimmed)
            while let joined = Self.withoutContinuation(logical, escape: escape) {
                logical = joined
                // Comment and empty lines inside a continuation are skipped.
                while index < lines.count {
                    let next = lines[index].drop { $0 == " " || $0 == "\t" }
                    guard next.isEmpty || next.first == "#" else { break }
                    index += 1
                }
                guard index < lines.count else { break }
                logical += lines[index]
                index += 1
            }
            instructions.append(try instruction(logical, at: location, lines: lines, index: &index))
        }
        return try structure(instructions, directives: directives, escape: escape)
    }

    /// `# name=value` at the top of the file: a parser directive (names
    /// are case-insensitive; unknown ones are comments, and end nothing).
    private static func directive(_ line: String) -> (String, String)? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("#") else { return nil }
        let body = trimmed.dropFirst().trimmingCharacters(in: .whitespaces)
        guard let equals = body.firstIndex(of: "=") else { return nil }
        let name = body[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter }) else { return nil }
        return (name, body[body.index(after: equals)...].trimmingCharacters(in: .whitespaces))
    }

    /// The line without its final escape character, when it continues on
    /// the next (whitespace may follow the escape character).
    private static func withoutContinuation(_ line: String, escape: Character) -> String? {
        var trimmed = Substring(line)
        while let last = trimmed.last, last == " " || last == "\t" { trimmed = trimmed.dropLast() }
        guard trimmed.last == escape else { return nil }
        return String(trimmed.dropLast())
    }

    private func instruction(_ logical: String, at location: SourceLocation, lines: [String], index: inout Int) throws -> Instruction {
        let keywordEnd = logical.firstIndex { $0 == " " || $0 == "\t" } ?? logical.endIndex
        let keyword = logical[..<keywordEnd].uppercased()
        guard Self.keywords.contains(keyword) else {
            throw error("unknown instruction \(logical[..<keywordEnd])", line: location.line, column: location.column)
        }
        var rest = Substring(logical[keywordEnd...]).drop { $0 == " " || $0 == "\t" }
        var flags: [InstructionFlag] = []
        if Self.flagged.contains(keyword) {
            while rest.hasPrefix("--") {
                let end = rest.firstIndex { $0 == " " || $0 == "\t" } ?? rest.endIndex
                let word = rest[rest.index(rest.startIndex, offsetBy: 2) ..< end]
                guard !word.isEmpty else { throw error("\(keyword) has an empty flag (--)", line: location.line, column: location.column) }
                if let equals = word.firstIndex(of: "=") {
                    flags.append(InstructionFlag(name: String(word[..<equals]), value: String(word[word.index(after: equals)...])))
                } else {
                    flags.append(InstructionFlag(name: String(word), value: nil))
                }
                rest = rest[end...].drop { $0 == " " || $0 == "\t" }
            }
        }
        var trimmedRest = String(rest)
        while let last = trimmedRest.last, last == " " || last == "\t" { trimmedRest.removeLast() }
        var arguments = Arguments.shell(trimmedRest)
        if Self.execForms.contains(keyword), trimmedRest.hasPrefix("["),
           let array = try? JSONSerialization.jsonObject(with: Data(trimmedRest.utf8)) as? [Any], let words = array as? [String] {
            arguments = .exec(words)
        } else if keyword == "SHELL" {
            throw error("SHELL needs its arguments as a JSON array of strings, such as [\"/bin/sh\", \"-c\"]", line: location.line, column: location.column)
        }
        var heredocs: [Heredoc] = []
        if Self.heredocs.contains(keyword), case .shell(let line) = arguments {
            for (delimiter, stripsTabs, expands) in Self.heredocMarkers(line) {
                var content = ""
                var ended = false
                while index < lines.count {
                    var body = Substring(lines[index])
                    index += 1
                    if stripsTabs { body = body.drop { $0 == "\t" } }
                    if body == delimiter {
                        ended = true
                        break
                    }
                    content += String(body) + "\n"
                }
                guard ended else {
                    throw error("the here-document \(delimiter) is not ended (no line \(delimiter) follows)", line: location.line, column: location.column)
                }
                heredocs.append(Heredoc(delimiter: delimiter, content: content, expands: expands))
            }
        }
        return Instruction(keyword: keyword, flags: flags, arguments: arguments, heredocs: heredocs, location: location, text: logical)
    }

    /// The here-documents a shell-form line names, in order: `<<WORD`,
    /// `<<-WORD` (tabs stripped), `<<"WORD"` and `<<'WORD'` (not expanded).
    /// Markers inside quotes are not here-documents.
    static func heredocMarkers(_ line: String) -> [(delimiter: String, stripsTabs: Bool, expands: Bool)] {
        var markers: [(delimiter: String, stripsTabs: Bool, expands: Bool)] = []
        let characters = Array(line)
        var quote: Character?
        var position = 0
        while position < characters.count {
            let character = characters[position]
            if let open = quote {
                if character == open { quote = nil }
                position += 1
                continue
            }
            if character == "\"" || character == "'" {
                quote = character
                position += 1
                continue
            }
            guard character == "<", position + 1 < characters.count, characters[position + 1] == "<" else {
                position += 1
                continue
            }
            // `<<<` is a shell's here-string, not a here-document.
            if position + 2 < characters.count, characters[position + 2] == "<" {
                position += 3
                while position < characters.count, characters[position] == "<" { position += 1 }
                continue
            }
            var cursor = position + 2
            let stripsTabs = cursor < characters.count && characters[cursor] == "-"
            if stripsTabs { cursor += 1 }
            var delimiterQuote: Character?
            if cursor < characters.count, characters[cursor] == "\"" || characters[cursor] == "'" {
                delimiterQuote = characters[cursor]
                cursor += 1
            }
            let start = cursor
            while cursor < characters.count, characters[cursor].isLetter || characters[cursor].isNumber || characters[cursor] == "_" { cursor += 1 }
            let word = String(characters[start ..< cursor])
            if let open = delimiterQuote {
                guard cursor < characters.count, characters[cursor] == open else {
                    position = cursor
                    continue
                }
                cursor += 1
            }
            if !word.isEmpty { markers.append((word, stripsTabs, delimiterQuote == nil)) }
            position = cursor
        }
        return markers
    }

    /// Groups the instructions into the global `ARG`s and the stages.
    private func structure(_ instructions: [Instruction], directives: [String: String], escape: Character) throws -> Dockerfile {
        var globals: [Instruction] = []
        var stages: [Stage] = []
        for instruction in instructions {
            if instruction.keyword == "FROM" {
                stages.append(try stage(instruction, after: stages))
            } else if stages.isEmpty {
                guard instruction.keyword == "ARG" else {
                    throw error("\(instruction.keyword) comes before the first FROM (only ARG may)", at: instruction.location)
                }
                globals.append(instruction)
            } else {
                if instruction.keyword == "ONBUILD" {
                    guard case .shell(let inner) = instruction.arguments, let word = inner.split(whereSeparator: \.isWhitespace).first else {
                        throw error("ONBUILD needs an instruction", at: instruction.location)
                    }
                    let keyword = word.uppercased()
                    guard Self.keywords.contains(keyword), !["ONBUILD", "FROM", "MAINTAINER"].contains(keyword) else {
                        throw error("ONBUILD cannot trigger \(word)", at: instruction.location)
                    }
                }
                stages[stages.count - 1].instructions.append(instruction)
            }
        }
        guard !stages.isEmpty else { throw error("the Dockerfile has no FROM", line: max(1, instructions.last?.location.line ?? 1), column: 1) }
        return Dockerfile(directives: directives, escape: escape, globalArguments: globals, stages: stages)
    }

    private func stage(_ from: Instruction, after stages: [Stage]) throws -> Stage {
        for flag in from.flags where flag.name != "platform" {
            throw error("FROM has no flag --\(flag.name) (only --platform)", at: from.location)
        }
        guard case .shell(let line) = from.arguments else { throw error("FROM takes an image name", at: from.location) }
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        var name: String?
        switch words.count {
        case 1: break
        case 3 where words[1].lowercased() == "as":
            let given = words[2].lowercased()
            guard let first = given.first, first.isLetter, given.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw error("\(words[2]) is not a valid stage name (a letter, then letters, digits, -, _ or .)", at: from.location)
            }
            guard !stages.contains(where: { $0.name == given }) else { throw error("the stage name \(words[2]) is used twice", at: from.location) }
            name = given
        default:
            throw error("FROM takes an image and optionally AS and a stage name, not \"\(line)\"", at: from.location)
        }
        return Stage(name: name, base: words[0], platform: from.flag("platform"), from: from, instructions: [])
    }

    private func error(_ message: String, at location: SourceLocation) -> BuildError {
        BuildError(.syntax, "\(location): \(message)")
    }

    private func error(_ message: String, line: Int, column: Int) -> BuildError {
        error(message, at: SourceLocation(file: file, line: line, column: column))
    }
}
