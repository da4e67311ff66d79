import CSeccomp

/// The libseccomp the runtime compiles filters with.
public enum SeccompLibrary {
    /// The linked library's version, `major.minor.micro`.
    public static var version: String {
        guard let version = seccomp_version() else { return "unknown" }
        return "\(version.pointee.major).\(version.pointee.minor).\(version.pointee.micro)"
    }

    /// The syscall number of `name` on the host architecture, or `nil` when
    /// the host has no such syscall.
    public static func syscallNumber(_ name: String) -> Int32? {
        let number = seccomp_syscall_resolve_name(name)
        return number == __NR_SCMP_ERROR ? nil : number
    }
}
