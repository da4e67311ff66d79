/// An error raised by the Scheduler module, with a code that can grow
/// without breaking the API and a message naming the thing at fault.
public struct SchedulerError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case invalidQuantity
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// A resource quantity is malformed or out of range.
        public static let invalidQuantity = Code(.invalidQuantity)

        public var description: String { "\(storage)" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
