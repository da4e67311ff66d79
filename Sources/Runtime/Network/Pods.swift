import CGantryLauncher
import CGantrySystem
public import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What a pod is to be: a group of containers sharing one network
/// namespace (one address, one localhost, one set of published ports) and,
/// as asked, their IPC and UTS namespaces — as in Kubernetes and Podman.
public struct PodSpec: Hashable, Sendable, Codable {
    /// The unique name; also the host name its members share.
    public var name: String
    /// `none` (loopback only) or a bridge network. The host's network
    /// cannot be a pod's.
    public var network: ContainerSpec.NetworkMode
    /// Names the pod answers to on its network besides its name.
    public var networkAliases: [String]
    /// Ports of the pod reachable on the host (bridge networks only).
    public var publishedPorts: [PublishedPort]
    /// Whether members share System V IPC and POSIX message queues.
    public var sharesIPC: Bool
    /// Whether members share the host name (the pod's name unless `hostname`).
    public var sharesUTS: Bool
    /// The members' host name when they share UTS.
    public var hostname: String?
    /// Free-form labels.
    public var labels: [String: String]

    /// A pod named `name` on `network`, sharing IPC and UTS.
    public init(name: String, network: ContainerSpec.NetworkMode = .none, publishing ports: [PublishedPort] = [],
                aliases: [String] = [], sharesIPC: Bool = true, sharesUTS: Bool = true, hostname: String? = nil,
                labels: [String: String] = [:]) {
        self.name = name
        self.network = network
        networkAliases = aliases
        publishedPorts = ports
        self.sharesIPC = sharesIPC
        self.sharesUTS = sharesUTS
        self.hostname = hostname
        self.labels = labels
    }
}

/// A pod that exists: its spec and its place on its network.
public struct PodRecord: Hashable, Sendable, Codable {
    /// 64 hex digits.
    public var id: String
    /// What it was created as.
    public var spec: PodSpec
    /// Its address and published ports, on a bridge network.
    public var network: NetworkAttachment?
    /// When it was created.
    public var createdAt: Date

    /// The pod's name.
    public var name: String { spec.name }
}

/// The pods of a state root.
///
/// A pod holds its namespaces without any process: each is a namespace
/// file bind-mounted in `pods/<name>/` (`netns`, `ipcns`, `utsns`), which
/// keeps the namespace alive until the pod is removed. Members are
/// started in them.
///
/// Creating and removing wait for locks that other processes may hold and
/// talk to the kernel, so they are `async`: the work runs on Gantry's
/// threads for blocking work, never on Swift's cooperative pool.
public final class Pods: Sendable {
    let directory: String
    let networks: Networks
    let logger: Logger
    /// The names of the containers in a pod.
    private let members: @Sendable (String) throws -> [String]

    init(root: String, networks: Networks, logger: Logger, members: @escaping @Sendable (String) throws -> [String]) throws {
        directory = root
        self.networks = networks
        self.logger = logger
        self.members = members
        try Sys.makeDirectories(directory, mode: 0o700)
    }

    /// Creates a pod: its namespaces and, on a bridge network, its address
    /// and published ports.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidSpec` for a taken or
    ///   invalid name or network, `network` when its devices cannot be made.
    @discardableResult
    public func create(_ spec: PodSpec) async throws -> PodRecord {
        try await offload { [self] _ in try create(spec) }
    }

