extension ContainerSpec {
    /// Docker's short mount syntax, `SOURCE:TARGET[:OPTIONS]`, as
    /// `docker run -v` and compose files' `volumes:` write it: split, and
    /// checked as far as it can be without knowing where it was written.
    ///
    /// OPTIONS is a comma list of `ro`, `rw` and a propagation (`rslave`,
    /// …). Options Docker accepts that mean nothing here (the SELinux
    /// labels `z` and `Z`, `nocopy`, and macOS's `cached`, `delegated` and
    /// `consistent`) are kept in ``ignoredOptions`` for the caller to warn
    /// about; shared propagation is refused, as nothing a container mounts
    /// may reach the host.
    public struct VolumeSyntax: Hashable, Sendable {
        /// A host path (``isHostPath``) or a volume's name.
        public var source: String
        /// Where it appears in the container (absolute).
        public var target: String
        /// Whether it is mounted read-only.
        public var readOnly = false
        /// The propagation asked for (bind mounts only).
        public var propagation: MountPropagation?
        /// Options accepted and ignored, in the order written.
        public var ignoredOptions: [String] = []

        /// Whether the source is a path on the host (absolute, or relative
        /// to `.` or `~`, which the caller resolves) rather than a volume's name.
        public var isHostPath: Bool { source.hasPrefix("/") || source.hasPrefix(".") || source.hasPrefix("~") }

        /// Splits and checks `text`.
        ///
        /// - Throws: `RuntimeError` with code `invalidSpec`, whose message
        ///   names what is wrong (the caller adds where it was written).
        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 3, !parts.contains(where: \.isEmpty) else {
                throw RuntimeError(.invalidSpec, "\(text) is not SOURCE:TARGET[:OPTIONS]")
            }
            guard parts.count > 1 else {
                throw RuntimeError(.invalidSpec, "anonymous volumes are not supported; name the volume (NAME:\(text))")
            }
            (source, target) = (parts[0], parts[1])
            guard target.hasPrefix("/") else { throw RuntimeError(.invalidSpec, "the target \(target) must be an absolute path") }
            for option in parts.count == 3 ? parts[2].split(separator: ",").map(String.init) : [] {
                switch option {
                case "ro": readOnly = true
                case "rw": readOnly = false
                case "z", "Z", "nocopy", "cached", "delegated", "consistent": ignoredOptions.append(option)
                case "shared", "rshared":
                    throw RuntimeError(.invalidSpec, "shared propagation is not offered: nothing a container mounts reaches the host")
                default:
                    guard let parsed = MountPropagation(rawValue: option) else {
                        throw RuntimeError(.invalidSpec, "unknown option \(option); use ro, rw, or a propagation (private, rprivate, slave, rslave)")
                    }
                    propagation = parsed
                }
            }
            if propagation != nil, !isHostPath {
                throw RuntimeError(.invalidSpec, "propagation applies to bind mounts, not to the volume \(source)")
            }
        }
    }
}
