import CGantrySystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A terminal of this process (its standard input, usually), to relay to
/// a container's terminal: raw mode while relaying, and its size.
public final class HostTerminal: Sendable {
    private let descriptor: Int32
    // The settings raw mode replaced (a `struct termios`, kept as bytes),
    // or nil while the terminal is as it was.
    private let saved = Mutex<[UInt8]?>(nil)

    /// The terminal on `descriptor` (standard input by default), or `nil`
    /// when that is not a terminal.
    public init?(descriptor: Int32 = 0) {
        guard isatty(descriptor) == 1 else { return nil }
        self.descriptor = descriptor
    }

    /// The terminal's size in rows and columns; `nil` when it reports none.
    public var size: (rows: UInt16, columns: UInt16)? {
        var rows: UInt16 = 0
        var columns: UInt16 = 0
        gantry_terminal_size(descriptor, &rows, &columns)
        return rows > 0 && columns > 0 ? (rows, columns) : nil
    }

    /// Puts the terminal into raw mode (no echo, no line editing, no
    /// signals from keys), as a relay to a container's terminal needs.
    ///
    /// - Throws: ``RuntimeError`` with code `systemCall` when the
    ///   terminal's settings cannot be changed.
    public func enterRawMode() throws {
        try saved.withLock { saved in
            guard saved == nil else { return }
            var settings = [UInt8](repeating: 0, count: 256)
            let result = settings.withUnsafeMutableBytes { gantry_terminal_raw(descriptor, $0.baseAddress, $0.count) }
            guard result == 0 else {
                throw RuntimeError(.systemCall, "cannot put the terminal into raw mode", underlying: Sys.errno)
            }
            saved = settings
        }
    }

    /// Gives the terminal back the settings it had before ``enterRawMode()``.
    public func restore() {
        saved.withLock { saved in
            guard let settings = saved else { return }
            _ = settings.withUnsafeBytes { gantry_terminal_restore(descriptor, $0.baseAddress) }
            saved = nil
        }
    }

    deinit { restore() }
}
