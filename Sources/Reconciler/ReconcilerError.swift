import GantryCore

/// An error raised by the Reconciler module, with a code that can grow
/// without breaking the API and a message naming the thing at fault.
public struct ReconcilerError: GantryError, Sendable {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case invalidSpec, notFound, store, compose, invalidState
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// A service spec is malformed.
        public static let invalidSpec = Code(.invalidSpec)
        /// No such service or revision.
        public static let notFound = Code(.notFound)
        /// The state store could not be read or written.
        public static let store = Code(.store)
        /// A compose file is malformed or uses what Gantry does not support.
        public static let compose = Code(.compose)
        /// The operation does not fit the service's state.
        public static let invalidState = Code(.invalidState)

        public var description: String { "\(storage)" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The error behind this one, from a lower layer; `nil` when there is none.
    public var underlying: (any Error)?

    /// Creates an error.
    ///
    /// - Parameters:
    ///   - code: what went wrong.
    ///   - message: a sentence naming the thing that is wrong.
    ///   - underlying: the error behind this one, if any.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}
