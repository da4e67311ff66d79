import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor with exactly one owner, closed when that owner
/// is done with it: at the end of its scope, on every path out of it,
/// thrown errors included. It cannot be copied, so it cannot be closed
/// twice; ``release()`` hands the number to a new owner instead.
package struct OwnedDescriptor: ~Copyable {
    /// The descriptor's number, valid while this value lives.
    package let raw: Int32

    /// Takes ownership of `raw`, an open descriptor (or -1 for none).
    package init(_ raw: Int32) {
        self.raw = raw
    }

    /// Opens `path` (close-on-exec, retrying `EINTR`); `nil` with `errno`
    /// set when it cannot be opened, for the caller's own error.
    package init?(opening path: String, _ flags: Int32, mode: UInt32 = 0) {
        guard case .success(let fd) = Sys.attempt({ Glibc.open(path, flags | O_CLOEXEC, mode) }) else { return nil }
        raw = fd
    }

    /// Opens `path` (close-on-exec, retrying `EINTR`).
    ///
    /// - Throws: ``SystemCallError`` naming `open` and the path.
    package static func open(_ path: String, _ flags: Int32, mode: UInt32 = 0) throws -> OwnedDescriptor {
        OwnedDescriptor(try Sys.open(path, flags, mode))
    }

    /// Gives the number up to a new owner: it is not closed here.
    package consuming func release() -> Int32 {
        let raw = raw
        discard self
        return raw
    }

    deinit {
        if raw >= 0 { _ = Glibc.close(raw) }
    }
}
