import CGantryLauncher
import Foundation

/// A mount the launcher makes inside the new root (paths are inside it and
/// resolved there, so that no symlink in the image leads a mount outside).
struct PlannedMount: Hashable, Sendable {
    enum Kind: Int32, Sendable {
        case filesystem = 0
        case bind = 1
        case symlink = 2
    }

    var kind: Kind
    var source: String
    var target: String
    var fstype: String?
    var data: String?
    var flags: UInt
    var isDirectory: Bool

    static func filesystem(_ fstype: String, at target: String, source: String? = nil, flags: UInt = 0, data: String? = nil) -> PlannedMount {
        PlannedMount(kind: .filesystem, source: source ?? fstype, target: target, fstype: fstype, data: data, flags: flags, isDirectory: true)
    }

    static func bind(_ source: String, at target: String, flags: UInt = 0, directory: Bool = true) -> PlannedMount {
        PlannedMount(kind: .bind, source: source, target: target, fstype: nil, data: nil, flags: flags, isDirectory: directory)
    }

    /// The host's device node `source`, bound (on a nodev /dev, a bound
    /// node still works, one made with mknod does not).
    static func device(_ source: String, at target: String) -> PlannedMount {
        PlannedMount(kind: .bind, source: source, target: target, fstype: nil, data: nil, flags: 0, isDirectory: false)
    }

    static func symlink(_ target: String, to destination: String) -> PlannedMount {
        PlannedMount(kind: .symlink, source: destination, target: target, fstype: nil, data: nil, flags: 0, isDirectory: false)
    }
}

/// Everything the launcher needs to start one process, as Swift values.
/// ``withUnsafePlan(_:)`` lays it out in C memory for the duration of a call.
struct LaunchPlan: Sendable {
    var executables: [String]
    var arguments: [String]
    var environment: [String]
    var workingDirectory: String?
    var cloneFlags: UInt64
    var cgroupDescriptor: Int32 = -1
    var cgroupTasksDescriptors: [Int32] = []
    var uidMap: String?
    var gidMap: String?
    /// The maps are the caller's own IDs, written with setgroups denied.
    var deniesSetgroups = false
    /// A user namespace to start in (the other namespaces are made in it),
    /// or -1 for a new one with `uidMap` and `gidMap`.
    var userNamespaceDescriptor: Int32 = -1
    /// A user-mode network stack the parent attaches to the new namespaces
    /// (the child's pid is appended to these arguments).
    var networkHelper: [String]?
    var hostname: String?
    /// Written to the child's `oom_score_adj` by the parent.
    var oomScoreAdjustment: Int?
    var rootfs: String
    var overlayOptions: String?
    /// A detached mount to put at `rootfs` instead of the overlay, or -1.
    var rootfsMountDescriptor: Int32 = -1
    var mounts: [PlannedMount] = []
    var maskedPaths: [String] = []
    var readonlyPaths: [String] = []
    var readonlyRootfs = false
    var sysctls: [(path: String, value: String)] = []
    var rlimits: [(resource: Int32, soft: UInt64, hard: UInt64)] = []
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var groups: [UInt32] = []
    var capabilities = CapabilitySets.none
    var noNewPrivileges = true
    var seccompFilter: [UInt8]?
    var stdin: Int32
    var stdout: Int32
    var stderr: Int32
    var controllingTerminal = false
    var consoleSocket: Int32 = -1
    var parentDeathSignal: Int32 = 0
    var initProcess = false
    /// With `initProcess`: forward only the signals the program handles, as
    /// the kernel lets through to a namespace's first process (the init is
    /// there for the exit record only, not asked for).
    var initKeepsFirstProcessSignals = false
    /// With `initProcess`: where the init writes the program's end (see
    /// ``ExitRecord``), or -1.
    var exitRecord: Int32 = -1
    /// With `initProcess`: the output pipes the init copies to log files,
    /// each with its files (the current one first), rotated at `logMaxSize`.
    var relays: [(pipe: Int32, files: [Int32])] = []
    var logMaxSize: UInt64 = 0
    var joinPidfd: Int32 = -1
    var joinNamespaces: UInt64 = 0
    /// Namespace files to start in (descriptors, with their CLONE_NEW* types).
    var namespaceFiles: [(descriptor: Int32, type: UInt64)] = []

