import GantryCore

/// An error raised by the Build module, with a code that can grow without
/// breaking the API and a message naming the thing at fault (a Dockerfile
/// with its line and column, a build argument, a stage).
///
/// Catch it as `BuildError`; its `code` is a ``BuildErrorCode``.
public typealias BuildError = CodedError<BuildErrorCode>

/// What went wrong in the Build module.
public struct BuildErrorCode: ErrorCode {
    private let name: String
    private init(_ name: String) { self.name = name }

    /// A Dockerfile cannot be parsed: the message names the file, line and
    /// column.
    public static let syntax = Self("syntax")
    /// A variable reference cannot be expanded (a malformed `${…}`).
    public static let substitution = Self("substitution")
    /// The build context cannot be read.
    public static let context = Self("context")
    /// The target stage, or a stage or image a step names, does not exist.
    public static let target = Self("target")
    /// An instruction asks for what cannot be done (a bad flag, a source
    /// outside the context, a `RUN` on an empty file system).
    public static let instruction = Self("instruction")
    /// A `RUN` step's command failed: the message gives its exit and last
    /// output.
    public static let stepFailed = Self("stepFailed")
    /// The build cache cannot be pushed to the registry `--cache-to`
    /// names, or this build of Gantry cannot reach registries.
    public static let cache = Self("cache")

    public var description: String { name }
}
