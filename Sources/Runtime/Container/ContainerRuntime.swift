import CGantrySystem
import Foundation
public import Logging
public import OCIImage
import Synchronization
import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// Creates, starts and manages containers on this host, in-process: no
/// daemon and no helper process per container. State lives under the image
/// store's state root (`containers/`), so every process opening the same
/// root sees the same containers.
public final class ContainerRuntime: Sendable {
    /// The image store containers are created from.
    public let images: ImageStore
    /// The cgroup driver.
    public let cgroups: any CgroupDriver
    /// The cgroup every container's cgroup is created under (`gantry`).
    public let cgroupParent: String
    /// The bridge networks containers can be put on.
    public let networks: Networks
    /// The named volumes containers can mount.
    public let volumes: Volumes
    /// The pods containers can be put in.
    public let pods: Pods
    /// For a process that is not root: the user namespace every container
    /// runs in (the image store's `userNamespace`).
    public var userNamespace: UserNamespaceMapping? { images.userNamespace }
    /// Whether a container that asks for limits runs without them where
    /// containers can have no cgroup (``NoCgroupDriver``), rather than
    /// being refused.
    public let runsWithoutUnenforceableLimits: Bool
    let logger: Logger
    let directory: String

    /// Containers this process owns, by ID.
    let live = Mutex<[String: Container]>([:])
    /// The records this process last wrote, with the file they went to.
    let writtenRecords = Mutex<[String: (record: ContainerRecord, stamp: FileStamp, fixedJSON: Data)]>([:])
    /// The encodings of the specs containers were last made from.
    private let encodedSpecs = Mutex<[(spec: ContainerSpec, json: Data)]>([])
    /// Compiled seccomp programs, by profile and capability set.
    let seccompCache = Mutex<[String: [UInt8]]>([:])
    /// This process and its start time, recorded as each container's owner.
    let owner: (pid: Int32, startTime: UInt64)
    /// For a process that is not root with subordinate IDs: a descriptor of
    /// the user namespace its containers start in, made on first use (-1).
    let sharedUserNamespace = Mutex<Int32>(-1)
    /// Network namespaces made ahead of need in ``sharedUserNamespace``.
    let sharedUserNamespaceReserve = Mutex<NetworkNamespaceReserve?>(nil)
    /// Container directories made ahead of need.
    let spares: SpareDirectories

    /// Opens the runtime over `images`' state root. Containers left by a
    /// process that ended are cleaned up (when bound to it) or adopted,
    /// unless `leftovers` is `.leave` (see ``recoverLeftovers()``).
    ///
    /// - Parameters:
    ///   - images: the image store; its state root holds the containers too.
    ///   - cgroupParent: the cgroup path containers are created under.
    ///   - cgroups: the driver; the host's (v1, v2 or hybrid) by default.
    ///   - nameservers: where the bridge networks' embedded DNS server
    ///     forwards names that are not containers' (`IP` or `IP:port`); the
    ///     host's `/etc/resolv.conf` name servers when nil.
    ///   - leftovers: what to do with what processes that ended left behind.
    ///   - runWithoutUnenforceableLimits: for a process that is not root on
    ///     a host that delegates it no cgroup: run containers that ask for
    ///     limits without them (with a warning) instead of refusing them.
    ///   - logger: where the runtime logs.
    ///
    /// A process that is not root gets containers in a user namespace (see
    /// ``userNamespace``), and cgroups in the cgroup v2 subtree it owns
    /// around its own cgroup (`cgroupParent` is made there), or none.
    public init(images: ImageStore, cgroupParent: String = "gantry", cgroups: (any CgroupDriver)? = nil,
                nameservers: [String]? = nil, leftovers: LeftoverPolicy = .recover, runWithoutUnenforceableLimits: Bool = false,
                logger: Logger = Logger(label: "gantry.runtime")) throws {
        guard !cgroupParent.isEmpty, !cgroupParent.split(separator: "/").contains(".."), !cgroupParent.hasPrefix("/") else {
            throw RuntimeError(.invalidSpec, "cgroup parent \"\(cgroupParent)\" must be a relative path without ..")
        }
        self.images = images
        if let cgroups {
            self.cgroups = cgroups
            self.cgroupParent = cgroupParent
        } else if images.userNamespace != nil {
            (self.cgroups, self.cgroupParent) = Cgroups.rootless(parent: cgroupParent)
        } else {
            self.cgroups = try Cgroups.hostDriver()
            self.cgroupParent = cgroupParent
        }
        runsWithoutUnenforceableLimits = runWithoutUnenforceableLimits
        self.logger = logger
        directory = images.root.containers
        volumes = try Volumes(root: images.root.volumes, userNamespace: images.userNamespace, logger: logger) { [directory] name in
            Self.records(in: directory).filter { record in
                record.spec.mounts.contains { mount in
                    if case .volume(name, _, _) = mount { return true }
                    return false
                }
            }.map(\.name)
        }
        let upstreams = try nameservers.map { try $0.map(NetworkResolver.Upstream.init(parsing:)) }
        let networkHost = images.userNamespace.map { mapping in
            NetworkHost(root: images.root, logger: logger) { try mapping.makeNamespace() }
        } ?? .system
        networks = try Networks(root: images.root.networks, containers: images.root.containers, nameservers: upstreams, host: networkHost, logger: logger)
        pods = try Pods(root: images.root.pods, networks: networks, logger: logger) { [directory] name in
            Self.records(in: directory).filter { $0.spec.pod == name }.map(\.name)
        }
        let pid = getpid()
        owner = (pid, processStartTime(pid) ?? 0)
        spares = SpareDirectories(directory: directory, owner: owner)
        try Sys.makeDirectories(directory + "/names", mode: 0o700)
        try Sys.makeDirectories(removedDirectory, mode: 0o700)
        // Searchable (not listable): a container in a user namespace finds
        // its own directory, which its mapped root owns.
        chmod(directory, 0o711)
        if leftovers == .recover { recover() }
    }