    /// Creates a pod, on the calling thread.
    @discardableResult
    func create(_ spec: PodSpec) throws -> PodRecord {
        try ContainerRuntime.validate(name: spec.name, kind: "pod")
        if let hostname = spec.hostname { try ContainerRuntime.validate(name: hostname, kind: "host") }
        let path = directory + "/" + spec.name
        switch spec.network {
        case .host, .container: throw RuntimeError(.invalidSpec, "pod \(spec.name) cannot use the network of the host or of a container: a pod has a network namespace of its own")
        case .none where !spec.publishedPorts.isEmpty:
            throw RuntimeError(.invalidSpec, "pod \(spec.name) publishes ports but is not on a bridge network")
        case .bridge(let network):
            _ = try networks.joinable(network)
        case .none: break
        }
        var record = PodRecord(id: ContainerRuntime.newID(), spec: spec, network: nil, createdAt: Date())
        // The record first, with the directory: it is what tells recovery
        // the leases are in use.
        let created = try FileIO.createRecordDirectory(spec.name, in: directory, mode: 0o700) { staging in
            try FileIO.replaceStateFile(staging + "/pod.json", with: ContainerRuntime.encoder.encode(record))
        }
        guard created else { throw RuntimeError(.invalidSpec, "a pod named \(spec.name) already exists") }
        do {
            if case .bridge(let network) = spec.network {
                record.network = try networks.attach(containerID: record.id, name: spec.name, aliases: spec.networkAliases,
                                                     ports: spec.publishedPorts, to: network, owner: path)
                // An ordinary user's published ports: a pasta in the pod's namespace.
                if let attachment = record.network, !networks.host.isSystem, !attachment.ports.isEmpty {
                    let user = "/proc/\(try networks.host.start())/ns/user", pidFile = pastaPidFile(spec.name)
                    if UserModeNetwork.slirp4netns != nil {
                        try networks.host.forward(attachment.ports, recordIn: pidFile)
                    } else {
                        try networks.host.withRuntime {
                            try UserModeNetwork.startForPorts(attachment, namespace: networks.host.namespaceFile(path + "/netns"),
                                                              userNamespace: user, pidFile: pidFile)
                        }
                    }
                }
            } else {
                try networks.host.createNamespace(at: path + "/netns")
                let inside = try RouteNetlink(namespace: networks.host.namespaceFile(path + "/netns"))
                if let loopback = try inside.link("lo") { try inside.setUp(loopback.index, name: "lo") }
            }
            if spec.sharesIPC { try networks.host.createNamespace(at: path + "/ipcns", type: GANTRY_CLONE_NEWIPC) }
            if spec.sharesUTS { try networks.host.createNamespace(at: path + "/utsns", type: GANTRY_CLONE_NEWUTS, hostname: spec.hostname ?? spec.name) }
            try FileIO.replaceStateFile(path + "/pod.json", with: ContainerRuntime.encoder.encode(record))
        } catch {
            try? release(record)
            throw error
        }
        logger.debug("created pod", metadata: ["pod": "\(spec.name)"])
        return record
    }

    /// The pod named `name`.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   when its record cannot be read.
    public func pod(_ name: String) throws -> PodRecord {
        guard let record = try FileIO.readNamedRecord(PodRecord.self, in: directory, named: name, file: "pod.json") else {
            throw RuntimeError(.notFound, "no pod is named \(name)")
        }
        return record
    }

    /// Every pod, by name.
    public func list() throws -> [PodRecord] {
        FileIO.readNamedRecords(PodRecord.self, in: directory, file: "pod.json").sorted { $0.name < $1.name }
    }

    /// The names of the pod's containers.
    public func containers(in name: String) throws -> [String] {
        try members(name).sorted()
    }

    /// Removes a pod that has no containers: its namespaces, address and ports.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   while it has containers.
    public func remove(_ name: String) async throws {
        try await offload { [self] _ in try remove(name) }
    }

    /// Removes a pod that has no containers, on the calling thread.
    func remove(_ name: String) throws {
        let record = try pod(name)
        let inside = try containers(in: name)
        guard inside.isEmpty else {
            throw RuntimeError(.invalidState, "pod \(name) still has containers: \(inside.joined(separator: ", ")); remove them first")
        }
        try release(record)
    }

    /// The namespace files members start in, with their CLONE_NEW* types.
    func namespaceFiles(_ record: PodRecord) -> [(path: String, type: UInt64)] {
        let path = directory + "/" + record.name
        var files = [(path + "/netns", GANTRY_CLONE_NEWNET)]
        if record.spec.sharesIPC { files.append((path + "/ipcns", GANTRY_CLONE_NEWIPC)) }
        if record.spec.sharesUTS { files.append((path + "/utsns", GANTRY_CLONE_NEWUTS)) }
        return files.map { (networks.host.namespaceFile($0.0), $0.1) }
    }

    /// The pid file of the pasta of an ordinary user's pod's published ports.
    private func pastaPidFile(_ name: String) -> String { networks.host.pidFile("pasta-pod-" + name) }

    private func release(_ record: PodRecord) throws {
        let path = directory + "/" + record.name
        UserModeNetwork.stop(pidFile: pastaPidFile(record.spec.name))
        networks.host.removeRuntimeIfUnused()
        if case .bridge(let network) = record.spec.network {
            try networks.detach(containerID: record.id, from: record.network?.network ?? network, owner: path)
        }
        for file in ["netns", "ipcns", "utsns"] { try networks.host.removeNamespace(at: path + "/" + file) }
        try Sys.removeTree(path)
        networks.stopHostIfIdle()
    }
}
