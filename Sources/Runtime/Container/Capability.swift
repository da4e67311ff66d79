import GantryCore

/// A Linux capability (capabilities(7)), by number.
public struct Capability: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The kernel's number for it.
    public let number: Int

    /// The names the kernel uses, without the `CAP_` prefix, by number.
    static let names = [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ]

    /// The capability with the kernel number `number`.
    public init?(number: Int) {
        guard Self.names.indices.contains(number) else { return nil }
        self.number = number
    }

    /// The capability named `name`: `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin`.
    public init?(_ name: String) {
        var upper = name.uppercased()
        if upper.hasPrefix("CAP_") { upper.removeFirst(4) }
        guard let number = Self.names.firstIndex(of: upper) else { return nil }
        self.number = number
    }

    /// `CAP_` and the kernel's name.
    public var description: String { "CAP_" + Self.names[number] }

    public static func < (lhs: Capability, rhs: Capability) -> Bool { lhs.number < rhs.number }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let capability = Capability(name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown capability \(name)"))
        }
        self = capability
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// Every capability the kernel knows of.
    public static var all: Set<Capability> { Set(names.indices.map { Capability(number: $0)! }) }

    /// The capabilities this process holds in its bounding set: all a
    /// privileged container can be given.
    static let held: Set<Capability> = {
        guard let mask = Sys.capabilityMask("CapBnd") else { return all }
        return all.filter { $0.number < 64 && mask & (1 << UInt64($0.number)) != 0 }
    }()

    /// Docker's default set: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD,
    /// NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE,
    /// SYS_CHROOT, KILL and AUDIT_WRITE (mask `0xa80425fb`).
    public static let dockerDefault: Set<Capability> = Set([
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
        "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    ].map { Capability($0)! })

    /// Parses a list of names; `ALL` stands for every capability.
    ///
    /// - Throws: ``RuntimeError`` naming an unknown capability.
    public static func parse(_ names: [String]) throws -> Set<Capability> {
        var result = Set<Capability>()
        for name in names {
            if name.uppercased() == "ALL" || name.uppercased() == "CAP_ALL" {
                result.formUnion(all)
            } else if let capability = Capability(name) {
                result.insert(capability)
            } else {
                throw RuntimeError(.invalidSpec, "unknown capability \(name)")
            }
        }
        return result
    }

    /// A bit mask of `capabilities`, as `/proc/<pid>/status` shows it.
    static func mask(_ capabilities: Set<Capability>) -> UInt64 {
        capabilities.reduce(0) { $0 | (1 << UInt64($1.number)) }
    }
}
