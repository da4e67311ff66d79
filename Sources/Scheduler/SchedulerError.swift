import GantryCore

/// An error raised by the Scheduler module, with a code that can grow
/// without breaking the API and a message naming the thing at fault.
public struct SchedulerError: GantryError, Sendable {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Storage: Hashable, Sendable {
            case invalidQuantity, invalidSpec, unschedulable, invalidSchedule, notFound, exists, store, failed
        }
        private let storage: Storage
        private init(_ storage: Storage) { self.storage = storage }

        /// A resource quantity is malformed or out of range.
        public static let invalidQuantity = Code(.invalidQuantity)
        /// A workload, node, job or autoscaler specification is inconsistent.
        public static let invalidSpec = Code(.invalidSpec)
        /// A workload can never be placed (it asks for more than any node has).
        public static let unschedulable = Code(.unschedulable)
        /// A cron schedule or time zone cannot be parsed.
        public static let invalidSchedule = Code(.invalidSchedule)
        /// No job, cron job or node has the name given.
        public static let notFound = Code(.notFound)
        /// A job or cron job of that name exists already.
        public static let exists = Code(.exists)
        /// The scheduler's store could not be read or written.
        public static let store = Code(.store)
        /// A workload could not be started.
        public static let failed = Code(.failed)

        public var description: String { "\(storage)" }
    }

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The error behind this one, from a lower layer; `nil` when there is none.
    public var underlying: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}
