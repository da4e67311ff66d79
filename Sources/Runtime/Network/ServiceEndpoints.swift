import Foundation
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

/// A load-balanced endpoint in front of a group of containers, as a
/// Kubernetes Service gives: published host ports, and a virtual address
/// with a name on a bridge network, whose new connections are spread over
/// the group's members (its *backends*).
///
/// The spreading is done by nftables in the kernel, in the way kube-proxy's
/// nftables mode does it: each endpoint has chains of its own, which hold
/// one translation per port choosing a backend by a random number (or by a
/// hash of the client's address, for ``Affinity/clientAddress``), and which
/// are replaced in one transaction when the backends change. Connections
/// already made stay with their backend; only new ones see the change.
/// With no backend, connections are refused at once.
public struct ServiceEndpoint: Hashable, Sendable, Codable {
    /// How a client's connections are given to backends.
    public enum Affinity: String, Hashable, Sendable, Codable, CaseIterable {
        /// Each new connection to any backend, at random.
        case none
        /// The connections of one client address to one backend while the
        /// backends stay the same (as Kubernetes' `sessionAffinity: ClientIP`).
        case clientAddress = "client-address"
    }

    /// The name the virtual address answers to on its network.
    public var name: String
    /// The bridge network of the virtual address; nil for none.
    public var network: String?
    /// Host ports whose connections go to the backends' container ports.
    public var ports: [PublishedPort]
    /// How connections are given to backends.
    public var affinity: Affinity
    /// The ports of the virtual address, each translated to a port of the
    /// backends (`hostPort` is the virtual address's port, as a Kubernetes
    /// Service's `port`; `containerPort` the backends', its `targetPort`);
    /// empty for every port going to the same port of a backend.
    public var virtualPorts: [PublishedPort]

    /// An endpoint.
    ///
    /// - Parameters:
    ///   - name: the name the virtual address answers to.
    ///   - network: the network of the virtual address; nil for none.
    ///   - ports: host ports spread over the backends (a host port of 0 gets a free one).
    ///   - affinity: how connections are given to backends.
    ///   - virtualPorts: the virtual address's ports and the backends' ports
    ///     they go to; empty for all ports, untranslated.
    public init(name: String, network: String? = nil, ports: [PublishedPort] = [], affinity: Affinity = .none, virtualPorts: [PublishedPort] = []) {
        self.name = name
        self.network = network
        self.ports = ports
        self.affinity = affinity
        self.virtualPorts = virtualPorts
    }

    private enum CodingKeys: String, CodingKey { case name, network, ports, affinity, virtualPorts }

    /// Decodes an endpoint; one recorded before ``virtualPorts`` existed has none.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try container.decode(String.self, forKey: .name), network: try container.decodeIfPresent(String.self, forKey: .network),
                  ports: try container.decode([PublishedPort].self, forKey: .ports), affinity: try container.decode(Affinity.self, forKey: .affinity),
                  virtualPorts: try container.decodeIfPresent([PublishedPort].self, forKey: .virtualPorts) ?? [])
    }
}

/// An endpoint as it is installed.
public struct ServiceEndpointRecord: Hashable, Sendable, Codable {
    /// The key it was installed under.
    public var key: String
    /// What was asked.
    public var endpoint: ServiceEndpoint
    /// The virtual address on the endpoint's network.
    public var virtualAddress: IPv4Address?
    /// The published ports, with the host ports chosen for those asked as 0.
    public var ports: [PublishedPort]
    /// The addresses new connections go to.
    public var backends: [IPv4Address]
    /// Whether its making finished (a process killed on the way leaves a
    /// record without it, which the next change replaces whole).
    var installed: Bool?
}

