import GantryCore

/// An error of the observability layer, naming what could not be measured.
public struct ObservabilityError: GantryError, Sendable {
    /// What went wrong, in words.
    public var message: String
    /// The error behind this one, from a lower layer; `nil` when there is none.
    public var underlying: (any Error)?

    /// An error saying `message`, caused by `underlying` if given.
    public init(_ message: String, underlying: (any Error)? = nil) {
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}
