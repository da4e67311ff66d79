#if canImport(Glibc)
import Glibc
#endif

/// Everything about a container to create: what runs, from which root
/// file system, with which limits and isolation. A value type; the
/// modifiers return a changed copy:
///
/// ```swift
/// let spec = ContainerSpec(image: "busybox", command: ["sh", "-c", "echo hi"])
///     .resources(cpus: 0.5, memory: 64 << 20, pids: 64)
///     .readOnlyRootfs()
///     .timeout(.seconds(30))
/// ```
public struct ContainerSpec: Hashable, Sendable, Codable {
    /// Where the root file system comes from.
    public enum Root: Hashable, Sendable, Codable {
        /// An image in the store, by name or digest: each container gets an
        /// overlay of the image's layer snapshots with its own upper layer.
        case image(String)
        /// A directory used as it is (bind-mounted; writes land in it).
        case directory(String)
    }

    /// Which seccomp filter the container's processes run under.
    public enum Seccomp: Hashable, Sendable, Codable {
        /// Docker's default profile (``SeccompProfile/default``).
        case `default`
        /// No filter.
        case unconfined
        /// A profile of one's own, in Docker's JSON format.
        case profile(SeccompProfile)
    }

    /// A mount besides the standard ones.
    public enum Mount: Hashable, Sendable, Codable {
        /// A host path bound into the container; `propagation` says whether
        /// mounts the host makes under it later appear in the container.
        case bind(source: String, target: String, readOnly: Bool = false, propagation: MountPropagation? = nil)
        /// A named volume of the state root, created when missing. A new
        /// (empty) volume is first filled with what the image has at
        /// `target`, as Docker does.
        case volume(name: String, target: String, readOnly: Bool = false)
        /// A fresh tmpfs, `size` bytes at most (nil: half the memory).
        case tmpfs(target: String, size: Int64? = nil, mode: UInt32 = 0o1777)

        /// The path inside the container.
        public var target: String {
            switch self {
            case .bind(_, let target, _, _), .volume(_, let target, _), .tmpfs(let target, _, _): target
            }
        }
    }

    /// How mount events under a bind mount travel (mount_namespaces(7)).
    /// Nothing the container mounts ever reaches the host: shared
    /// propagation is not offered.
    public enum MountPropagation: String, Hashable, Sendable, Codable, CaseIterable {
        /// The bound mount alone, cut off from the host's later mounts.
        case `private`
        /// The bound mount and every mount under it, cut off (the default).
        case rprivate
        /// The host's later mounts on the bound mount appear in the container.
        case slave
        /// The same for the bound mount and every mount under it.
        case rslave
    }

    /// How the container reaches the network.
    public enum NetworkMode: Hashable, Sendable, Codable, CustomStringConvertible {
        /// A network namespace of its own with only a loopback device, up:
        /// nothing goes in or out. The default, for sandboxes.
        case none
        /// The host's network namespace: the host's devices and ports.
        case host
        /// A bridge network of the state root, by name: an address on it,
        /// its members by name, and (unless internal) a route out.
        case bridge(String)
        /// The network namespace of another container, by name or ID,
        /// which must be running when this one starts: its devices,
        /// addresses and published ports, and its `hosts` and
        /// `resolv.conf` (Docker's `--network container:NAME`). When that
        /// container ends, this one's network goes with it.
        case container(String)

        public var description: String {
            switch self {
            case .none: "none"
            case .host: "host"
            case .bridge(let name): name
            case .container(let name): "container:" + name
            }
        }
    }

    /// The address in ``extraHosts`` that stands for the gateway of the
    /// container's network: the host, as seen from the container.
    public static let hostGateway = "host-gateway"

    /// A bridge network a container is on besides its first, and the
    /// names it answers to there besides its own.
    public struct NetworkMembership: Hashable, Sendable, Codable {
        /// The network's name.
        public var network: String
        /// Names it answers to on that network besides its name.
        public var aliases: [String]

        /// On `network`, answering to `aliases` there besides its name.
        public init(_ network: String, aliases: [String] = []) {
            self.network = network
            self.aliases = aliases
        }
    }

    /// A range of IDs mapped into a user namespace.
    public typealias IDMapping = GantryCore.IDMapping

    /// A resource limit of the process (setrlimit(2)).
    public struct ResourceLimit: Hashable, Sendable, Codable {
        /// The name as in `ulimit`/Docker: `nofile`, `nproc`, `core`, `stack`, …
        public var name: String
        public var soft: UInt64
        public var hard: UInt64