    deinit {
        spares.close()
        sharedUserNamespaceReserve.withLock { $0 }?.stop()
        let fd = sharedUserNamespace.withLock { $0 }
        if fd >= 0 { close(fd) }
    }

    // MARK: - Creating

    /// Creates a container: resolves its image and process, records it,
    /// and prepares its root file system layers and cgroup. It does not run
    /// until ``Container/start()``.
    ///
    /// - Throws: ``RuntimeError`` naming what is wrong in the spec, or
    ///   `OCIImageError` when the image cannot be found or unpacked.
    public func create(_ spec: ContainerSpec) async throws -> Container {
        try await withSpan("container.create") { span in
            let container = try await performCreate(spec)
            span.attributes["gantry.container"] = container.name
            return container
        }
    }

    private func performCreate(_ spec: ContainerSpec) async throws -> Container {
        let id = Self.newID()
        var spec = spec
        let name = spec.name ?? "gantry-" + id.prefix(12)
        try Self.validate(name: name)
        guard spec.namespaces.contains(.mount) else {
            throw RuntimeError(.invalidSpec, "container \(name) needs a mount namespace of its own for its root file system")
        }
        if !spec.uidMappings.isEmpty || !spec.gidMappings.isEmpty, !spec.namespaces.contains(.user) {
            throw RuntimeError(.invalidSpec, "container \(name) has ID mappings but no user namespace")
        }
        if let userNamespace {
            try adaptToUserNamespace(&spec, name: name, userNamespace)
        } else if spec.namespaces.contains(.user), case .image(let image) = spec.root {
            // The layers are mapped into the namespace (ID-mapped mounts),
            // which must then map the container's root.
            guard UserNamespaceMapping.hostID(0, in: spec.uidMappings) != nil, UserNamespaceMapping.hostID(0, in: spec.gidMappings) != nil else {
                throw RuntimeError(.invalidSpec, "container \(name): an image root (\(image)) in a user namespace needs ID mappings that map container root 0, as 0:100000:65536 does")
            }
        }
        try spec.resources.validate()
        if spec.resources != ResourceLimits(), let none = cgroups as? NoCgroupDriver {
            let asked = "container \(name) asks for resource limits, but containers can have no cgroup here (\(none.reason))"
            guard runsWithoutUnenforceableLimits else {
                throw RuntimeError(.invalidSpec, asked + "; remove the limits, or have the runtime run such containers without them (runWithoutUnenforceableLimits; the gantry command's --ignore-unenforceable-limits)")
            }
            logger.warning("\(asked): it runs without them")
            spec.resources = ResourceLimits()
        }
        if let timeout = spec.timeout, timeout <= .zero {
            throw RuntimeError(.invalidSpec, "container \(name): the timeout \(timeout) is not above zero")
        }
        if spec.log.maxSize < 1 || spec.log.maxFiles < 1 {
            throw RuntimeError(.invalidSpec, "container \(name): logs need a size above 0 and at least one file (given \(spec.log.maxSize) bytes, \(spec.log.maxFiles) files)")
        }
        if spec.stopGracePeriod < .zero {
            throw RuntimeError(.invalidSpec, "container \(name): the stop grace period \(spec.stopGracePeriod) is negative")
        }
        if let hostname = spec.hostname {
            // The kernel's limit (HOST_NAME_MAX), and what resolvers accept.
            let allowed = hostname.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }
            guard !hostname.isEmpty, hostname.utf8.count <= 64, allowed else {
                throw RuntimeError(.invalidSpec, "container \(name): the host name \"\(hostname)\" is not 1 to 64 letters, digits, - . and _")
            }
        }
        try spec.validateProvidedFiles(name: name)
        for (host, address) in spec.extraHosts {
            try Self.validate(name: host, kind: "extra host")
            guard address == ContainerSpec.hostGateway || IPv4Address(address) != nil else {
                throw RuntimeError(.invalidSpec, "container \(name): the extra host \(host)'s address \(address) is neither an IPv4 address nor \(ContainerSpec.hostGateway)")
            }
        }
        if !spec.extraHosts.isEmpty {
            guard case .bridge(let network) = spec.network, spec.pod == nil, !(userNamespace != nil && network == Networks.defaultName) else {
                throw RuntimeError(.invalidSpec, "container \(name): extra hosts are written into the hosts file of a bridge network, and its network is \(spec.network)")
            }
        }
        if let size = spec.shmSize, size < 4096 {
            throw RuntimeError(.invalidSpec, "container \(name): a /dev/shm of \(size) bytes is below the page size")
        }
        if let score = spec.oomScoreAdjustment, !(-1000...1000).contains(score) {
            throw RuntimeError(.invalidSpec, "container \(name): the OOM score adjustment \(score) is outside -1000...1000")
        }
        if let pod = spec.pod {
            _ = try pods.pod(pod)
            guard spec.network == .none, spec.publishedPorts.isEmpty, spec.networkAliases.isEmpty, spec.additionalNetworks.isEmpty else {
                throw RuntimeError(.invalidSpec, "container \(name) is in pod \(pod), which has the network: give networks and ports to the pod")
            }
            guard spec.namespaces.contains(.network) else {
                throw RuntimeError(.invalidSpec, "container \(name) is in pod \(pod) but does not isolate its network")
            }
        } else if case .bridge(let network) = spec.network {
            guard spec.namespaces.contains(.network) else {
                throw RuntimeError(.invalidSpec, "container \(name) is to join network \(network) but has no network namespace of its own")
            }
            for alias in spec.networkAliases { try Self.validate(name: alias, kind: "network alias") }
            if userNamespace == nil { _ = try networks.joinable(network) } else if network != Networks.defaultName { _ = try networks.network(network) }
            if !spec.additionalNetworks.isEmpty, userNamespace != nil, network == Networks.defaultName {
                throw RuntimeError(.invalidSpec, "container \(name): an ordinary user's default network is user-mode networking, which joins no other network; put the container on a network of its own first")
            }
            var seen: Set<String> = [network]
            for membership in spec.additionalNetworks {
                guard seen.insert(membership.network).inserted else {
                    throw RuntimeError(.invalidSpec, "container \(name) lists network \(membership.network) twice")
                }
                for alias in membership.aliases { try Self.validate(name: alias, kind: "network alias") }
                if userNamespace == nil { _ = try networks.joinable(membership.network) } else { _ = try networks.network(membership.network) }
            }
        } else if case .container(let other) = spec.network {
            guard spec.publishedPorts.isEmpty, spec.networkAliases.isEmpty, spec.additionalNetworks.isEmpty else {
                throw RuntimeError(.invalidSpec, "container \(name) joins the network of container \(other), which has the network: give networks, aliases and ports to \(other)")
            }
            guard userNamespace == nil, !spec.namespaces.contains(.user) else {
                throw RuntimeError(.invalidSpec, "container \(name): a container with a user namespace cannot join container \(other)'s network namespace, which the host's user namespace owns")
            }
            guard (try? resolveID(other)) != nil else {
                throw RuntimeError(.notFound, "container \(name) joins the network of container \(other), which does not exist")
            }
        } else if !spec.additionalNetworks.isEmpty {
            throw RuntimeError(.invalidSpec, "container \(name) is on other networks but its first is not a bridge network (it is \(spec.network))")
        } else if !spec.publishedPorts.isEmpty {
            throw RuntimeError(.invalidSpec, "container \(name) publishes ports but is not on a bridge network (its network is \(spec.network))")
        }
        let containerDirectory = directory + "/" + id
        // The directory appears with a locked marker in it that says where
        // the cgroup goes and who creates it, until the record is written:
        // it is made under a staging name that names its creator, and
        // renamed once the marker is there. A process killed on the way
        // leaves a staging directory or a marked one, which the next open
        // finds and undoes.
        let staging = directory + "/" + Self.stagingPrefix + "\(id)-\(owner.pid)-\(owner.startTime)"
        guard spares.take(to: staging) || mkdir(staging, 0o700) == 0 else {
            throw RuntimeError(.systemCall, "cannot create \(staging)", underlying: Sys.errno)
        }
        let marker = open(staging + "/" + Self.creationMarker, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        defer { if marker >= 0 { close(marker) } }
        do {
            guard marker >= 0 else { throw RuntimeError(.systemCall, "cannot create a marker in \(staging)", underlying: Sys.errno) }
            flock(marker, LOCK_EX)
            try writeAll(marker, Array("\(cgroupParent)/\(id)\n\(owner.pid) \(owner.startTime)\n".utf8), what: staging)
            guard rename(staging, containerDirectory) == 0 else {
                throw RuntimeError(.systemCall, "cannot move \(staging) to \(containerDirectory)", underlying: Sys.errno)
            }
        } catch {
            try? Sys.removeTree(staging)
            throw error
        }
        // The name is taken atomically, across processes.
        guard symlink(id, directory + "/names/" + name) == 0 else {
            let error = Sys.errno
            try? removeTree(containerDirectory, mapping: userNamespace)
            if error == .fileExists { throw RuntimeError(.invalidSpec, "the name \(name) is already in use by another container") }
            throw RuntimeError(.systemCall, "cannot record the name \(name)", underlying: error)
        }
        do {
            let record = try await prepare(spec, id: id, name: name, directory: containerDirectory)
            let container = Container(runtime: self, record: record, owned: true)
            live.withLock { $0[id] = container }
            logger.debug("created", metadata: ["container": "\(name)", "id": "\(record.shortID)"])
            return container
        } catch {
            if case .bridge(let network) = spec.network {
                if !spec.additionalNetworks.isEmpty { try? networks.detachAdditional(containerID: id) }
                try? networks.detach(containerID: id, from: network, owner: containerDirectory)
            }
            try? images.releaseSnapshots(holder: id)
            try? removeProvidedFiles(id)
            unlink(directory + "/names/" + name)
            // Without its cgroup gone, the directory (and its marker) stays
            // for the next open to finish the job.
            if (try? cgroups.remove(cgroupParent + "/" + id)) != nil { try? removeTree(containerDirectory, mapping: userNamespace) }
            throw error
        }
    }

