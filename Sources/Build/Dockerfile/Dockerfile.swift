/// A Dockerfile, parsed: its parser directives, the `ARG`s before the
/// first `FROM`, and its stages with their instructions, each with where
/// it was written. Nothing is expanded yet: variables are substituted when
/// a build walks the stages (``VariableExpansion``), as Docker does, since
/// their values depend on build arguments and the stage's environment.
///
/// ```swift
/// let file = try Dockerfile(parsing: text, file: "Dockerfile")
/// for stage in file.stages {
///     print(stage.name ?? "-", stage.base, stage.instructions.map(\.keyword))
/// }
/// ```
public struct Dockerfile: Hashable, Sendable {
    /// Parser directives from the top of the file (`syntax`, `escape`,
    /// `check`), by lowercased name.
    public var directives: [String: String]
    /// The escape character: a backslash, unless the `escape` directive chooses a backtick.
    public var escape: Character
    /// The `ARG` instructions before the first `FROM`, whose values only
    /// `FROM` lines may use.
    public var globalArguments: [Instruction]
    /// The stages, in order.
    public var stages: [Stage]

    /// Parses `text`; `file` names it in errors.
    ///
    /// - Throws: ``BuildError`` with code `syntax`, naming the file, line
    ///   and column.
    public init(parsing text: String, file: String = "Dockerfile") throws {
        self = try DockerfileParser(text: text, file: file).parse()
    }

    init(directives: [String: String], escape: Character, globalArguments: [Instruction], stages: [Stage]) {
        self.directives = directives
        self.escape = escape
        self.globalArguments = globalArguments
        self.stages = stages
    }

    /// The stage named `name` (case-insensitively, as Docker compares
    /// them), or the one at that index.
    public func stage(_ name: String) -> Stage? {
        if let named = stages.first(where: { $0.name?.lowercased() == name.lowercased() }) { return named }
        return Int(name).flatMap { stages.indices.contains($0) ? stages[$0] : nil }
    }
}

/// One stage of a Dockerfile: its `FROM` and what follows up to the next.
public struct Stage: Hashable, Sendable {
    /// The name given with `AS`, lowercased; nil when it has none.
    public var name: String?
    /// The image (or `scratch`, or an earlier stage's name) it starts from,
    /// unexpanded.
    public var base: String
    /// The `--platform` of its `FROM`, unexpanded.
    public var platform: String?
    /// Its `FROM` instruction.
    public var from: Instruction
    /// The instructions after `FROM`.
    public var instructions: [Instruction]
}

/// Where something was written in a Dockerfile.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    /// The file's name, as the caller gave it.
    public var file: String
    /// The line, from 1.
    public var line: Int
    /// The column, from 1.
    public var column: Int

    /// A place in `file`.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One instruction: its keyword, flags, arguments and heredocs.
public struct Instruction: Hashable, Sendable {
    /// The instruction's keyword, upper case (`RUN`, `COPY`, …).
    public var keyword: String
    /// The `--name[=value]` flags before its arguments, in order.
    public var flags: [InstructionFlag]
    /// Its arguments: a JSON array (exec form) or the rest of the line.
    public var arguments: Arguments
    /// The here-documents it names (`<<EOF`), with their contents.
    public var heredocs: [Heredoc]
    /// Where its keyword is.
    public var location: SourceLocation
    /// The instruction as written, continuation lines joined.
    public var text: String

    /// The value of the flag `name` (the last, if it is given twice); the
    /// empty string for a flag given without a value.
    public func flag(_ name: String) -> String? {
        flags.last { $0.name == name }.map { $0.value ?? "" }
    }

    /// Every value of the flag `name` (`--mount` may be given many times).
    public func flagValues(_ name: String) -> [String] {
        flags.filter { $0.name == name }.map { $0.value ?? "" }
    }
}

/// A `--name=value` flag of an instruction.
public struct InstructionFlag: Hashable, Sendable {
    /// Its name, without the dashes.
    public var name: String
    /// Its value; nil for `--name` alone.
    public var value: String?

    /// The flag `--name=value` (`--name` when `value` is nil).
    public init(name: String, value: String?) {
        self.name = name
        self.value = value
    }
}

/// The arguments of an instruction.
public enum Arguments: Hashable, Sendable {
    /// The exec form: a JSON array of strings (`["sh", "-c", "…"]`).
    case exec([String])
    /// The shell form: the rest of the line, as written.
    case shell(String)
}

/// A here-document an instruction names: `<<EOF` (expanded when a build
/// substitutes variables) or `<<"EOF"` / `<<'EOF'` (taken as written);
/// `<<-EOF` strips leading tabs from its lines.
public struct Heredoc: Hashable, Sendable {
    /// The word that ends it.
    public var delimiter: String
    /// Its lines, each with its newline.
    public var content: String
    /// Whether variables in it are expanded (the delimiter was not quoted).
    public var expands: Bool

    /// A here-document ended by `delimiter`.
    public init(delimiter: String, content: String, expands: Bool) {
        self.delimiter = delimiter
        self.content = content
        self.expands = expands
    }
}