        public init(_ name: String, soft: UInt64, hard: UInt64) {
            self.name = name
            self.soft = soft
            self.hard = hard
        }
    }

    /// What happens to the container when the process that created it ends.
    public enum Lifetime: String, Hashable, Sendable, Codable {
        /// It is killed with the host process, and the next open of the
        /// state root removes what is left of it.
        case boundToHost
        /// It keeps running; the next open of the state root adopts it
        /// (recognised by pid and start time).
        case independent
    }

    /// Limits on the container's output log.
    public struct LogOptions: Hashable, Sendable, Codable {
        /// The largest a log file grows before it is rotated.
        public var maxSize: Int64
        /// How many files are kept, the current one included.
        public var maxFiles: Int

        public init(maxSize: Int64 = 10 << 20, maxFiles: Int = 2) {
            self.maxSize = maxSize
            self.maxFiles = maxFiles
        }
    }

    /// The root file system.
    public var root: Root
    /// A unique name; a random one is chosen when `nil`.
    public var name: String?
    /// Replaces the image's entrypoint.
    public var entrypoint: [String]?
    /// Replaces the image's command (the arguments after the entrypoint).
    public var command: [String]?
    /// Variables set over the image's (`KEY=VALUE`, later wins).
    public var environment: [String]
    /// The working directory; the image's, or `/`.
    public var workingDirectory: String?
    /// `uid[:gid]` or `name[:group]` from the image's `/etc/passwd` and
    /// `/etc/group`; the image's user, or root.
    public var user: String?
    /// Extra group IDs.
    public var supplementaryGroups: [UInt32]
    /// The host name (with a UTS namespace); the container's short ID when `nil`.
    public var hostname: String?
    /// cgroup limits.
    public var resources: ResourceLimits
    /// Process resource limits, clamped to what the host allows.
    public var resourceLimits: [ResourceLimit]
    /// Capabilities added to Docker's default set.
    public var capabilitiesAdded: [String]
    /// Capabilities removed from it (`ALL` removes every one).
    public var capabilitiesDropped: [String]
    /// Whether `no_new_privs` is set (so set-user-ID programs gain nothing).
    public var noNewPrivileges: Bool
    /// The seccomp filter.
    public var seccomp: Seccomp
    /// Whether the root file system is mounted read-only.
    public var readOnlyRootfs: Bool
    /// Extra mounts.
    public var mounts: [Mount]
    /// The network it is on.
    public var network: NetworkMode
    /// Names it answers to on its network besides its name.
    public var networkAliases: [String]
    /// Host names and addresses added to its `hosts` file on a bridge
    /// network (Docker's `--add-host`), as `name` → address; the address
    /// ``hostGateway`` stands for the network's gateway, the host.
    public var extraHosts: [String: String]
    /// The size of `/dev/shm` in bytes; `nil`: 64 MiB.
    public var shmSize: Int64?
    /// Other bridge networks it is on besides ``network`` (which must be a
    /// bridge network), each with the names it answers to there: a device
    /// each in its network namespace (`eth1`, `eth2`, …), an address and
    /// its name on each, and its route out through ``network`` alone.
    /// Ports are published through ``network``.
    public var additionalNetworks: [NetworkMembership]
    /// Its ports reachable on the host's addresses (bridge networks only).
    public var publishedPorts: [PublishedPort]
    /// The pod it belongs to: it starts in the pod's network namespace (and
    /// IPC and UTS ones, as the pod shares them), instead of its own.
    public var pod: String?
    /// The namespaces the container gets of its own.
    public var namespaces: Namespaces
    /// With a user namespace: the UID and GID mappings.
    public var uidMappings: [IDMapping]
    public var gidMappings: [IDMapping]
    /// Kernel parameters under `/proc/sys` (namespaced ones only, as `net.ipv4.ip_forward`).
    public var sysctls: [String: String]
    /// Runs a tiny init as PID 1 that reaps zombies and forwards signals.
    public var initProcess: Bool
    /// Kills the container after this long.
    public var timeout: Duration?
    /// The signal ``Container/stop(grace:)`` sends first.
    public var stopSignal: Signal
    /// How long ``Container/stop(grace:)`` waits before SIGKILL.
    public var stopGracePeriod: Duration
    /// Free-form labels.
    public var labels: [String: String]
    /// What happens when the host process ends.
    public var lifetime: Lifetime
    /// Whether the container reads a stdin the caller writes to.
    public var openStdin: Bool
    /// Whether the container runs on a pseudo-terminal.
    public var terminal: Bool
    /// Output log limits.
    public var log: LogOptions
    /// The `oom_score_adj` of the container's processes (−1000…1000), or
    /// `nil` to inherit the host process's. Without CAP_SYS_RESOURCE the
    /// kernel refuses values below the host's own; the container then keeps
    /// the host's value.
    public var oomScoreAdjustment: Int?
    /// Devices of the host given to the container, each added to its
    /// device allow list.
    public var devices: [Device]
    /// Entries added to the device allow list, which otherwise holds
    /// ``DeviceRule/defaults`` and the ``devices``.
    public var deviceRules: [DeviceRule]
    /// Whether the container runs privileged, as Docker's `--privileged`
    /// does: every capability but those dropped, no seccomp filter unless a
    /// profile of its own is given, nothing of /proc masked or read-only,
    /// /sys writable, and (for root's containers outside a user namespace)
    /// every device of the host's /dev, with an allow list that allows all.
    /// Only for what needs the host's hardware or kernel: it is no sandbox.
    public var privileged: Bool
    /// Secrets given as files on a tmpfs or as variables; their values are
    /// written nowhere but memory.
    public var secrets: [Secret]
    /// Configuration files given read-only.
    public var configs: [Config]