extension ContainerRuntime {
    /// Installs or updates the load-balanced endpoint `key`, spreading new
    /// connections over `containers` (IDs; those without an address on a
    /// bridge network are left out). The first call claims the host ports
    /// and the virtual address; later calls with the same endpoint only
    /// change the backends, atomically; a call with a changed endpoint
    /// replaces it. The endpoint stays, with its ports and address, until
    /// ``removeEndpoint(_:)``.
    ///
    /// - Parameters:
    ///   - key: names the endpoint among the root's endpoints.
    ///   - endpoint: its ports, virtual address and affinity.
    ///   - containers: the backends.
    /// - Returns: the endpoint as installed.
    /// - Throws: ``RuntimeError`` with code `invalidSpec` when a host port
    ///   is taken or the network does not exist, `unsupportedHost` for an
    ///   ordinary user's runtime (whose networks have no endpoints yet).
    @discardableResult
    public func setEndpoint(_ key: String, _ endpoint: ServiceEndpoint, backends containers: [String]) async throws -> ServiceEndpointRecord {
        try await offload { [self] _ in
            let addresses = containers.compactMap { id -> IPv4Address? in
                guard let attachment = try? container(id).record.network else { return nil }
                if let network = endpoint.network, attachment.network != network { return nil }
                return attachment.address
            }
            return try networks.setEndpoint(key, endpoint, backends: addresses)
        }
    }

    /// Removes the endpoint `key`: its rules, host ports and virtual
    /// address. Nothing happens when there is none.
    public func removeEndpoint(_ key: String) async throws {
        try await offload { [self] _ in try networks.removeEndpoint(key) }
    }

    /// Every endpoint of the root.
    public func endpoints() throws -> [ServiceEndpointRecord] {
        try networks.endpoints()
    }

    /// Whether this runtime can install endpoints (root's can; an ordinary
    /// user's networks cannot yet).
    public var supportsEndpoints: Bool { networks.host.isSystem }
}

extension Networks {
    /// Where endpoints are kept: one directory each, named by a hash of its key.
    var endpointsDirectory: String { (directory as NSString).deletingLastPathComponent + "/endpoints" }

    static let endpointFile = "endpoint.json"

    /// The ID of the endpoint `key`: a hash of the key and of the state
    /// root, since the rules and chains named from it are the host's.
    func endpointID(_ key: String) -> String {
        let hash = String(stableHash((endpointsDirectory + "\0" + key).utf8), radix: 16)
        return String(repeating: "0", count: 16 - hash.count) + hash
    }

    func endpoints() throws -> [ServiceEndpointRecord] {
        FileIO.readNamedRecords(ServiceEndpointRecord.self, in: endpointsDirectory, file: Self.endpointFile).sorted { $0.key < $1.key }
    }

    func setEndpoint(_ key: String, _ endpoint: ServiceEndpoint, backends: [IPv4Address]) throws -> ServiceEndpointRecord {
        guard host.isSystem else {
            throw RuntimeError(.unsupportedHost, "load-balanced endpoints need root: an ordinary user's networks cannot have them yet")
        }
        try ContainerRuntime.validate(name: endpoint.name, kind: "endpoint name")
        let id = endpointID(key)
        let path = endpointsDirectory + "/" + id
        let sorted = backends.sorted()
        return try host.withLock("endpoints.lock") {
            try Sys.makeDirectories(endpointsDirectory, mode: 0o700)
            var found: ServiceEndpointRecord?
            do {
                found = try FileIO.readNamedRecord(ServiceEndpointRecord.self, in: endpointsDirectory, named: id, file: Self.endpointFile)
            } catch {
                logger.warning("replacing an endpoint whose record cannot be read", metadata: ["key": "\(key)", "error": "\(error)"])
            }
            // What is there stays when it is whole, for the same ports and
            // network (the affinity is only rules), and its rules are still
            // there (a reboot or a flushed rule set takes them, with the
            // bridge and its address). Made again, it keeps the host ports
            // it had chosen.
            var record: ServiceEndpointRecord
            var made = true
            if let existing = found, existing.key == key, existing.installed == true, Self.samePlace(existing.endpoint, endpoint) {
                if Firewall.hasEndpoint(id: id, host: host) {
                    record = existing
                    made = false
                } else {
                    try removeEndpointLocked(id)
                    record = try createEndpoint(id, key: key, endpoint, ports: existing.ports)
                }
            } else {
                if access(path, F_OK) == 0 { try removeEndpointLocked(id) }
                record = try createEndpoint(id, key: key, endpoint, ports: endpoint.ports)
            }
            if !made, record.backends == sorted, record.endpoint == endpoint { return record }
            record.endpoint = endpoint
            try Firewall.dispatchEndpoint(id: id, record: record, backends: sorted, host: host)
            record.backends = sorted
            try FileIO.replaceStateFile(path + "/" + Self.endpointFile, with: ContainerRuntime.encoder.encode(record))
            return record
        }
    }

