/// Docker's word processing for the instructions that substitute
/// variables (`ADD`, `COPY`, `ENV`, `EXPOSE`, `FROM`, `LABEL`, `STOPSIGNAL`,
/// `USER`, `VOLUME`, `WORKDIR`, `ARG`, `ONBUILD`'s trigger when it runs):
/// `$NAME`, `${NAME}`, `${NAME:-word}` (the word when unset or empty),
/// `${NAME-word}` (when unset), `${NAME:+word}` (the word when set and not
/// empty), `${NAME+word}` (when set) and `${NAME:?message}` (an error when
/// unset or empty); single quotes keep everything as written, double
/// quotes keep spaces but expand, the escape character keeps the next
/// character (`\$HOME` is `$HOME`), and quotes are removed.
public struct VariableExpansion: Sendable {
    /// The escape character of the Dockerfile.
    public var escape: Character
    /// The value of a variable, nil when it is not set.
    public var lookup: @Sendable (String) -> String?

    /// Expansion with `escape` and the variables `lookup` gives.
    public init(escape: Character = "\\", lookup: @escaping @Sendable (String) -> String?) {
        self.escape = escape
        self.lookup = lookup
    }

    /// Expansion over a dictionary of variables.
    public init(escape: Character = "\\", variables: [String: String]) {
        self.init(escape: escape) { variables[$0] }
    }

    /// `word` expanded and unquoted, as one word (spaces kept).
    ///
    /// - Throws: ``BuildError`` with code `substitution` for a malformed
    ///   `${…}` or a `${NAME:?message}` whose variable is unset.
    public func word(_ word: String) throws -> String {
        try process(Array(word), splitting: false).joined()
    }

    /// `text` expanded, unquoted and split into words at unquoted
    /// whitespace (a variable's value is not split again, as in Docker).
    public func words(_ text: String) throws -> [String] {
        try process(Array(text), splitting: true)
    }

    /// `KEY=value …` pairs (or the older `KEY value with spaces`) of an
    /// `ENV`, `LABEL` or `ARG` line, their values expanded; an `ARG NAME`
    /// without a value has a nil value.
    public func pairs(_ text: String, allowingBare: Bool = false) throws -> [(key: String, value: String?)] {
        let raw = try rawWords(Array(text))
        guard let first = raw.first else { return [] }
        if !first.contains("="), !allowingBare {
            // The older form: the first word is the key, the rest its value.
            let trimmed = text.drop { $0 == " " || $0 == "\t" }
            let value = trimmed.drop { $0 != " " && $0 != "\t" }.drop { $0 == " " || $0 == "\t" }
            // As Docker: the older form needs a value.
            guard !value.isEmpty else { throw BuildError(.substitution, "\(first) has no value: write \(first)=value") }
            return [(first, try word(String(value)))]
        }
        return try raw.map { item -> (key: String, value: String?) in
            guard let equals = item.firstIndex(of: "=") else {
                guard allowingBare else { throw BuildError(.substitution, "\"\(item)\" is not KEY=value") }
                return (try word(item), nil)
            }
            let key = try word(String(item[..<equals]))
            guard !key.isEmpty else { throw BuildError(.substitution, "\"\(item)\" has no name before =") }
            return (key, try word(String(item[item.index(after: equals)...])))
        }
    }

    /// The words of `text` split at unquoted whitespace, quotes and escapes
    /// kept as written (for splitting before expanding).
    private func rawWords(_ characters: [Character]) throws -> [String] {
        var words: [String] = []
        var current = ""
        var quote: Character?
        var index = 0
        var started = false
        while index < characters.count {
            let character = characters[index]
            if quote == nil, character == " " || character == "\t" {
                if started { words.append(current) }
                current = ""
                started = false
            } else {
                started = true
                current.append(character)
                if character == escape, quote != "'", index + 1 < characters.count {
                    current.append(characters[index + 1])
                    index += 1
                } else if character == "\"" || character == "'" {
                    quote = quote == nil ? character : (quote == character ? nil : quote)
                }
            }
            index += 1
        }
        if started { words.append(current) }
        return words
    }