    /// A container from `image` running `command` (or the image's command).
    public init(image: String, command: [String]? = nil) {
        self.init(root: .image(image), command: command)
    }

    /// A container from a root file system.
    public init(root: Root, command: [String]? = nil) {
        self.root = root
        self.command = command
        environment = []
        supplementaryGroups = []
        resources = ResourceLimits()
        resourceLimits = []
        capabilitiesAdded = []
        capabilitiesDropped = []
        noNewPrivileges = true
        seccomp = .default
        readOnlyRootfs = false
        mounts = []
        network = .none
        networkAliases = []
        extraHosts = [:]
        additionalNetworks = []
        publishedPorts = []
        namespaces = .isolated
        uidMappings = []
        gidMappings = []
        sysctls = [:]
        initProcess = false
        stopSignal = .terminate
        stopGracePeriod = .seconds(10)
        labels = [:]
        lifetime = .boundToHost
        openStdin = false
        terminal = false
        log = LogOptions()
        devices = []
        deviceRules = []
        privileged = false
        secrets = []
        configs = []
    }

    /// With CPU, memory and pids limits (`cpus` CPUs' worth of time per period).
    public func resources(cpus: Double? = nil, memory: Int64? = nil, pids: Int64? = nil) -> ContainerSpec {
        var copy = self
        if let cpus {
            let (quota, period) = ResourceLimits.quota(cpus: cpus)
            copy.resources.cpuQuota = quota
            copy.resources.cpuPeriod = period
        }
        if let memory { copy.resources.memory = memory }
        if let pids { copy.resources.pids = pids }
        return copy
    }

    /// A copy with `value` at `field`: what the one-field modifiers do.
    private func with<Value>(_ field: WritableKeyPath<ContainerSpec, Value>, _ value: Value) -> ContainerSpec {
        var copy = self
        copy[keyPath: field] = value
        return copy
    }

    /// With a read-only root file system.
    public func readOnlyRootfs(_ readOnly: Bool = true) -> ContainerSpec {
        with(\.readOnlyRootfs, readOnly)
    }

    /// Killed after `duration`.
    public func timeout(_ duration: Duration) -> ContainerSpec {
        with(\.timeout, duration)
    }

    /// With a tiny init as PID 1 that reaps zombies and forwards signals.
    public func initProcess(_ enabled: Bool = true) -> ContainerSpec {
        with(\.initProcess, enabled)
    }

    /// Stopped with `signal`, then SIGKILL after `grace`.
    public func stopping(signal: Signal = .terminate, grace: Duration) -> ContainerSpec {
        var copy = self
        copy.stopSignal = signal
        copy.stopGracePeriod = grace
        return copy
    }

    /// Reading a stdin the caller writes to (``Container/write(_:)``).
    public func openStdin(_ open: Bool = true) -> ContainerSpec {
        with(\.openStdin, open)
    }

    /// On a pseudo-terminal.
    public func terminal(_ enabled: Bool = true) -> ContainerSpec {
        with(\.terminal, enabled)
    }

    /// Running as `user` (`uid[:gid]` or `name[:group]`).
    public func user(_ user: String) -> ContainerSpec {
        with(\.user, user)
    }

    /// Starting in `directory`.
    public func workingDirectory(_ directory: String) -> ContainerSpec {
        with(\.workingDirectory, directory)
    }

