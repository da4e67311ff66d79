import CArchive

/// Which extended attributes layers carry, on the way in and out.
enum ExtendedAttributes {
    /// `user.*`, `trusted.*` and `security.capability` are carried; never
    /// overlayfs's own attributes, which would change how layers stack, nor
    /// host-specific ones such as `security.selinux` or ACLs.
    static func isCarried(_ name: String) -> Bool {
        if name.hasPrefix("trusted.overlay.") || name.hasPrefix("user.overlay.") { return false }
        return name.hasPrefix("user.") || name.hasPrefix("trusted.") || name == "security.capability"
    }

    /// Whether writing the attribute needs privileges (CAP_SYS_ADMIN or CAP_SETFCAP).
    static func needsPrivilege(_ name: String) -> Bool {
        !name.hasPrefix("user.")
    }

    /// Calls `body` with each extended attribute of a libarchive entry.
    static func forEach(in entry: OpaquePointer, _ body: (_ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer) throws -> Void) rethrows {
        guard archive_entry_xattr_count(entry) > 0 else { return }
        archive_entry_xattr_reset(entry)
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            try body(name, UnsafeRawBufferPointer(start: value, count: size))
        }
    }
}
