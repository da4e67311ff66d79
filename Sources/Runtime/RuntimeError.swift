import GantryCore
import SystemPackage

/// An error raised by the Runtime module, with a code that can grow without
/// breaking the API, a message naming the thing at fault, and the system
/// error behind it where there is one.
public struct RuntimeError: GantryError, Sendable {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case unsupportedHost, seccomp, launch, invalidSpec, cgroup, notFound, invalidState, systemCall, network
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// The host lacks something the runtime needs.
        public static let unsupportedHost = Code(.unsupportedHost)
        /// A seccomp filter cannot be built.
        public static let seccomp = Code(.seccomp)
        /// A container's process could not be started; the message names the step.
        public static let launch = Code(.launch)
        /// A container specification is incomplete or contradictory.
        public static let invalidSpec = Code(.invalidSpec)
        /// A cgroup could not be created, configured, read or removed.
        public static let cgroup = Code(.cgroup)
        /// No container has that name or ID.
        public static let notFound = Code(.notFound)
        /// The container is not in a state that allows the operation.
        public static let invalidState = Code(.invalidState)
        /// A system call failed; ``RuntimeError/underlying`` holds the failure.
        public static let systemCall = Code(.systemCall)
        /// A network, its devices, addresses, routes or rules could not be
        /// set up or removed.
        public static let network = Code(.network)

        public var description: String { "\(storage)" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The error behind this one: the errno of a failed system call, a
    /// `SystemCallError`, or a lower layer's error; `nil` when there is none.
    public var underlying: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        underlying.map { "\(message): \($0)" } ?? message
    }
}