    /// Calls `body` with a C plan whose memory lives until `body` returns.
    func withUnsafePlan<T>(_ body: (UnsafePointer<gantry_launch_plan>) throws -> T) rethrows -> T {
        let arena = CArena()
        defer { arena.free() }
        var plan = gantry_launch_plan()
        plan.executables = arena.strings(self.executables)
        plan.executable_count = self.executables.count
        plan.argv = arena.nullTerminated(arguments)
        plan.envp = arena.nullTerminated(environment)
        plan.cwd = arena.string(workingDirectory)
        plan.clone_flags = cloneFlags
        plan.cgroup_fd = cgroupDescriptor
        plan.cgroup_tasks_fds = arena.array(cgroupTasksDescriptors)
        plan.cgroup_tasks_count = cgroupTasksDescriptors.count
        plan.uid_map = arena.string(uidMap)
        plan.gid_map = arena.string(gidMap)
        plan.deny_setgroups = deniesSetgroups ? 1 : 0
        plan.user_namespace_fd = userNamespaceDescriptor
        plan.network_helper = networkHelper.flatMap { arena.nullTerminated($0) }
        plan.hostname = arena.string(hostname)
        plan.oom_score_adj = arena.string(oomScoreAdjustment.map { "\($0)" })
        plan.rootfs = arena.string(rootfs)
        plan.overlay_options = arena.string(overlayOptions)
        plan.rootfs_mount_fd = rootfsMountDescriptor
        plan.mounts = arena.array(mounts.map { mount in
            gantry_mount(kind: mount.kind.rawValue, source: arena.string(mount.source), target: arena.string(mount.target),
                         fstype: arena.string(mount.fstype), data: arena.string(mount.data), flags: mount.flags,
                         directory: mount.isDirectory ? 1 : 0)
        })
        plan.mount_count = mounts.count
        plan.masked_paths = arena.strings(maskedPaths)
        plan.masked_count = maskedPaths.count
        plan.readonly_paths = arena.strings(readonlyPaths)
        plan.readonly_count = readonlyPaths.count
        plan.readonly_rootfs = readonlyRootfs ? 1 : 0
        plan.sysctl_paths = arena.strings(sysctls.map(\.path))
        plan.sysctl_values = arena.strings(sysctls.map(\.value))
        plan.sysctl_count = sysctls.count
        plan.rlimits = arena.array(rlimits.map { gantry_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) })
        plan.rlimit_count = rlimits.count
        plan.uid = uid
        plan.gid = gid
        plan.groups = arena.array(groups)
        plan.group_count = groups.count
        plan.cap_bounding = capabilities.bounding
        plan.cap_effective = capabilities.effective
        plan.cap_permitted = capabilities.permitted
        plan.cap_inheritable = capabilities.inheritable
        plan.cap_ambient = capabilities.ambient
        plan.no_new_privs = noNewPrivileges ? 1 : 0
        if let seccompFilter {
            plan.seccomp_filter = UnsafeRawPointer(arena.array(seccompFilter))
            plan.seccomp_filter_length = seccompFilter.count / 8
        }
        plan.stdin_fd = stdin
        plan.stdout_fd = stdout
        plan.stderr_fd = stderr
        plan.controlling_terminal = controllingTerminal ? 1 : 0
        plan.console_socket = consoleSocket
        plan.parent_death_signal = parentDeathSignal
        plan.`init` = initProcess ? (initKeepsFirstProcessSignals ? 2 : 1) : 0
        plan.exit_record_fd = exitRecord
        plan.relay_fds = arena.array(relays.map(\.pipe))
        plan.relay_count = relays.count
        plan.log_fds = arena.array(relays.flatMap(\.files))
        plan.log_file_count = relays.first?.files.count ?? 0
        plan.log_max_size = logMaxSize
        plan.join_pidfd = joinPidfd
        plan.join_namespaces = joinNamespaces
        plan.namespace_fds = arena.array(namespaceFiles.map(\.descriptor))
        plan.namespace_types = arena.array(namespaceFiles.map(\.type))
        plan.namespace_count = namespaceFiles.count
        return try withUnsafePointer(to: &plan) { try body($0) }
    }
}

/// The capability sets a process gets, as bit masks of capability numbers.
struct CapabilitySets: Hashable, Sendable {
    var bounding: UInt64
    var effective: UInt64
    var permitted: UInt64
    var inheritable: UInt64
    var ambient: UInt64

    static let none = CapabilitySets(bounding: 0, effective: 0, permitted: 0, inheritable: 0, ambient: 0)

    /// The sets of a container process holding `mask`, as Docker sets them:
    /// bounding, effective and permitted; never inheritable or ambient, so a
    /// program run as another user than root starts with none.
    static func container(_ mask: UInt64) -> CapabilitySets {
        CapabilitySets(bounding: mask, effective: mask, permitted: mask, inheritable: 0, ambient: 0)
    }
}

/// C memory for one launch plan, freed all at once.
private final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ value: String?) -> UnsafePointer<CChar>? {
        guard let value else { return nil }
        let bytes = Array(value.utf8CString)
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        pointer.initialize(from: bytes, count: bytes.count)
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    func string(_ value: String) -> UnsafePointer<CChar> {
        string(Optional(value)).unsafelyUnwrapped
    }

    func array<Element>(_ values: [Element]) -> UnsafePointer<Element>? {
        mutableArray(values).map { UnsafePointer($0) }
    }

    func mutableArray<Element>(_ values: [Element]) -> UnsafeMutablePointer<Element>? {
        guard !values.isEmpty else { return nil }
        let pointer = UnsafeMutablePointer<Element>.allocate(capacity: values.count)
        pointer.initialize(from: values, count: values.count)
        allocations.append(UnsafeMutableRawPointer(pointer))
        return pointer
    }

    /// An array of C strings (not terminated).
    func strings(_ values: [String]) -> UnsafePointer<UnsafePointer<CChar>?>? {
        array(values.map { string($0) as UnsafePointer<CChar>? })
    }

    /// A NULL-terminated array of C strings, as argv and envp.
    func nullTerminated(_ values: [String]) -> UnsafePointer<UnsafeMutablePointer<CChar>?>? {
        let pointers: [UnsafeMutablePointer<CChar>?] = values.map { UnsafeMutablePointer(mutating: string($0)) } + [nil]
        return array(pointers)
    }

    func free() {
        allocations.forEach { $0.deallocate() }
        allocations.removeAll()
    }
}
