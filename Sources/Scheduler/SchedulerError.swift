import GantryCore

/// An error raised by the Scheduler module, with a code that can grow
/// without breaking the API and a message naming the thing at fault.
///
/// Catch it as `SchedulerError`; its `code` is a ``SchedulerErrorCode``.
public typealias SchedulerError = CodedError<SchedulerErrorCode>

/// What went wrong in the Scheduler module.
public struct SchedulerErrorCode: ErrorCode {
    private let name: String
    private init(_ name: String) { self.name = name }

    /// A resource quantity is malformed or out of range.
    public static let invalidQuantity = Self("invalidQuantity")
    /// A workload, node, job or autoscaler specification is inconsistent.
    public static let invalidSpec = Self("invalidSpec")
    /// A workload can never be placed (it asks for more than any node has).
    public static let unschedulable = Self("unschedulable")
    /// A cron schedule or time zone cannot be parsed.
    public static let invalidSchedule = Self("invalidSchedule")
    /// No job, cron job or node has the name given.
    public static let notFound = Self("notFound")
    /// A job or cron job of that name exists already.
    public static let exists = Self("exists")
    /// The scheduler's store could not be read or written.
    public static let store = Self("store")
    /// A workload could not be started.
    public static let failed = Self("failed")

    public var description: String { name }
}