    /// Whether two endpoints hold the same name, network and ports (they
    /// may differ in affinity, which only their rules say).
    static func samePlace(_ one: ServiceEndpoint, _ other: ServiceEndpoint) -> Bool {
        one.name == other.name && one.network == other.network && one.ports == other.ports
    }

    /// Makes the endpoint's directory, claims its ports and virtual
    /// address, and installs the rules that lead to its chains; on failure
    /// nothing of it is left.
    private func createEndpoint(_ id: String, key: String, _ endpoint: ServiceEndpoint, ports: [PublishedPort]) throws -> ServiceEndpointRecord {
        var record = ServiceEndpointRecord(key: key, endpoint: endpoint, virtualAddress: nil, ports: [], backends: [])
        let path = endpointsDirectory + "/" + id
        let created = try FileIO.createRecordDirectory(id, in: endpointsDirectory, mode: 0o700) { staging in
            try FileIO.replaceStateFile(staging + "/" + Self.endpointFile, with: ContainerRuntime.encoder.encode(record))
        }
        guard created else { throw RuntimeError(.invalidState, "endpoint \(key) is being made by another process") }
        do {
            var bridge: String?
            if let name = endpoint.network {
                // The default network is made on first use, as for a container.
                let network = name == Networks.defaultName ? try defaultNetwork() : try network(name)
                bridge = network.bridge
                record.virtualAddress = try leaseVirtualAddress(on: network, id: id, name: endpoint.name, owner: path)
                try FileIO.replaceStateFile(path + "/" + Self.endpointFile, with: ContainerRuntime.encoder.encode(record))
            }
            if let network = try? self.network(endpoint.network ?? ""), network.internal, !ports.isEmpty {
                throw RuntimeError(.invalidSpec, "endpoint \(endpoint.name) publishes ports on network \(network.name), which is internal: nothing outside reaches it")
            }
            record.ports = try claimPorts(ports, owner: path)
            try FileIO.replaceStateFile(path + "/" + Self.endpointFile, with: ContainerRuntime.encoder.encode(record))
            try Firewall.installEndpoint(id: id, record: record, bridge: bridge, host: host)
            record.installed = true
            try FileIO.replaceStateFile(path + "/" + Self.endpointFile, with: ContainerRuntime.encoder.encode(record))
        } catch {
            try? removeEndpointLocked(id)
            throw error
        }
        return record
    }

