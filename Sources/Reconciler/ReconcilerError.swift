import GantryCore

/// An error raised by the Reconciler module, with a code that can grow
/// without breaking the API and a message naming the thing at fault.
///
/// Catch it as `ReconcilerError`; its `code` is a ``ReconcilerErrorCode``.
public typealias ReconcilerError = CodedError<ReconcilerErrorCode>

/// What went wrong in the Reconciler module.
public struct ReconcilerErrorCode: ErrorCode {
    private let name: String
    private init(_ name: String) { self.name = name }

    /// A service spec is malformed.
    public static let invalidSpec = Self("invalidSpec")
    /// No such service or revision.
    public static let notFound = Self("notFound")
    /// The state store could not be read or written.
    public static let store = Self("store")
    /// A compose file is malformed or uses what Gantry does not support.
    public static let compose = Self("compose")
    /// The operation does not fit the service's state.
    public static let invalidState = Self("invalidState")

    public var description: String { name }
}
