import CGantryLauncher
import Foundation
import OCIImage
#if canImport(Glibc)
import Glibc
#endif

/// What `create` works out once, so that `start` only launches.
struct PreparedLaunch: Sendable {
    var plan: LaunchPlan
    var seccompKey: String?
}

extension ContainerRuntime {
    /// The process a spec runs: the image's configuration with the spec's overrides.
    static func resolveProcess(_ spec: ContainerSpec, image: RunConfiguration, users: UserDatabase, hostname: String) throws -> ResolvedProcess {
        let entrypoint = spec.entrypoint ?? image.entrypoint ?? []
        // Docker drops the image's command when the entrypoint is replaced.
        let command = spec.command ?? (spec.entrypoint == nil ? image.cmd ?? [] : [])
        let arguments = entrypoint + command
        guard let program = arguments.first, !program.isEmpty else {
            throw RuntimeError(.invalidSpec, "no command to run: neither the spec nor the image names one")
        }
        let user = try users.resolve(spec.user ?? image.user)
        var environment: [(String, String)] = []
        func set(_ pair: String) throws {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw RuntimeError(.invalidSpec, "environment entry \"\(pair)\" is not KEY=VALUE")
            }
            let key = String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            if let index = environment.firstIndex(where: { $0.0 == key }) {
                environment[index].1 = value
            } else {
                environment.append((key, value))
            }
        }
        try set(ContainerDefaults.path)
        try set("HOSTNAME=" + hostname)
        try set("HOME=" + user.home)
        if spec.terminal { try set("TERM=xterm") }
        for pair in image.env ?? [] { try set(pair) }
        for pair in spec.environment { try set(pair) }
        let workingDirectory = spec.workingDirectory ?? image.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        guard workingDirectory.hasPrefix("/") else {
            throw RuntimeError(.invalidSpec, "working directory \"\(workingDirectory)\" is not an absolute path")
        }
        return ResolvedProcess(arguments: arguments, environment: environment.map { "\($0.0)=\($0.1)" },
                               workingDirectory: workingDirectory, uid: user.uid, gid: user.gid,
                               groups: user.groups + spec.supplementaryGroups)
    }

    /// Where `execve` looks for the program: itself if it has a slash,
    /// otherwise each directory of the container's PATH.
    static func executableCandidates(_ program: String, environment: [String]) -> [String] {
        if program.contains("/") { return [program] }
        let path = environment.last { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? ""
        let directories = path.split(separator: ":").map(String.init).filter { $0.hasPrefix("/") }
        return (directories.isEmpty ? ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] : directories)
            .map { $0 + "/" + program }
    }

    /// The capability mask a spec grants: Docker's defaults, minus the
    /// dropped, plus the added (so `--cap-drop ALL --cap-add X` keeps X).
    static func capabilities(_ spec: ContainerSpec) throws -> Set<Capability> {
        let dropped = try Capability.parse(spec.capabilitiesDropped)
        let added = try Capability.parse(spec.capabilitiesAdded)
        return (spec.privileged ? Capability.held : Capability.dockerDefault).subtracting(dropped).union(added)
    }

    /// The kernel parameters a spec may set: those of namespaces it owns.
    static func sysctls(_ spec: ContainerSpec) throws -> [(path: String, value: String)] {
        try spec.sysctls.sorted { $0.key < $1.key }.map { key, value in
            let ipc = key.hasPrefix("kernel.shm") || key.hasPrefix("kernel.msg") || key == "kernel.sem" || key.hasPrefix("fs.mqueue.")
            let uts = key == "kernel.hostname" || key == "kernel.domainname"
            // A pod's members share one network namespace: none may tune it alone.
            let net = key.hasPrefix("net.") && spec.network != .host && spec.pod == nil
            let owned = (ipc && spec.namespaces.contains(.ipc)) || (uts && spec.namespaces.contains(.uts))
                || (net && spec.namespaces.contains(.network))
            guard owned else {
                throw RuntimeError(.invalidSpec, "sysctl \(key) is not namespaced by the container's own namespaces; it would change the host")
            }
            guard !key.contains(".."), !key.contains("/"), !value.contains("\n") else {
                throw RuntimeError(.invalidSpec, "sysctl \(key)=\(value) is malformed")
            }
            return ("/proc/sys/" + key.replacingOccurrences(of: ".", with: "/"), value)
        }
    }

    /// Resource limits by `ulimit` name, clamped to what this process may
    /// set: nothing can raise a hard limit without CAP_SYS_RESOURCE.
    static func resourceLimits(_ spec: ContainerSpec) throws -> [(resource: Int32, soft: UInt64, hard: UInt64)] {
        let names: [String: Int32] = [
            "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7, "memlock": 8, "as": 9,
            "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14, "rttime": 15,
        ]
        return try spec.resourceLimits.map { limit in
            guard let resource = names[limit.name.lowercased().replacingOccurrences(of: "rlimit_", with: "")] else {
                throw RuntimeError(.invalidSpec, "unknown resource limit \(limit.name); expected one of \(names.keys.sorted().joined(separator: ", "))")
            }
            guard limit.soft <= limit.hard else {
                throw RuntimeError(.invalidSpec, "resource limit \(limit.name): soft \(limit.soft) is above hard \(limit.hard)")
            }
            var current = rlimit()
            getrlimit(__rlimit_resource_t(UInt32(resource)), &current)
            let ceiling = UInt64(current.rlim_max)
            return (resource, min(limit.soft, ceiling), min(limit.hard, ceiling))
        }
    }

    /// The mounts of a container: the standard ones, the devices it is
    /// given, then the spec's.
    static func mounts(_ spec: ContainerSpec, volumes: Volumes) throws -> [PlannedMount] {
        var mounts = ContainerDefaults.mounts(ownNetwork: ownsNetworkNamespace(spec), writableSys: spec.privileged, shmSize: spec.shmSize)
        if spec.privileged, !spec.namespaces.contains(.user) {
            let given = Set(spec.devices.map(\.containerPath))
            for node in hostDevices() where !given.contains(node) { mounts.append(.device(node, at: node)) }
        }
        for device in try devices(spec) { mounts.append(.device(device.source, at: device.target)) }
        for mount in try orderedMounts(spec.mounts) {
            switch mount {
            case .bind(let source, let target, let readOnly, let propagation):
                var info = stat()
                guard stat(source, &info) == 0 else {
                    throw RuntimeError(.invalidSpec, "bind mount source \(source) does not exist", underlying: Sys.errno)
                }
                // nodev: a device node the container makes there (it holds
                // CAP_MKNOD) must not open the host's devices.
                let flags = (readOnly ? ContainerDefaults.rdonly : 0) | ContainerDefaults.nodev | propagationFlags(propagation ?? .rprivate)
                mounts.append(.bind(source, at: target, flags: flags, directory: (info.st_mode & S_IFMT) == S_IFDIR))
            case .volume(let name, let target, let readOnly):
                let flags = (readOnly ? ContainerDefaults.rdonly : 0) | ContainerDefaults.nodev | propagationFlags(.rprivate)
                mounts.append(.bind(try volumes.dataDirectory(name), at: target, flags: flags, directory: true))
            case .tmpfs(let target, let size, let mode):
                var data = "mode=" + String(mode, radix: 8)
                if let size { data += ",size=\(size)" }
                mounts.append(.filesystem("tmpfs", at: target, source: "tmpfs",
                                          flags: ContainerDefaults.nosuid | ContainerDefaults.nodev, data: data))
            }
        }
        return mounts
    }

    /// The devices a container is given: each host node checked to be a
    /// device, with the allow-list entry that lets the container use it.
    static func devices(_ spec: ContainerSpec) throws -> [(source: String, target: String, rule: DeviceRule)] {
        try spec.devices.map { device in
            for path in [device.hostPath, device.containerPath] where !path.hasPrefix("/") || path.split(separator: "/").contains("..") {
                throw RuntimeError(.invalidSpec, "device path \(path) is not an absolute path without ..")
            }
            var info = stat()
            guard stat(device.hostPath, &info) == 0 else {
                throw RuntimeError(.invalidSpec, "device \(device.hostPath) does not exist on this host", underlying: Sys.errno)
            }
            let kind: DeviceRule.Kind
            switch info.st_mode & S_IFMT {
            case S_IFCHR: kind = .character
            case S_IFBLK: kind = .block
            default: throw RuntimeError(.invalidSpec, "\(device.hostPath) is not a device node (a character or block device)")
            }
            let (major, minor) = DeviceRule.numbers(of: UInt64(info.st_rdev))
            return (device.hostPath, device.containerPath, DeviceRule(kind, major: major, minor: minor, access: device.access))
        }
    }

    /// Every device a container may use: the defaults, the spec's entries
    /// and the devices it is given.
    static func deviceAllowList(_ spec: ContainerSpec) throws -> [DeviceRule] {
        if spec.privileged { return [DeviceRule(.all, major: nil, minor: nil)] }
        return DeviceRule.defaults + spec.deviceRules + (try devices(spec)).map(\.rule)
    }

    /// The host's device nodes under /dev that a privileged container is
    /// given, but for those its /dev has of its own (the standard nodes,
    /// pseudo-terminals, shared memory, message queues).
    static func hostDevices() -> [String] {
        let standard: Set<String> = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/console"]
        let skipped = ["/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/.", "/dev/hugepages"]
        var found: [String] = []
        var pending = ["/dev"]
        while let directory = pending.popLast(), found.count < 4096 {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() {
                let path = directory + "/" + name
                guard !skipped.contains(where: { path.hasPrefix($0) }), !standard.contains(path) else { continue }
                var info = stat()
                guard lstat(path, &info) == 0 else { continue }
                switch info.st_mode & S_IFMT {
                case S_IFDIR: pending.append(path)
                case S_IFCHR, S_IFBLK: found.append(path)
                default: continue
                }
            }
        }
        return found.sorted()
    }

    /// The spec's mounts, checked and in the order they are made: parents
    /// before what they contain (`/data` before `/data/cache`), however they
    /// were given, so that no mount hides another; otherwise as given.
    static func orderedMounts(_ mounts: [ContainerSpec.Mount]) throws -> [ContainerSpec.Mount] {
        var seen: Set<String> = []
        var ordered: [(depth: Int, index: Int, mount: ContainerSpec.Mount)] = []
        for (index, mount) in mounts.enumerated() {
            let components = mount.target.split(separator: "/").filter { $0 != "." }
            guard mount.target.hasPrefix("/"), !components.contains("..") else {
                throw RuntimeError(.invalidSpec, "mount target \"\(mount.target)\" is not an absolute path without ..")
            }
            guard !components.isEmpty else {
                throw RuntimeError(.invalidSpec, "a mount on / would cover the container's root file system; give the root as the spec's root instead")
            }
            let target = "/" + components.joined(separator: "/")
            guard seen.insert(target).inserted else { throw RuntimeError(.invalidSpec, "two mounts have the target \(target)") }
            if components[0] == "proc" {
                // The container's own procfs is mounted there; only single
                // files some tools replace (as LXCFS does) may cover its own.
                guard components.count > 1, ContainerDefaults.replaceableProcFiles.contains(target) else {
                    throw RuntimeError(.invalidSpec, "mount target \(target) is in /proc, the container's own procfs; only \(ContainerDefaults.replaceableProcFiles.sorted().joined(separator: ", ")) may be replaced")
                }
            }
            ordered.append((components.count, index, mount))
        }
        return ordered.sorted { ($0.depth, $0.index) < ($1.depth, $1.index) }.map(\.mount)
    }

    static func propagationFlags(_ propagation: ContainerSpec.MountPropagation) -> UInt {
        switch propagation {
        case .private: UInt(MS_PRIVATE)
        case .rprivate: UInt(MS_PRIVATE) | UInt(MS_REC)
        case .slave: UInt(MS_SLAVE)
        case .rslave: UInt(MS_SLAVE) | UInt(MS_REC)
        }
    }

    /// Whether the container's network namespace is one it may mount a
    /// fresh sysfs for: its own, and owned by its user namespace (a bridge
    /// network's namespace belongs to the host's).
    static func ownsNetworkNamespace(_ spec: ContainerSpec) -> Bool {
        if spec.pod != nil { return !spec.namespaces.contains(.user) }
        return switch spec.network {
        case .host, .container: false
        case .none: spec.namespaces.contains(.network)
        case .bridge: !spec.namespaces.contains(.user)
        }
    }

    /// The namespaces the container's first process is cloned into: the
    /// spec's, less those it joins (made beforehand for it or its pod) and
    /// the network namespace when it uses the host's.
    static func cloneFlags(_ spec: ContainerSpec, joining files: [(path: String, type: UInt64)]) -> UInt64 {
        var flags = spec.namespaces.rawValue
        if spec.network == .host || (spec.network != .none && !spec.namespaces.contains(.user)) { flags &= ~GANTRY_CLONE_NEWNET }
        for file in files { flags &= ~file.type }
        return flags
    }

    /// The namespace files the container's first process starts in: its
    /// pod's, or the network namespace made for its bridge network.
    func namespaceFiles(_ record: ContainerRecord) throws -> [(path: String, type: UInt64)] {
        if let pod = record.spec.pod { return pods.namespaceFiles(try pods.pod(pod)) }
        if case .container(let other) = record.spec.network {
            let target = try sharedNetworkHolder(of: record)
            guard target.status == .running, let pid = target.pid else {
                throw RuntimeError(.invalidState, "container \(record.name) joins the network of container \(other), which is not running")
            }
            return [("/proc/\(pid)/ns/net", GANTRY_CLONE_NEWNET)]
        }
        // An ordinary user's container on the default network makes its
        // own, which pasta joins.
        if let attachment = record.network, !attachment.isUserMode {
            return [(networks.host.namespaceFile(containerDirectory(record.id) + "/netns"), GANTRY_CLONE_NEWNET)]
        }
        return []
    }

    /// The record of the container whose network namespace `record`'s
    /// container joins (``ContainerSpec/NetworkMode/container(_:)``).
    func sharedNetworkHolder(of record: ContainerRecord) throws -> ContainerRecord {
        guard case .container(let other) = record.spec.network else {
            throw RuntimeError(.invalidState, "container \(record.name) joins no other container's network")
        }
        do {
            return try container(other).record
        } catch let error as RuntimeError where error.code == .notFound {
            throw RuntimeError(.notFound, "container \(record.name) joins the network of container \(other), which does not exist")
        }
    }

    /// `inside outside size` lines for uid_map and gid_map.
    static func idMap(_ mappings: [ContainerSpec.IDMapping]) -> String? {
        mappings.isEmpty ? nil : mappings.map { "\($0.containerID) \($0.hostID) \($0.size)\n" }.joined()
    }
}