    private func process(_ characters: [Character], splitting: Bool) throws -> [String] {
        var words: [String] = []
        var current = ""
        var started = false
        var index = 0
        while index < characters.count {
            let character = characters[index]
            if splitting, character == " " || character == "\t" {
                if started { words.append(current) }
                current = ""
                started = false
                index += 1
                continue
            }
            started = true
            switch character {
            case "'":
                index += 1
                while index < characters.count, characters[index] != "'" {
                    current.append(characters[index])
                    index += 1
                }
                guard index < characters.count else { throw BuildError(.substitution, "a single quote is not closed in \(String(characters))") }
                index += 1
            case "\"":
                index += 1
                while index < characters.count, characters[index] != "\"" {
                    if characters[index] == escape, index + 1 < characters.count, ["\"", "$", escape].contains(characters[index + 1]) {
                        current.append(characters[index + 1])
                        index += 2
                    } else if characters[index] == "$" {
                        current += try variable(characters, &index)
                    } else {
                        current.append(characters[index])
                        index += 1
                    }
                }
                guard index < characters.count else { throw BuildError(.substitution, "a double quote is not closed in \(String(characters))") }
                index += 1
            case escape:
                if index + 1 < characters.count {
                    current.append(characters[index + 1])
                    index += 2
                } else {
                    current.append(character)
                    index += 1
                }
            case "$":
                current += try variable(characters, &index)
            default:
                current.append(character)
                index += 1
            }
        }
        if started || !splitting { words.append(current) }
        return words
    }

    /// The value of the reference at `index` (a `$`), which moves past it.
    private func variable(_ characters: [Character], _ index: inout Int) throws -> String {
        let start = index
        index += 1
        guard index < characters.count else { return "$" }
        if characters[index] != "{" {
            let nameStart = index
            if characters[index].isASCII, characters[index].isNumber {
                // A positional name is its digits alone (`$1x` is `$1` then x).
                while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
                return lookup(String(characters[nameStart ..< index])) ?? ""
            }
            while index < characters.count, characters[index].isASCII, characters[index].isLetter || characters[index].isNumber || characters[index] == "_" {
                index += 1
            }
            guard index > nameStart else { return "$" }
            return lookup(String(characters[nameStart ..< index])) ?? ""
        }
        index += 1
        let nameStart = index
        while index < characters.count, characters[index].isASCII, characters[index].isLetter || characters[index].isNumber || characters[index] == "_" {
            index += 1
        }
        let name = String(characters[nameStart ..< index])
        guard !name.isEmpty, index < characters.count else {
            throw BuildError(.substitution, "\(String(characters[start...])) is not a variable reference (${NAME})")
        }
        if characters[index] == "}" {
            index += 1
            return lookup(name) ?? ""
        }
        var modifier = String(characters[index])
        index += 1
        if modifier == ":", index < characters.count {
            modifier.append(characters[index])
            index += 1
        }
        guard ["-", "+", ":-", ":+", ":?", "?"].contains(modifier) else {
            throw BuildError(.substitution, "${\(name)\(modifier)…} is not a substitution Docker allows (use :-, -, :+, + or :?)")
        }
        // The word runs to the matching brace (words may hold references).
        var depth = 1
        let wordStart = index
        while index < characters.count {
            if characters[index] == escape { index += 2; continue }
            if characters[index] == "{" { depth += 1 }
            if characters[index] == "}" {
                depth -= 1
                if depth == 0 { break }
            }
            index += 1
        }
        guard index < characters.count else { throw BuildError(.substitution, "${\(name)… has no closing brace") }
        let word = Array(characters[wordStart ..< index])
        index += 1
        let value = lookup(name)
        let current = value ?? ""
        let set = value != nil, nonEmpty = !current.isEmpty
        switch modifier {
        case ":-": return nonEmpty ? current : try process(word, splitting: false).joined()
        case "-": return set ? current : try process(word, splitting: false).joined()
        case ":+": return nonEmpty ? try process(word, splitting: false).joined() : ""
        case "+": return set ? try process(word, splitting: false).joined() : ""
        default:
            if modifier == ":?" ? nonEmpty : set { return current }
            let message = try process(word, splitting: false).joined()
            throw BuildError(.substitution, "\(name): " + (message.isEmpty ? "is not set" : message))
        }
    }
}