    private func prepare(_ spec: ContainerSpec, id: String, name: String, directory: String) async throws -> ContainerRecord {
        var layers: [String] = []
        var configuration = RunConfiguration()
        var imageDigest: String?
        switch spec.root {
        case .image(let reference):
            let (resolved, directories) = try await images.prepareRoot(reference, holder: id)
            imageDigest = resolved.manifestDescriptor.digest.description
            configuration = resolved.configuration.config ?? RunConfiguration()
            // Top-most first, as overlayfs stacks lower directories.
            layers = directories.reversed()
            guard !layers.isEmpty else { throw RuntimeError(.invalidSpec, "image \(reference) has no layers") }
            for sub in ["upper", "work"] { try Sys.makeDirectories(directory + "/" + sub, mode: 0o755) }
            if userNamespace == nil, spec.namespaces.contains(.user) { try Self.giveToMappedRoot(directory, spec) }
        case .directory(let path):
            var info = stat()
            guard path.hasPrefix("/"), stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw RuntimeError(.invalidSpec, "root file system \(path) is not an existing directory (given as an absolute path)")
            }
            layers = [path]
        }
        let hostname = spec.hostname ?? String(id.prefix(12))
        let process = try Self.resolveProcess(spec, image: configuration, users: UserDatabase(roots: layers), hostname: hostname)
        if let userNamespace { try Self.checkMapped(process, name: name, userNamespace) }
        try provideFiles(spec, process: process, id: id, name: name)
        let cgroup = cgroupParent + "/" + id
        try cgroups.create(cgroup, limits: spec.resources)
        // An ordinary user can attach no device program (nor write v1's
        // lists); its user namespace keeps it from making device nodes.
        if userNamespace == nil { try cgroups.allowDevices(try Self.deviceAllowList(spec), in: cgroup) }
        // Checked now, so that start cannot fail on them.
        _ = try Self.sysctls(spec)
        _ = try Self.resourceLimits(spec)
        // A container root runs in a user namespace gets new volumes owned
        // as its namespace sees the image's files.
        let shift = userNamespace == nil && spec.namespaces.contains(.user) ? UserNamespaceMapping(uids: spec.uidMappings, gids: spec.gidMappings, helpers: nil) : nil
        try await volumes.prepare(spec.mounts, layers: layers, mapping: shift)
        _ = try Self.mounts(spec, volumes: volumes)
        _ = try seccompProgram(spec)
        var record = ContainerRecord(id: id, name: name, spec: spec, process: process, imageDigest: imageDigest, cgroup: cgroup,
                                     status: .created, ownerPid: owner.pid, ownerStartTime: owner.startTime,
                                     createdAt: Date(), layers: layers)
        try store(record)
        // The marker's inode serves the record's next replacement.
        if rename(directory + "/" + Self.creationMarker, directory + "/state.json.next") != 0 { unlink(directory + "/" + Self.creationMarker) }
        if let pod = spec.pod {
            // The pod's place on its network, for inspect: the pod keeps it.
            record.network = try pods.pod(pod).network
            try store(record)
        } else if userNamespace != nil, spec.network == .bridge(Networks.defaultName) {
            record.network = try UserModeNetwork.attachment(ports: spec.publishedPorts)
            let files = userModeNetworkFiles(id)
            try Sys.makeDirectories(files, mode: 0o755)
            try UserModeNetwork.writeFiles(in: files, hostname: hostname)
            try store(record)
        } else if case .bridge(let network) = spec.network {
            // It waits for the network's lock, which other processes may
            // hold: off Swift's cooperative pool.
            let (networks, aliases, ports, others, hosts) = (networks, spec.networkAliases, spec.publishedPorts, spec.additionalNetworks, spec.extraHosts)
            record.network = try await offload { _ in
                let first = try networks.attach(containerID: id, name: name, aliases: aliases, ports: ports, to: network, owner: directory,
                                                extraHosts: hosts)
                for (index, other) in others.enumerated() {
                    _ = try networks.attach(containerID: id, name: name, aliases: other.aliases, ports: [], to: other.network, owner: directory,
                                            device: index + 1)
                }
                return first
            }
            try store(record)
        }
        return record
    }

    /// The compiled seccomp program of a spec, compiled once per profile and capability set.
    func seccompProgram(_ spec: ContainerSpec) throws -> [UInt8]? {
        let profile: SeccompProfile
        let profileKey: String
        switch spec.seccomp {
        case .unconfined: return nil
        case .default where spec.privileged: return nil
        case .default:
            // Hashing the whole default profile would cost more than the lookup saves.
            (profile, profileKey) = (.default, "default")
        case .profile(let custom): (profile, profileKey) = (custom, "\(custom.hashValue)")
        }
        let capabilities = try Self.capabilities(spec)
        let key = "\(profileKey)-\(Capability.mask(capabilities))"
        if let cached = seccompCache.withLock({ $0[key] }) { return cached }
        let program = try SeccompCompiler.compile(profile, capabilities: capabilities)
        seccompCache.withLock { $0[key] = program }
        return program
    }

    // MARK: - Finding

    /// Every container in the state root, newest first.
    public func list() throws -> [ContainerRecord] {
        Self.records(in: directory).sorted { $0.createdAt > $1.createdAt }
    }

    /// The records of every container in `directory` (unordered).
    static func records(in directory: String) -> [ContainerRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.count == 64 }.compactMap { id in
            let path = directory + "/" + id
            return try? FileIO.readStateFile(path + "/state.json", lock: path) { try ContainerRecord.decode($0) }
        }
    }

    /// The container with this name, ID or unique ID prefix.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`.
    public func container(_ nameOrID: String) throws -> Container {
        let id = try resolveID(nameOrID)
        if let container = live.withLock({ $0[id] }) { return container }
        let record = try load(id)
        return Container(runtime: self, record: record, owned: false)
    }

    func resolveID(_ nameOrID: String) throws -> String {
        if !nameOrID.isEmpty, !nameOrID.contains("/"), let target = try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/names/" + nameOrID) {
            return target
        }
        let hex = nameOrID.lowercased()
        if hex.count >= 4, hex.allSatisfy(\.isHexDigit) {
            let matches = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.count == 64 && $0.hasPrefix(hex) }
            if matches.count == 1 { return matches[0] }
            if matches.count > 1 { throw RuntimeError(.notFound, "\(nameOrID) names more than one container; give more of the ID") }
        }
        throw RuntimeError(.notFound, "no container is named \(nameOrID)")
    }

    // MARK: - Scoped use

    /// Creates a container, passes it (not started) to `body`, and removes
    /// it afterwards — on return, on a throw and on cancellation — killing
    /// it first if it still runs.
    public func withContainer<T: Sendable>(_ spec: ContainerSpec, _ body: (Container) async throws -> T) async throws -> T {
        let container = try await create(spec)
        do {
            let result = try await withTaskCancellationHandler {
                try await body(container)
            } onCancel: {
                container.killForCancellation()
            }
            try await container.remove(force: true)
            return result
        } catch {
            try? await container.remove(force: true)
            throw error
        }
    }

    /// Runs a container to its end and removes it: creates, starts, passes
    /// the running container to `body` (to read its output, write its
    /// input), waits for it to exit, and returns both results.
    public func run<T: Sendable>(_ spec: ContainerSpec, _ body: (Container) async throws -> T) async throws -> (result: T, exit: ContainerExit) {
        try await withContainer(spec) { container in
            try await container.start()
            let result = try await body(container)
            return (result, try await container.wait())
        }
    }

    /// Runs a container to its end, removes it, and returns how it ended.
    @discardableResult
    public func run(_ spec: ContainerSpec) async throws -> ContainerExit {
        try await run(spec) { _ in () }.exit
    }

    /// Runs a container to its end with `input` as its standard input, and
    /// returns what it wrote and how it ended; removes it. The input is
    /// given while the output is read, so a program that answers as it
    /// reads never waits on a full pipe.
    ///
    /// ```swift
    /// let result = try await runtime.run(ContainerSpec(image: "busybox", command: ["wc", "-l"]), input: Array("a\nb\n".utf8))
    /// // result.exit.code == 0, result.standardOutput == "2\n"
    /// ```
    ///
    /// - Parameters:
    ///   - spec: the container; its standard input is opened when there is input.
    ///   - input: the bytes its standard input gives before its end.
    ///   - maximumOutputBytes: how much output is kept at most (16 MiB by default).
    /// - Throws: `RuntimeError` with code `invalidState` when the output is
    ///   longer than `maximumOutputBytes` (the container is then removed),
    ///   or any error of creating and starting it. A container that stops
    ///   reading its input is not an error: ``RunOutput/inputError`` says so.
    public func run(_ spec: ContainerSpec, input: some Sequence<UInt8>, maximumOutputBytes: Int = 16 << 20) async throws -> RunOutput {
        let data = Array(input)
        var spec = spec
        if !data.isEmpty { spec.openStdin = true }
        return try await withContainer(spec) { container in
            try await container.start()
            async let inputError: RuntimeError? = {
                guard !data.isEmpty else { return nil }
                defer { container.closeStdin() }
                do {
                    try await container.send(data)
                    return nil
                } catch let error as RuntimeError {
                    return error
                } catch {
                    return RuntimeError(.invalidState, "cannot give container \(container.name) its input", underlying: error)
                }
            }()
            var output = RunOutput(exit: ContainerExit(status: .exited(0), reason: .exited), stdout: [], stderr: [])
            for try await chunk in container.output {
                guard output.stdout.count + output.stderr.count + chunk.bytes.count <= maximumOutputBytes else {
                    throw RuntimeError(.invalidState, "container \(container.name) wrote more than \(maximumOutputBytes) bytes, the most kept; read its output as it comes instead")
                }
                if chunk.stream == .stderr { output.stderr += chunk.bytes } else { output.stdout += chunk.bytes }
            }
            output.exit = try await container.wait()
            output.inputError = await inputError
            return output
        }
    }

    // MARK: - State files

    func containerDirectory(_ id: String) -> String { directory + "/" + id }

    func load(_ id: String, holdingLock: Bool = false) throws -> ContainerRecord {
        let path = containerDirectory(id) + "/state.json"
        do {
            guard let record = try FileIO.readStateFile(path, lock: containerDirectory(id), holdingLock: holdingLock, {
                try ContainerRecord.decode($0)
            }) else {
                throw RuntimeError(.notFound, "container \(id.prefix(12)) has no state (\(path))")
            }
            return record
        } catch let error as RuntimeError {
            throw error
        } catch {
            throw RuntimeError(.invalidState, "the state of container \(id.prefix(12)) cannot be read: \(error)")
        }
    }

    func store(_ record: ContainerRecord) throws {
        let path = containerDirectory(record.id) + "/state.json"
        // What never changes after creation is encoded once: encoding the
        // whole spec on every change of status cost more than the write.
        let fixed = ContainerRecord.FixedFields(record)
        let cachedJSON = writtenRecords.withLock { entry -> Data? in
            guard let cached = entry[record.id], cached.record.fixedFieldsEqual(record) else { return nil }
            return cached.fixedJSON
        }
        let fixedJSON = try cachedJSON ?? ContainerRecord.joinObjects(Self.encoder.encode(fixed), encodedSpec(record.spec))
        let changingJSON = try Self.encoder.encode(ContainerRecord.ChangingFields(record))
        try FileIO.replaceStateFile(path, with: ContainerRecord.joinObjects(fixedJSON, changingJSON), exchanging: true)
        if let stamp = FileStamp(path: path) {
            writtenRecords.withLock { $0[record.id] = (record, stamp, fixedJSON) }
        }
    }

    /// `{"spec":…}`: servers start many containers from one spec, so the
    /// last few specs' encodings are kept.
    private func encodedSpec(_ spec: ContainerSpec) throws -> Data {
        if let json = encodedSpecs.withLock({ $0.first { $0.spec == spec }?.json }) { return json }
        let json = try Self.encoder.encode(ContainerRecord.SpecField(spec: spec))
        encodedSpecs.withLock { specs in
            if specs.count >= 8 { specs.removeFirst() }
            specs.append((spec, json))
        }
        return json
    }

    /// Changes a container's record under its lock, from the file as it is now.
    @discardableResult
    func update(_ id: String, _ change: (inout ContainerRecord) throws -> Void) throws -> ContainerRecord {
        // The directory itself is the lock: no file to create and remove.
        guard let lock = OwnedDescriptor(opening: containerDirectory(id), O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { throw RuntimeError(.notFound, "container \(id.prefix(12)) is gone", underlying: Sys.errno) }
        flock(lock.raw, LOCK_EX)
        // The record this process wrote last, if the file is still that one
        // (every write makes a new file, so another writer changes its inode).
        let path = containerDirectory(id) + "/state.json"
        var record: ContainerRecord
        if let cached = writtenRecords.withLock({ $0[id] }), cached.stamp == FileStamp(path: path) {
            record = cached.record
        } else {
            record = try load(id, holdingLock: true)
        }
        try change(&record)
        try store(record)
        return record
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }()

    /// Removes every trace of a container: cgroup, directory, name, hold.
    func destroy(_ record: ContainerRecord) throws {
        try cgroups.remove(record.cgroup)
        if userNamespace != nil {
            // pasta, of the default network or of a user network's published ports.
            UserModeNetwork.stop(pidFile: pastaPidFile(record.id))
            networks.host.removeRuntimeIfUnused()
            try Sys.removeTree(userModeNetworkFiles(record.id))
        }
        if record.network?.isUserMode == true {
            // Nothing else to give up.
        } else if record.spec.pod == nil, let attachment = record.network {
            if !record.spec.additionalNetworks.isEmpty { try networks.detachAdditional(containerID: record.id) }
            try networks.detach(containerID: record.id, from: attachment.network, owner: containerDirectory(record.id))
        } else if record.spec.pod == nil, case .bridge(let network) = record.spec.network,
                  access(containerDirectory(record.id) + "/netns", F_OK) == 0 {
            // Attached, but a crash came before the record said so (an ended
            // container gave its place up already, namespace included).
            if !record.spec.additionalNetworks.isEmpty { try? networks.detachAdditional(containerID: record.id) }
            try? networks.detach(containerID: record.id, from: network, owner: containerDirectory(record.id))
        }
        try removeDirectory(of: record.id)
        if (try? resolveID(record.name)) == record.id { unlink(directory + "/names/" + record.name) }
        try images.releaseSnapshots(holder: record.id)
        live.withLock { _ = $0.removeValue(forKey: record.id) }
        writtenRecords.withLock { _ = $0.removeValue(forKey: record.id) }
    }

    /// Takes an ended container off its bridge network, as Docker does at
    /// stop: its address, published ports (their claims and firewall
    /// rules), veth pair and network namespace. Returns whether it had a
    /// place there and has given it up; failures are logged, and removal
    /// retries what is left.
    @discardableResult
    func releaseNetwork(of record: ContainerRecord) -> Bool {
        guard record.spec.pod == nil, let attachment = record.network else { return false }
        if userNamespace != nil {
            UserModeNetwork.stop(pidFile: pastaPidFile(record.id))
            networks.host.removeRuntimeIfUnused()
            if attachment.isUserMode { return true }
        }
        do {
            if !record.spec.additionalNetworks.isEmpty { try networks.detachAdditional(containerID: record.id) }
            try networks.detach(containerID: record.id, from: attachment.network, owner: containerDirectory(record.id))
            return true
        } catch {
            logger.warning("cannot release an ended container's network", metadata: ["container": "\(record.name)", "error": "\(error)"])
            return false
        }
    }

    /// Where removed containers' directories wait to be deleted.
    var removedDirectory: String { directory + "/.removed" }

    /// Removes a container's directory from the state root at once (a
    /// rename) and deletes it in the background; in place if it cannot be
    /// moved aside.
    func removeDirectory(of id: String) throws {
        let path = containerDirectory(id)
        // A network namespace still bound there would make the tree
        // undeletable (and keep the namespace).
        try? networks.host.removeNamespace(at: path + "/netns")
        try removeProvidedFiles(id)
        let aside = removedDirectory + "/" + id
        if rename(path, aside) == 0 {
            deleteRemoved(aside)
            return
        }
        try removeTree(path, mapping: userNamespace)
    }

    /// Deletes a directory moved aside into ``removedDirectory``, in the background.
    func deleteRemoved(_ path: String) {
        Reclaimer.shared.removeTree(path, mapping: userNamespace) { [logger] error in
            logger.warning("cannot delete a removed container's files", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Waits until what ended and removed containers of this process left
    /// behind is reclaimed: their mounts, which are torn down in the
    /// background once a container's last process has ended, and their
    /// files, which ``Container/remove(force:)`` deletes in the background.
    /// Removal needs no waiting for this (the container is gone from the
    /// state root, its name is free and its cgroup removed); call it before
    /// the process exits, to see the disk space back, or before counting
    /// open descriptors. What a process leaves unreclaimed when it exits,
    /// the next runtime opened over the state root deletes.
    public static func settle() async {
        await Reclaimer.shared.settle()
    }

    // MARK: - Names and IDs

    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0 ..< 4).map { _ in
            let value = generator.next() as UInt64
            let text = String(value, radix: 16)
            return String(repeating: "0", count: 16 - text.count) + text
        }.joined()
    }

    package static func validate(name: String, kind: String = "container") throws {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") }
        guard !name.isEmpty, name.count <= 128, allowed, name.first?.isLetter == true || name.first?.isNumber == true else {
            throw RuntimeError(.invalidSpec, "\"\(name)\" is not a valid \(kind) name: use letters, digits, _ . -, starting with a letter or digit")
        }
    }
}

/// Which file a path is now: replaced files get new inodes.
struct FileStamp: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: Int

    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec
    }
}
