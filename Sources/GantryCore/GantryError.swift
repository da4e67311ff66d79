import SystemPackage

/// What every error Gantry throws has in common, so that a caller can catch
/// them all at once: a sentence naming the thing at fault, and the error
/// that caused it where there is one.
///
/// Each module has its own error type with a code that can grow
/// (`OCIImageError`, `RuntimeError`, `SchedulerError`, `ReconcilerError`,
/// `ObservabilityError`); a failed system call is a ``SystemCallError``.
///
/// ```swift
/// do {
///     try await gantry.run(spec)
/// } catch let error as any GantryError {
///     print(error.message, error.underlying.map { "(\($0))" } ?? "")
/// }
/// ```
public protocol GantryError: Error, CustomStringConvertible {
    /// A sentence naming the thing that is wrong.
    var message: String { get }
    /// The error that caused this one: the errno of a failed system call,
    /// or the error of a lower layer; `nil` when there is none.
    var underlying: (any Error)? { get }
}

extension GantryError {
    /// The errno behind this error, found through the chain of underlying
    /// errors; `nil` when no system call failed.
    public var systemError: Errno? {
        var next = underlying
        while let error = next {
            if let errno = error as? Errno { return errno }
            next = (error as? any GantryError)?.underlying
        }
        return nil
    }
}

/// A system call that failed, naming the call and what it was called on.
public struct SystemCallError: GantryError, Sendable {
    /// The call, as its manual page names it (`open`, `rename`, `flock`).
    public var call: String
    /// The path (or other name) the call was made on.
    public var path: String
    /// The error number the call returned.
    public var errno: Errno

    /// Creates an error for `call` on `path` that failed with `errno`.
    public init(_ call: String, _ path: String, _ errno: Errno) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    public var message: String { "\(call) \(path) failed" }
    public var underlying: (any Error)? { errno }
    public var description: String { "\(message): \(errno)" }
}

/// The code of a module's error: a value callers compare and switch over,
/// whose set of values can grow without breaking the API.
public protocol ErrorCode: Hashable, Sendable, CustomStringConvertible {}

/// An error of one of Gantry's modules: a code saying what went wrong, a
/// sentence naming the thing at fault, and the error behind it.
///
/// Each module names its own: `RuntimeError` is `CodedError<RuntimeErrorCode>`,
/// so `catch let error as RuntimeError` and `error.code == .notFound` read
/// as they would for a type of its own.
public struct CodedError<Kind: ErrorCode>: GantryError, Sendable {
    /// The module's code type (`RuntimeError.Code` is `RuntimeErrorCode`).
    public typealias Code = Kind

    /// What went wrong.
    public var code: Code
    /// A sentence naming the thing that is wrong.
    public var message: String
    /// The error behind this one: the errno of a failed system call, a
    /// ``SystemCallError``, or a lower layer's error; `nil` when there is none.
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

    /// The message, followed by the error behind it where there is one.
    public var description: String {
        underlying.map { "\(message): \($0)" } ?? message
    }
}
