import SystemPackage

/// An error raised by the Runtime module, with a code that can grow without
/// breaking the API, a message naming the thing at fault, and the system
/// error behind it where there is one.
public struct RuntimeError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case unsupportedHost, seccomp
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// The host lacks something the runtime needs.
        public static let unsupportedHost = Code(.unsupportedHost)
        /// A seccomp filter cannot be built.
        public static let seccomp = Code(.seccomp)

        public var description: String { "\(storage)" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The system error behind this error, if any.
    public var underlying: Errno?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: Errno? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        underlying.map { "\(message): \($0)" } ?? message
    }
}
