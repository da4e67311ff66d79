public import GantryCore

/// An error raised by GantryTesting, with a code that can grow without
/// breaking the API and a message a test failure can show as it is: it
/// names the container, and for a container that did not become ready, its
/// exit and its last lines of output.
public typealias TestingError = CodedError<TestingErrorCode>

/// What went wrong in GantryTesting.
public struct TestingErrorCode: ErrorCode {
    private let name: String
    private init(_ name: String) { self.name = name }

    /// The container's image is not in the state root and could not be
    /// pulled or built.
    public static let image = Self("image")
    /// The container ended before its wait strategy was satisfied.
    public static let exited = Self("exited")
    /// The wait strategy was not satisfied within the start-up deadline.
    public static let timedOut = Self("timedOut")
    /// A port was asked for that the container does not expose.
    public static let portNotExposed = Self("portNotExposed")
    /// A test container's description is malformed.
    public static let invalidSpec = Self("invalidSpec")
    /// No container is in scope under that name (see `ContainerTrait`).
    public static let notInScope = Self("notInScope")

    public var description: String { name }
}