    /// With the host name `hostname`.
    public func hostname(_ hostname: String) -> ContainerSpec {
        with(\.hostname, hostname)
    }

    /// With these labels added.
    public func labeled(_ labels: [String: String]) -> ContainerSpec {
        var copy = self
        copy.labels.merge(labels) { $1 }
        return copy
    }

    /// Living as `lifetime` says when the host process ends.
    public func lifetime(_ lifetime: Lifetime) -> ContainerSpec {
        with(\.lifetime, lifetime)
    }

    /// With the capabilities `added` and without the `dropped` ones (`ALL` drops every one).
    public func capabilities(adding added: [String] = [], dropping dropped: [String] = []) -> ContainerSpec {
        var copy = self
        copy.capabilitiesAdded += added
        copy.capabilitiesDropped += dropped
        return copy
    }

    /// With these environment variables added.
    public func environment(_ variables: [String: String]) -> ContainerSpec {
        var copy = self
        copy.environment += variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return copy
    }

    /// On `network`, answering to `aliases` there besides its name.
    public func network(_ network: NetworkMode, aliases: [String] = []) -> ContainerSpec {
        var copy = self
        copy.network = network
        copy.networkAliases = aliases
        return copy
    }

    /// With `mounts` added.
    public func mounting(_ mounts: Mount...) -> ContainerSpec {
        var copy = self
        copy.mounts += mounts
        return copy
    }

    /// In the pod named `pod`.
    public func inPod(_ pod: String) -> ContainerSpec {
        with(\.pod, pod)
    }

    /// With `ports` published on the host. A container on no network (the
    /// default) and in no pod joins the default bridge network
    /// (``Networks/defaultName``), as `gantry run -p` does; one put on
    /// another network afterwards takes the ports with it.
    public func publishing(_ ports: PublishedPort...) -> ContainerSpec {
        var copy = self
        copy.publishedPorts += ports
        if copy.network == .none, copy.pod == nil, !ports.isEmpty { copy.network = .bridge(Networks.defaultName) }
        return copy
    }

    /// Privileged, as Docker's `--privileged` (see ``privileged``).
    public func privileged(_ enabled: Bool = true) -> ContainerSpec {
        with(\.privileged, enabled)
    }

    /// Named `name`.
    public func named(_ name: String) -> ContainerSpec {
        with(\.name, name)
    }
}

extension ContainerSpec {
    /// Decodes a spec; a field missing from the data (a record written
    /// before the field existed) takes its default.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(root: try container.decode(Root.self, forKey: .root))
        func field<T: Decodable>(_ key: CodingKeys, _ value: inout T) throws {
            if let decoded = try container.decodeIfPresent(T.self, forKey: key) { value = decoded }
        }
        try field(.name, &name)
        try field(.entrypoint, &entrypoint)
        try field(.command, &command)
        try field(.environment, &environment)
        try field(.workingDirectory, &workingDirectory)
        try field(.user, &user)
        try field(.supplementaryGroups, &supplementaryGroups)
        try field(.hostname, &hostname)
        try field(.resources, &resources)
        try field(.resourceLimits, &resourceLimits)
        try field(.capabilitiesAdded, &capabilitiesAdded)
        try field(.capabilitiesDropped, &capabilitiesDropped)
        try field(.noNewPrivileges, &noNewPrivileges)
        try field(.seccomp, &seccomp)
        try field(.readOnlyRootfs, &readOnlyRootfs)
        try field(.mounts, &mounts)
        try field(.network, &network)
        try field(.networkAliases, &networkAliases)
        try field(.additionalNetworks, &additionalNetworks)
        try field(.extraHosts, &extraHosts)
        try field(.shmSize, &shmSize)
        try field(.publishedPorts, &publishedPorts)
        try field(.pod, &pod)
        try field(.namespaces, &namespaces)
        try field(.uidMappings, &uidMappings)
        try field(.gidMappings, &gidMappings)
        try field(.sysctls, &sysctls)
        try field(.initProcess, &initProcess)
        try field(.timeout, &timeout)
        try field(.stopSignal, &stopSignal)
        try field(.stopGracePeriod, &stopGracePeriod)
        try field(.labels, &labels)
        try field(.lifetime, &lifetime)
        try field(.openStdin, &openStdin)
        try field(.terminal, &terminal)
        try field(.log, &log)
        try field(.oomScoreAdjustment, &oomScoreAdjustment)
        try field(.devices, &devices)
        try field(.deviceRules, &deviceRules)
        try field(.privileged, &privileged)
        try field(.secrets, &secrets)
        try field(.configs, &configs)
    }
}
