import GantryCore
import SystemPackage

/// An error raised by the Runtime module, with a code that can grow without
/// breaking the API, a message naming the thing at fault, and the system
/// error behind it where there is one.
///
/// Catch it as `RuntimeError`; its `code` is a ``RuntimeErrorCode``.
public typealias RuntimeError = CodedError<RuntimeErrorCode>

/// What went wrong in the Runtime module.
public struct RuntimeErrorCode: ErrorCode {
    private let name: String
    private init(_ name: String) { self.name = name }

    /// The host lacks something the runtime needs.
    public static let unsupportedHost = Self("unsupportedHost")
    /// A seccomp filter cannot be built.
    public static let seccomp = Self("seccomp")
    /// A container's process could not be started; the message names the step.
    public static let launch = Self("launch")
    /// A container specification is incomplete or contradictory.
    public static let invalidSpec = Self("invalidSpec")
    /// A cgroup could not be created, configured, read or removed.
    public static let cgroup = Self("cgroup")
    /// No container has that name or ID.
    public static let notFound = Self("notFound")
    /// The container is not in a state that allows the operation.
    public static let invalidState = Self("invalidState")
    /// A system call failed; the error's `underlying` holds the failure.
    public static let systemCall = Self("systemCall")
    /// A network, its devices, addresses, routes or rules could not be
    /// set up or removed.
    public static let network = Self("network")

    public var description: String { name }
}
