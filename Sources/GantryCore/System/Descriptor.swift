#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor owned by this value, and closed when the value goes
/// away, so that no path (an early return, a thrown error) can leak it.
/// It cannot be copied; hand it on with `consume`, or take the number back
/// with ``release()`` when something else takes ownership.
package struct Descriptor: ~Copyable {
    /// The descriptor's number.
    package let rawValue: Int32

    /// Takes ownership of `rawValue` (a negative value owns nothing).
    package init(_ rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Opens `path` with close-on-exec added to `flags`.
    package init(open path: String, _ flags: Int32, _ mode: mode_t = 0) throws {
        rawValue = try Sys.open(path, flags, mode)
    }

    /// Opens `path` relative to the directory `directory`, with close-on-exec
    /// added to `flags`; `display` names it in errors.
    package init(openAt directory: borrowing Descriptor, _ path: String, _ flags: Int32, _ mode: mode_t = 0, display: String? = nil) throws {
        rawValue = try Sys.openat(directory.rawValue, path, flags, mode, display: display)
    }

    deinit {
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
    }

    /// Gives up ownership: the caller closes the number returned.
    package consuming func release() -> Int32 {
        let value = rawValue
        discard self
        return value
    }
}
