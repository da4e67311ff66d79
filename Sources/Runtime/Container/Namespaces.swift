import CGantryLauncher

/// Linux namespaces a container gets of its own.
public struct Namespaces: OptionSet, Hashable, Sendable, Codable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Mounts.
    public static let mount = Namespaces(rawValue: GANTRY_CLONE_NEWNS)
    /// Process IDs: the container's first process is PID 1.
    public static let pid = Namespaces(rawValue: GANTRY_CLONE_NEWPID)
    /// Host and domain names.
    public static let uts = Namespaces(rawValue: GANTRY_CLONE_NEWUTS)
    /// System V IPC and POSIX message queues.
    public static let ipc = Namespaces(rawValue: GANTRY_CLONE_NEWIPC)
    /// Network devices, addresses, routes and ports.
    public static let network = Namespaces(rawValue: GANTRY_CLONE_NEWNET)
    /// The cgroup tree's root.
    public static let cgroup = Namespaces(rawValue: GANTRY_CLONE_NEWCGROUP)
    /// User and group IDs (with id mappings).
    public static let user = Namespaces(rawValue: GANTRY_CLONE_NEWUSER)

    /// Every namespace but the user namespace: Docker's default.
    public static let isolated: Namespaces = [.mount, .pid, .uts, .ipc, .network, .cgroup]
}
