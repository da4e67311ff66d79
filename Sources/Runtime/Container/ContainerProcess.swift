/// A process in a container, handled alike whether it is the container's
/// main process (a ``Container``) or one started in it with
/// ``Container/exec(_:)`` (an ``ExecProcess``).
public protocol ContainerProcess: AnyObject, Sendable {
    /// Its output, both streams, as it arrives, until it ends. A
    /// container's is kept in its log and read from the first byte each
    /// time; an exec'd process's is not kept, and is read once, by one reader.
    var output: ContainerOutput { get }
    /// Waits for it to end and returns how it ended.
    func wait() async throws -> ContainerExit
    /// Sends it `signal`.
    func kill(_ signal: Signal) throws
    /// Writes to its standard input (with `openStdin`), blocking the calling
    /// thread while the pipe is full: for a thread of the caller's own.
    func write(_ bytes: some Sequence<UInt8>) throws
    /// Sends `bytes` to its standard input (with `openStdin`) without
    /// holding a thread of Swift's cooperative pool. A process that ends or
    /// stops reading first makes the error say how it ended.
    func send(_ bytes: some Sequence<UInt8>) async throws
    /// Closes its standard input, so that it reads end-of-file.
    func closeStdin()
    /// Sets the size of its terminal (with `terminal`).
    func resizeTerminal(rows: UInt16, columns: UInt16)
}

extension Container: ContainerProcess {}