    /// A lease on `network` for the virtual address, which the bridge
    /// answers for (so that members reach it on the link, and the host's
    /// rules see it); its name resolves to it as a member's would.
    private func leaseVirtualAddress(on network: NetworkRecord, id: String, name: String, owner: String) throws -> IPv4Address {
        try withLock(network.name) {
            let taken = leasedAddresses(network.name)
            // From the top of the subnet down, away from the members' addresses.
            var index = UInt32(network.subnet.size - 2)
            var chosen: IPv4Address?
            while index >= 2, let candidate = network.subnet.address(index) {
                if !taken.contains(candidate), candidate != network.gateway { chosen = candidate; break }
                index -= 1
            }
            guard let address = chosen else { throw RuntimeError(.network, "network \(network.name) has no free address left in \(network.subnet)") }
            let lease = NetworkLease(containerID: id, name: name, aliases: [], address: address, owner: owner, virtual: true)
            try FileIO.replaceStateFile(leasePath(network.name, address), with: ContainerRuntime.encoder.encode(lease))
            do {
                try ensureBridge(network)
                let netlink = try host.routeNetlink()
                guard let bridge = try netlink.link(network.bridge) else { throw RuntimeError(.network, "bridge \(network.bridge) of network \(network.name) is gone") }
                try netlink.addAddress(address, prefixLength: 32, index: bridge.index, name: network.bridge)
                do {
                    try resolver.serve(network)
                } catch {
                    logger.warning("the endpoint's name resolves only through hosts files", metadata: ["network": "\(network.name)", "error": "\(error)"])
                }
            } catch {
                unlink(leasePath(network.name, address))
                throw error
            }
            try writeHostsFiles(network.name)
            return address
        }
    }

    func removeEndpoint(_ key: String) throws {
        guard host.isSystem else { return }
        try host.withLock("endpoints.lock") { try removeEndpointLocked(endpointID(key)) }
    }

    /// Removes whatever the endpoint `id` has: rules, port claims, its
    /// virtual address and lease, its directory.
    private func removeEndpointLocked(_ id: String) throws {
        let path = endpointsDirectory + "/" + id
        try Firewall.removeEndpoint(id: id, host: host)
        releasePorts(owner: path)
        for network in (try? list()) ?? [] {
            for lease in leases(network.name) where lease.owner == path {
                try withLock(network.name) {
                    try releaseVirtualAddress(lease, on: network)
                    try writeHostsFiles(network.name)
                }
            }
        }
        try Sys.removeTree(path)
    }

    /// Takes a virtual address off its bridge and ends its lease.
    func releaseVirtualAddress(_ lease: NetworkLease, on network: NetworkRecord) throws {
        if let netlink = try host.routeNetlinkIfRunning(), let bridge = try netlink.link(network.bridge) {
            try netlink.deleteAddress(lease.address, prefixLength: 32, index: bridge.index, name: network.bridge)
        }
        unlink(leasePath(network.name, lease.address))
    }
}

extension Firewall {
    static func endpointTag(_ id: String) -> String { "gantry endpoint " + id.prefix(12) }
    /// The chain translating the endpoint's published ports.
    static func portsChain(_ id: String) -> String { "endpoint-ports-" + id.prefix(12) }
    /// The chain translating its virtual address.
    static func addressChain(_ id: String) -> String { "endpoint-address-" + id.prefix(12) }

    /// The rules that lead to an endpoint's chains (which start empty), and
    /// those refusing what no backend takes.
    static func installEndpoint(id: String, record: ServiceEndpointRecord, bridge: String?, host: NetworkHost) throws {
        try changing(host) {
            try ensureTable(host)
            let tag = endpointTag(id)
            let ports = portsChain(id), address = addressChain(id)
            var commands = deleteCommands(tagged: tag, host: host) + [
                "add chain ip \(table) \(ports)",
                "add chain ip \(table) \(address)",
            ]
            if !record.ports.isEmpty {
                commands.append("add rule ip \(table) ports jump \(ports) comment \"\(tag)\"")
            }
            // A new connection reaching the host itself was not translated:
            // no backend. Refused at once. (Answers to the host's own
            // connections come this way too, established.)
            for port in record.ports {
                let destination = port.hostIP.map { "ip daddr \($0) " } ?? ""
                let refusal = port.protocol == .tcp ? "reject with tcp reset" : "reject"
                commands.append("add rule ip \(table) input \(destination)\(port.protocol.rawValue) dport \(port.hostPort) ct state new \(refusal) comment \"\(tag)\"")
            }
            if let virtual = record.virtualAddress, let bridge {
                // Before every other translation (a published port of the
                // host's addresses would match the address too); from its
                // own network and from the host only.
                commands += [
                    "insert rule ip \(table) prerouting iifname \"\(bridge)\" ip daddr \(virtual) jump \(address) comment \"\(tag)\"",
                    "insert rule ip \(table) output ip daddr \(virtual) jump \(address) comment \"\(tag)\"",
                    "add rule ip \(table) input ip daddr \(virtual) ct state new meta l4proto tcp reject with tcp reset comment \"\(tag)\"",
                    "add rule ip \(table) input ip daddr \(virtual) ct state new reject comment \"\(tag)\"",
                ]
            }
            try run(commands.joined(separator: "\n"), host: host)
        }
    }

    /// Replaces the translations of an endpoint's chains with ones choosing
    /// among `backends`, in one transaction.
    static func dispatchEndpoint(id: String, record: ServiceEndpointRecord, backends: [IPv4Address], host: NetworkHost) throws {
        let ports = portsChain(id), address = addressChain(id)
        var commands = ["flush chain ip \(table) \(ports)", "flush chain ip \(table) \(address)"]
        if !backends.isEmpty {
            let affinity = record.endpoint.affinity
            for port in record.ports {
                let destination = port.hostIP.map { "ip daddr \($0) " } ?? ""
                commands.append("add rule ip \(table) \(ports) \(destination)\(port.protocol.rawValue) dport \(port.hostPort) dnat ip to \(choice(backends, port: port.containerPort, affinity: affinity))")
            }
            if record.virtualAddress != nil, record.endpoint.virtualPorts.isEmpty {
                commands.append("add rule ip \(table) \(address) meta l4proto { tcp, udp } dnat ip to \(choice(backends, port: nil, affinity: affinity))")
            } else if record.virtualAddress != nil {
                // Only the ports asked for, each to its backends' port.
                for port in record.endpoint.virtualPorts {
                    commands.append("add rule ip \(table) \(address) \(port.protocol.rawValue) dport \(port.hostPort) dnat ip to \(choice(backends, port: port.containerPort, affinity: affinity))")
                }
            }
        }
        _ = try changing(host) { try run(commands.joined(separator: "\n"), host: host) }
    }

    /// The expression choosing a backend (and port): by a random number, or
    /// by a hash of the client's address.
    static func choice(_ backends: [IPv4Address], port: UInt16?, affinity: ServiceEndpoint.Affinity) -> String {
        let suffix = port.map { " . \($0)" } ?? ""
        if backends.count == 1 { return "\(backends[0])" + (port.map { ":\($0)" } ?? "") }
        let selector = switch affinity {
        case .none: "numgen random mod \(backends.count)"
        case .clientAddress: "jhash ip saddr mod \(backends.count) seed 0x6761"
        }
        let entries = backends.enumerated().map { "\($0.offset) : \($0.element)\(suffix)" }.joined(separator: ", ")
        return "\(selector) map { \(entries) }"
    }

    /// Whether the endpoint's chains are in the table.
    static func hasEndpoint(id: String, host: NetworkHost) -> Bool {
        (try? run("list chain ip \(table) \(portsChain(id))", host: host)) != nil
    }

    /// Deletes an endpoint's rules and chains (what is already gone is skipped).
    static func removeEndpoint(id: String, host: NetworkHost) throws {
        try changing(host) {
            var commands = deleteCommands(tagged: endpointTag(id), host: host)
            let chains = Set(listChains(host: host))
            for chain in [portsChain(id), addressChain(id)] where chains.contains(chain) {
                commands += ["flush chain ip \(table) \(chain)", "delete chain ip \(table) \(chain)"]
            }
            guard !commands.isEmpty else { return }
            try run(commands.joined(separator: "\n"), host: host)
        }
    }
}
