import CGantryLauncher
import CGantrySystem
import Foundation
import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The bridge networks of a state root, and the containers' places on them.
///
/// Each network is a directory under `networks/` holding `network.json`
/// and one lease file per address in use (`leases/<address>.json`), changed
/// under the directory's lock so that processes sharing the root agree.
/// Kernel objects are named from IDs, never from user names: the bridge
/// `gt-<network ID>`, and per container the host end of its veth pair
/// `gv-<container ID>`. A lease is written before the devices it stands
/// for, so that whatever a crash leaves can be found and removed.
///
/// Creating and removing wait for locks that other processes may hold and
/// talk to the kernel, so they are `async`: the work runs on Gantry's
/// threads for blocking work, never on Swift's cooperative pool.
public final class Networks: Sendable {
    /// The name of the network created on first use when none is named.
    public static let defaultName = "gantry"

    let directory: String
    let containers: String
    let logger: Logger
    let resolver: NetworkResolver
    /// Where the bridges are: the host's network namespace, or an ordinary
    /// user's own.
    let host: NetworkHost

    init(root: String, containers: String, nameservers: [NetworkResolver.Upstream]?, host: NetworkHost, logger: Logger) throws {
        directory = root
        self.containers = containers
        self.logger = logger
        self.host = host
        resolver = NetworkResolver(upstreams: nameservers, host: host, leases: { Self.leases(in: root, network: $0) }, networkID: { name in
            (try? FileIO.readNamedRecord(NetworkRecord.self, in: root, named: name, file: "network.json"))??.id
        })
        try Sys.makeDirectories(directory, mode: 0o711)
        // Searchable, not listable: a container that root runs in a user
        // namespace binds its member files from below, as its mapped root.
        chmod(directory, 0o711)
    }

    // MARK: - Networks

    /// Creates a network.
    ///
    /// - Parameters:
    ///   - name: unique among the root's networks.
    ///   - subnet: its addresses; a free /24 from 10.88.0.0/14 when nil
    ///     (one neither another network nor a host route uses).
    ///   - internal: no route out; its containers reach only each other.
    ///   - labels: free-form labels.
    /// - Throws: ``RuntimeError`` with code `invalidSpec` for a taken name
    ///   or an unusable subnet, `network` when the bridge cannot be made.
    @discardableResult
    public func create(_ name: String, subnet: IPv4Subnet? = nil, internal: Bool = false, labels: [String: String] = [:]) async throws -> NetworkRecord {
        try await offload { [self] _ in try create(name, subnet: subnet, internal: `internal`, labels: labels) }
    }

    /// Creates a network, on the calling thread.
    @discardableResult
    func create(_ name: String, subnet: IPv4Subnet? = nil, internal: Bool = false, labels: [String: String] = [:]) throws -> NetworkRecord {
        try ContainerRuntime.validate(name: name, kind: "network")
        guard !["bridge", "none", "host"].contains(name) else {
            throw RuntimeError(.invalidSpec, "a network cannot be named \(name): --network \(name) stands for a network mode")
        }
        return try host.withLock("networks.lock") {
            let existing = try list()
            if existing.contains(where: { $0.name == name }) {
                throw RuntimeError(.invalidSpec, "a network named \(name) already exists")
            }
            let routed = try RouteNetlink().routedSubnets()
            let chosen: IPv4Subnet
            if let subnet {
                guard subnet.prefixLength >= 8, subnet.prefixLength <= 29 else {
                    throw RuntimeError(.invalidSpec, "subnet \(subnet) of network \(name) must have a prefix length from 8 to 29")
                }
                if let clash = existing.first(where: { $0.subnet.overlaps(subnet) }) {
                    throw RuntimeError(.invalidSpec, "subnet \(subnet) of network \(name) overlaps network \(clash.name) (\(clash.subnet))")
                }
                if let clash = routed.first(where: { $0.overlaps(subnet) }) {
                    throw RuntimeError(.invalidSpec, "subnet \(subnet) of network \(name) overlaps the host's route to \(clash)")
                }
                chosen = subnet
            } else {
                let taken = existing.map(\.subnet) + routed
                guard let free = (0 ..< 1024).lazy.compactMap({ IPv4Subnet(IPv4Address(0x0A58_0000 + ($0 << 8)), prefixLength: 24) })
                    .first(where: { candidate in !taken.contains { $0.overlaps(candidate) } })
                else { throw RuntimeError(.invalidSpec, "no free /24 is left in 10.88.0.0/14 for network \(name); give a subnet") }
                chosen = free
            }
            let id = ContainerRuntime.newID()
            let record = NetworkRecord(id: id, name: name, bridge: "gt-" + id.prefix(12), subnet: chosen,
                                       gateway: chosen.address(1)!, internal: `internal`, labels: labels, createdAt: Date())
            let networkDirectory = directory + "/" + name
            let created = try FileIO.createRecordDirectory(name, in: directory, mode: 0o711) { staging in
                try Sys.makeDirectories(staging + "/leases", mode: 0o700)
                try FileIO.replaceStateFile(staging + "/network.json", with: ContainerRuntime.encoder.encode(record))
            }
            guard created else {
                if let damaged = damaged().first(where: { $0.name == name }) {
                    throw RuntimeError(.invalidState, "network \(name) exists but its record \(damaged.file) cannot be read (\(damaged.reason)); \(damaged.advice(kind: "network"))")
                }
                throw RuntimeError(.invalidSpec, "a network named \(name) already exists")
            }
            do {
                try ensureBridge(record)
            } catch {
                try? removeBridge(record)
                try? Sys.removeTree(networkDirectory)
                throw error
            }
            logger.debug("created network", metadata: ["network": "\(name)", "subnet": "\(chosen)"])
            return record
        }
    }

    /// Every network of the root, by name.
    public func list() throws -> [NetworkRecord] {
        FileIO.readNamedRecords(NetworkRecord.self, in: directory, file: "network.json").sorted { $0.name < $1.name }
    }

    /// The network named `name`.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   when its record cannot be read.
    public func network(_ name: String) throws -> NetworkRecord {
        try FileIO.readRecord(NetworkRecord.self, kind: "network", named: name, in: directory, file: "network.json", damaged: damaged)
    }

    /// The network a container or pod is to join: the default network,
    /// created on first use, or another one, which must exist.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`.
    func joinable(_ name: String) throws -> NetworkRecord {
        name == Self.defaultName ? try defaultNetwork() : try network(name)
    }

    /// The default network, created on first use.
    public func defaultNetwork() async throws -> NetworkRecord {
        try await offload { [self] _ in try defaultNetwork() }
    }

    /// The default network, created on first use, on the calling thread.
    func defaultNetwork() throws -> NetworkRecord {
        if let record = try? network(Self.defaultName) { return record }
        do {
            return try create(Self.defaultName)
        } catch let error as RuntimeError where error.code == .invalidSpec {
            // Another process made it meanwhile.
            return try network(Self.defaultName)
        }
    }

    /// The containers on a network: their names, aliases and addresses.
    public func members(of name: String) throws -> [(containerID: String, name: String, address: IPv4Address)] {
        _ = try network(name)
        return leases(name).filter { $0.virtual != true }.map { ($0.containerID, $0.name, $0.address) }
    }

    /// Removes a network and its bridge.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` while containers use it.
    public func remove(_ name: String) async throws {
        try await offload { [self] _ in try remove(name) }
    }

    /// Removes a network and its bridge, on the calling thread.
    func remove(_ name: String) throws {
        let record = try network(name)
        try withLock(name) {
            let users = leases(name)
            guard users.isEmpty else {
                throw RuntimeError(.invalidState, "network \(name) is in use by \(users.map(\.name).sorted().joined(separator: ", "))")
            }
            resolver.stop(networkID: record.id)
            try removeBridge(record)
            try Sys.removeTree(directory + "/" + name)
        }
        stopHostIfIdle()
    }

    /// Ends an ordinary user's network host once nothing uses it: no lease
    /// on any network, no namespace file bound there. (A lease is written
    /// before the host is started for it, so one written meanwhile is seen
    /// or finds the host stopped and starts it again; the bridges and
    /// rules come back with it.)
    func stopHostIfIdle() {
        guard !host.isSystem else { return }
        host.stopIfIdle { [self] in
            ((try? list()) ?? []).contains { !leasedAddresses($0.name).isEmpty }
        }
    }

    // MARK: - Containers

    /// Puts a container (or a pod) on a network: a lease, a network
    /// namespace bound at `owner/netns`, a veth pair between the namespace (`eth0`, with the
    /// leased address and the default route) and the bridge, and the
    /// container's `hosts` file (and those of the other members, which
    /// learn its name). `owner` is the directory of the container or pod:
    /// while it exists, the lease and port claims are in use. On failure
    /// nothing of it is left.
    ///
    /// With `device` above 0 the container joins another network besides
    /// its first: the namespace is the first's, the device `eth<device>`,
    /// with no default route and no published ports.
    func attach(containerID: String, name: String, aliases: [String], ports: [PublishedPort], to networkName: String,
                owner: String, device: Int = 0, extraHosts: [String: String] = [:]) throws -> NetworkAttachment {
        let namespacePath = owner + "/netns"
        let record = try network(networkName)
        for alias in aliases { try ContainerRuntime.validate(name: alias, kind: "network alias") }
        if record.internal, !ports.isEmpty {
            throw RuntimeError(.invalidSpec, "\(name) publishes ports on network \(networkName), which is internal: nothing outside reaches it")
        }
        let joining = device > 0
        precondition(!joining || ports.isEmpty, "ports are published through a container's first network")
        let hostInterface = joining ? Self.hostInterface(containerID, device: device) : Self.hostInterface(containerID)
        let interface = "eth\(device)"
        if joining {
            // A network namespace can be on a network once.
            if leases(networkName).contains(where: { $0.containerID == containerID }) {
                throw RuntimeError(.invalidSpec, "\(name) is on network \(networkName) already")
            }
        }
        return try withLock(networkName) {
            // The lease first: it is what recovery finds. An address is
            // taken while its lease file exists, readable or not.
            let taken = leasedAddresses(networkName)
            let broadcast = record.subnet.broadcast
            var index: UInt32 = 2
            var chosen: IPv4Address?
            while let candidate = record.subnet.address(index), candidate != broadcast {
                if !taken.contains(candidate), candidate != record.gateway { chosen = candidate; break }
                index += 1
            }
            guard let address = chosen else { throw RuntimeError(.network, "network \(networkName) has no free address left in \(record.subnet)") }
            // The host is the gateway, as seen from the network.
            let hosts = extraHosts.mapValues { $0 == ContainerSpec.hostGateway ? record.gateway.description : $0 }
            let lease = NetworkLease(containerID: containerID, name: name, aliases: aliases, address: address, owner: owner,
                                     hostInterface: joining ? hostInterface : nil, extraHosts: hosts.isEmpty ? nil : hosts)
            let leasePath = leasePath(networkName, address)
            try FileIO.replaceStateFile(leasePath, with: ContainerRuntime.encoder.encode(lease))
            var published: [PublishedPort] = []
            do {
                try Sys.makeDirectories(memberDirectory(networkName, containerID), mode: 0o711)
                for path in [directory + "/" + networkName, directory + "/" + networkName + "/members"] { chmod(path, 0o711) }
                try Self.writeResolverConfiguration(to: memberDirectory(networkName, containerID) + "/resolv.conf", network: record,
                                                    fallback: host.isSystem ? nil : NetworkHost.nameserver)
                try ensureBridge(record)
                do {
                    try resolver.serve(record)
                } catch {
                    logger.warning("container names on this network resolve only through hosts files", metadata: ["network": "\(networkName)", "error": "\(error)"])
                }
                if !joining { try host.createNamespace(at: namespacePath) }
                let namespaceFile = host.namespaceFile(namespacePath)
                let outside = try host.routeNetlink()
                guard let bridge = try outside.link(record.bridge) else { throw RuntimeError(.network, "bridge \(record.bridge) of network \(networkName) is gone") }
                guard let namespace = OwnedDescriptor(opening: namespaceFile, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(.network, "cannot open \(namespacePath)", underlying: Sys.errno) }
                // The hardware address follows from the IP address (as
                // Docker's does): neighbours that knew an earlier holder of
                // the address, whose entries stay valid for seconds, still
                // reach the right device.
                try outside.createVethPair(hostInterface, master: bridge.index, peer: interface, peerNamespace: namespace.raw,
                                           peerAddress: Self.hardwareAddress(address))
                // IPv4 only: with IPv6 up, a container could send router
                // advertisements that the host and its neighbours obey.
                try disableIPv6(hostInterface)
                try enableHairpin(hostInterface)
                guard gantry_write_in_netns(namespace.raw, "/proc/sys/net/ipv6/conf/\(interface)/disable_ipv6", "1") == 0 || errno == ENOENT else {
                    throw RuntimeError(.network, "cannot turn IPv6 off on \(interface) in \(namespacePath)", underlying: Sys.errno)
                }
                // Any port may be bound in the container's own namespace, as
                // Docker allows: its root may be a user namespace's, which
                // this namespace (the host's user namespace owns it) would
                // hold to ports from 1024.
                guard gantry_write_in_netns(namespace.raw, "/proc/sys/net/ipv4/ip_unprivileged_port_start", "0") == 0 else {
                    throw RuntimeError(.network, "cannot open the ports below 1024 in \(namespacePath)", underlying: Sys.errno)
                }
                let inside = try RouteNetlink(namespace: namespaceFile)
                if let loopback = try inside.link("lo") { try inside.setUp(loopback.index, name: "lo") }
                guard let device = try inside.link(interface) else { throw RuntimeError(.network, "\(interface) did not appear in \(namespacePath)") }
                try inside.addAddress(address, prefixLength: record.subnet.prefixLength, index: device.index, name: interface)
                try inside.setUp(device.index, name: interface)
                // The route out is the first network's.
                if !record.internal, !joining { try inside.addDefaultRoute(via: record.gateway, index: device.index) }
                if joining {
                    // No ports: they are published through the first network.
                } else if host.isSystem {
                    published = try claimPorts(ports, owner: owner)
                    try Firewall.installPorts(containerID: containerID, address: address, ports: published, host: host)
                } else {
                    // pasta binds them on the host (as the container's start
                    // does), into the container's own loopback; slirp4netns
                    // forwards them to this namespace's own address, where
                    // these rules take them on to the container.
                    published = try UserModeNetwork.attachment(ports: ports).ports
                    if UserModeNetwork.slirp4netns != nil {
                        try Firewall.installPorts(containerID: containerID, address: address, ports: published.map(\.onNetworkHost), host: host)
                    }
                }
            } catch {
                try? release(containerID: containerID, from: networkName, owner: owner)
                throw error
            }
            let attachment = NetworkAttachment(network: networkName, networkID: record.id, address: address,
                                               prefixLength: record.subnet.prefixLength, gateway: record.gateway,
                                               hostInterface: hostInterface, aliases: aliases, ports: published)
            try writeHostsFiles(networkName)
            return attachment
        }
    }

    /// Takes a container off a network: its veth pair, namespace file and
    /// lease, and its name from the other members' `hosts` files. What is
    /// already gone is skipped.
    func detach(containerID: String, from networkName: String, owner: String) throws {
        try withLock(networkName) {
            try release(containerID: containerID, from: networkName, owner: owner)
            try writeHostsFiles(networkName)
        }
        stopHostIfIdle()
    }

    /// Takes a container off the networks it is on besides its first
    /// (what ``attach(containerID:name:aliases:ports:to:owner:device:)``
    /// with a device above 0 made), before its first network's namespace goes.
    func detachAdditional(containerID: String) throws {
        for record in (try? list()) ?? [] where leases(record.name).contains(where: { $0.containerID == containerID && $0.hostInterface != nil }) {
            try withLock(record.name) {
                try release(containerID: containerID, from: record.name, owner: "")
                try writeHostsFiles(record.name)
            }
        }
    }

    private func release(containerID: String, from networkName: String, owner: String) throws {
        let held = leases(networkName).filter { $0.containerID == containerID }
        if let interface = held.lazy.compactMap(\.hostInterface).first {
            // A network besides the container's first: its device and
            // lease; the namespace and ports are the first network's.
            _ = try host.routeNetlinkIfRunning()?.deleteLink(interface)
            try Sys.removeTree(memberDirectory(networkName, containerID))
            for lease in held { unlink(leasePath(networkName, lease.address)) }
            return
        }
        if held.contains(where: { $0.virtual == true }), let network = try? network(networkName) {
            // An endpoint's virtual address, whose endpoint is gone.
            try Firewall.removeEndpoint(id: containerID, host: host)
            releasePorts(owner: owner)
            for lease in held { try releaseVirtualAddress(lease, on: network) }
            try? Sys.removeTree(owner)
            return
        }
        if host.isSystem {
            try Firewall.removeRules(container: containerID, host: host)
            releasePorts(owner: owner)
        } else if UserModeNetwork.slirp4netns != nil, host.holder() != nil {
            try Firewall.removeRules(container: containerID, host: host)
        }
        // An ordinary user's network host that no longer runs took the
        // devices with it.
        _ = try host.routeNetlinkIfRunning()?.deleteLink(Self.hostInterface(containerID))
        try host.removeNamespace(at: owner + "/netns")
        try Sys.removeTree(memberDirectory(networkName, containerID))
        for lease in leases(networkName) where lease.containerID == containerID {
            unlink(leasePath(networkName, lease.address))
        }
    }

    /// Removes what containers and pods that no longer exist left on the
    /// networks: leases whose owner is gone, with their veth pairs.
    func removeLeftovers(isKnown: (_ owner: String) -> Bool) {
        for record in (try? list()) ?? [] {
            for lease in leases(record.name) where !isKnown(owner(of: lease)) {
                logger.info("removing a network lease a container left behind", metadata: ["network": "\(record.name)", "address": "\(lease.address)"])
                try? detach(containerID: lease.containerID, from: record.name, owner: owner(of: lease))
            }
        }
    }

    /// The directory a lease belongs to.
    func owner(of lease: NetworkLease) -> String { lease.owner ?? containers + "/" + lease.containerID }

    /// The hardware address of a member with `address`: locally
    /// administered, unicast, ending in the IP address.
    static func hardwareAddress(_ address: IPv4Address) -> [UInt8] { [0x02, 0x47] + address.octets }

    /// The host end of a container's veth pair (at most 15 characters).
    static func hostInterface(_ containerID: String) -> String { "gv-" + containerID.prefix(12) }

    /// The host end of the veth pair of a container's network `device` (1
    /// and up) besides its first.
    static func hostInterface(_ containerID: String, device: Int) -> String {
        let prefix = "gv\(device)-"
        return prefix + containerID.prefix(15 - prefix.count)
    }

    // MARK: - Files

    /// Where a member's generated files are (`hosts`, `resolv.conf`):
    /// outside the container's directory, which its root file system covers
    /// in its mount namespace.
    func memberDirectory(_ network: String, _ containerID: String) -> String {
        directory + "/" + network + "/members/" + containerID
    }

    func leasePath(_ network: String, _ address: IPv4Address) -> String {
        directory + "/" + network + "/leases/" + address.description + ".json"
    }

    func leases(_ network: String) -> [NetworkLease] { Self.leases(in: directory, network: network) }

    /// The addresses that have a lease file, whether it can be read or not.
    func leasedAddresses(_ network: String) -> Set<IPv4Address> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + network + "/leases")) ?? []
        return Set(names.compactMap { $0.hasSuffix(".json") ? IPv4Address(String($0.dropLast(5))) : nil })
    }

    static func leases(in directory: String, network: String) -> [NetworkLease] {
        let path = directory + "/" + network + "/leases"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.compactMap { name in
            FileManager.default.contents(atPath: path + "/" + name).flatMap { try? ContainerRuntime.decoder.decode(NetworkLease.self, from: $0) }
        }.sorted { $0.address < $1.address }
    }

    /// Rewrites the `hosts` file of every member: the standard entries, its
    /// own name, and every other member's name and aliases. Written in
    /// place, since each is bound into its container by inode.
    func writeHostsFiles(_ network: String) throws {
        let members = leases(network)
        // A container on several networks learns the members of each, in
        // the file of its first network (the one bound into it).
        var membersOf = [network: members]
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { !$0.hasPrefix(".") && $0 != network }
        if !names.isEmpty {
            for other in names where access(directory + "/" + other + "/leases", F_OK) == 0 { membersOf[other] = leases(other) }
        }
        let multiHomed = Set(membersOf.values.joined().filter { $0.hostInterface != nil }.map(\.containerID))
        for member in members {
            var text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            var first = network
            var peers = [member] + members.filter { $0.containerID != member.containerID }
            if multiHomed.contains(member.containerID) {
                let joined = membersOf.filter { $0.value.contains { $0.containerID == member.containerID } }.sorted { $0.key < $1.key }
                first = joined.first { $0.value.contains { $0.containerID == member.containerID && $0.hostInterface == nil } }?.key ?? network
                let own = joined.flatMap { $0.value.filter { $0.containerID == member.containerID } }
                let others = joined.flatMap { $0.value.filter { $0.containerID != member.containerID } }
                peers = own.sorted { ($0.hostInterface ?? "") < ($1.hostInterface ?? "") } + others
            }
            let path = memberDirectory(first, member.containerID) + "/hosts"
            for peer in peers {
                let names = [peer.name, String(peer.containerID.prefix(12))] + peer.aliases
                text += "\(peer.address)\t\(names.joined(separator: " "))\n"
            }
            let added = peers.first { $0.containerID == member.containerID && $0.hostInterface == nil }?.extraHosts ?? [:]
            for (name, address) in added.sorted(by: { $0.key < $1.key }) { text += "\(address)\t\(name)\n" }
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { continue }
            _ = text.utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, $0.count - 1) }
            close(fd)
        }
    }

    /// Writes the `resolv.conf` of a container on a bridge network: the
    /// network's embedded name server first, then (unless the network is
    /// internal) the host's name servers but loopback ones, which inside
    /// the container would be its own loopback; they answer when no process
    /// serves the network. The host's search and options lines are kept.
    static func writeResolverConfiguration(to path: String, network: NetworkRecord, fallback: IPv4Address? = nil) throws {
        let host = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        var lines = ["nameserver \(network.gateway)"]
        // An ordinary user's network host reaches the host's own resolvers
        // (loopback ones too) through pasta, and only so.
        if let fallback, !network.internal { lines.append("nameserver \(fallback)") }
        for line in host.split(separator: "\n") {
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard let keyword = fields.first else { continue }
            if keyword == "nameserver" {
                guard fallback == nil, !network.internal, fields.count > 1, !fields[1].hasPrefix("127."), fields[1] != "::1" else { continue }
            } else if keyword != "search", keyword != "options" {
                continue
            }
            lines.append(String(line))
        }
        try FileIO.replaceStateFile(path, with: Data((lines.joined(separator: "\n") + "\n").utf8))
        chmod(path, 0o644)
    }

    // MARK: - Published ports

    /// Where claims on host ports are: host-wide, as the ports are, and
    /// gone with a reboot, as the rules are.
    static let portClaims = "/run/gantry/ports"

    /// Claims host ports for a container's published ports, choosing free
    /// ones for those asked as 0. A claim is a file naming the owner's
    /// directory; one whose owner is gone is stale and taken over.
    func claimPorts(_ ports: [PublishedPort], owner: String) throws -> [PublishedPort] {
        guard !ports.isEmpty else { return [] }
        try Sys.makeDirectories(Self.portClaims, mode: 0o700)
        var claimed: [PublishedPort] = []
        do {
            for var port in ports {
                if port.hostPort == 0 {
                    var attempts = 0
                    repeat {
                        attempts += 1
                        guard attempts <= 64, let free = Self.freeHostPort(port.protocol) else {
                            throw RuntimeError(.network, "no free \(port.protocol.rawValue) port is left on the host")
                        }
                        port.hostPort = free
                    } while !(try claim(port, owner: owner))
                } else {
                    guard try claim(port, owner: owner) else {
                        throw RuntimeError(.invalidSpec, "host port \(port.hostPort)/\(port.protocol.rawValue) is already published by another container")
                    }
                    if let failure = Self.bindFailure(port) {
                        unlink(Self.claimPath(port))
                        if failure == EADDRNOTAVAIL, let address = port.hostIP {
                            throw RuntimeError(.invalidSpec, "cannot publish port \(port.hostPort)/\(port.protocol.rawValue) on \(address): it is not an address of this host")
                        }
                        if failure == EADDRINUSE {
                            throw RuntimeError(.invalidSpec, "host port \(port.hostPort)/\(port.protocol.rawValue) is in use by a program on the host")
                        }
                        throw RuntimeError(.network, "cannot publish port \(port.hostPort)/\(port.protocol.rawValue)", underlying: Errno(rawValue: failure))
                    }
                }
                claimed.append(port)
            }
        } catch {
            claimed.forEach { unlink(Self.claimPath($0)) }
            throw error
        }
        return claimed
    }

    /// Takes the claim on a port; false when a live container holds it.
    ///
    /// A claim appears whole or not at all: it is written to an unnamed
    /// file that is then linked at its name, so that a process killed at
    /// any moment leaves no empty claim that nobody could tell from a
    /// claim being written.
    private func claim(_ port: PublishedPort, owner: String) throws -> Bool {
        let path = Self.claimPath(port)
        func failure() -> RuntimeError { RuntimeError(.network, "cannot claim host port \(port.hostPort)", underlying: Sys.errno) }
        // O_TMPFILE, which the C headers define as a macro Swift cannot import.
        let unnamed = OwnedDescriptor(open(Self.portClaims, 0o20000000 | O_DIRECTORY | O_WRONLY | O_CLOEXEC, 0o600))
        guard unnamed.raw >= 0 else { throw failure() }
        let bytes = Array(owner.utf8)
        guard bytes.withUnsafeBytes({ write(unnamed.raw, $0.baseAddress, $0.count) }) == bytes.count else { throw failure() }
        for _ in 0 ..< 2 {
            if linkat(AT_FDCWD, "/proc/self/fd/\(unnamed.raw)", AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 { return true }
            guard errno == EEXIST else { throw failure() }
            let holder = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if holder == owner { return true }
            // A claim whose container is gone is stale, and so is an empty
            // one (left by versions that wrote claims in place).
            guard holder.isEmpty || access(holder, F_OK) != 0 else { return false }
            unlink(path)
        }
        return false
    }

    func releasePorts(owner: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: Self.portClaims)) ?? [] {
            let path = Self.portClaims + "/" + name
            if (try? String(contentsOfFile: path, encoding: .utf8)) == owner { unlink(path) }
        }
    }

    private static func claimPath(_ port: PublishedPort) -> String {
        portClaims + "/\(port.protocol.rawValue)-\(port.hostPort)"
    }

    /// A port the kernel picks as free now.
    static func freeHostPort(_ transport: PublishedPort.TransportProtocol) -> UInt16? {
        let fd = socket(AF_INET, (transport == .tcp ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? UInt16(bigEndian: address.sin_port) : nil
    }

    /// Why the port cannot be bound on the host (an errno: `EADDRINUSE`
    /// when a program listens on it, `EADDRNOTAVAIL` when its address is
    /// not the host's), or nil when it is free.
    private static func bindFailure(_ port: PublishedPort) -> Int32? {
        let fd = socket(AF_INET, (port.protocol == .tcp ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.hostPort.bigEndian
        address.sin_addr.s_addr = (port.hostIP?.value ?? 0).bigEndian
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        return bound ? nil : errno
    }

    // MARK: - Kernel objects

    /// Makes the bridge (with its address and rules) if it is missing, as after a reboot.
    func ensureBridge(_ record: NetworkRecord) throws {
        let outside = try host.routeNetlink()
        if try outside.link(record.bridge) != nil { return }
        // A hardware address of its own: a bridge without one takes the
        // lowest of its ports', which changes as members come, and members
        // whose neighbour entries hold the old one lose their answers.
        try outside.createBridge(record.bridge, address: Self.hardwareAddress(record.gateway))
        try disableIPv6(record.bridge)
        guard let bridge = try outside.link(record.bridge) else { throw RuntimeError(.network, "bridge \(record.bridge) did not appear") }
        try outside.addAddress(record.gateway, prefixLength: record.subnet.prefixLength, index: bridge.index, name: record.bridge)
        if host.isSystem { Self.writeAlias(record) }
        try Firewall.installNetwork(record, host: host)
    }

    /// Turns IPv6 off on a host device (where the host has IPv6 at all; an
    /// ordinary user's network host has it off for every device).
    private func disableIPv6(_ device: String) throws {
        guard host.isSystem else { return }
        let path = "/proc/sys/net/ipv6/conf/\(device)/disable_ipv6"
        guard access(path, F_OK) == 0 else { return }
        try FileIO.write("1", to: path, code: .network)
    }

    /// Lets the bridge send a frame back out of the port it came in on, as
    /// kubelet's hairpin mode does: a container that reaches its own
    /// service's virtual address or published port, and is chosen as the
    /// backend, reaches itself (or is refused at once when nothing listens).
    private func enableHairpin(_ device: String) throws {
        guard host.isSystem else { return }
        let path = "/sys/class/net/\(device)/brport/hairpin_mode"
        guard access(path, F_OK) == 0 else { return }
        try FileIO.write("1", to: path, code: .network)
    }

    private func removeBridge(_ record: NetworkRecord) throws {
        guard host.isSystem || host.holder() != nil else { return }
        try Firewall.removeRules(network: record.id, host: host)
        _ = try host.routeNetlinkIfRunning()?.deleteLink(record.bridge)
    }

    /// A new namespace of `type` (network, IPC or UTS, the last with
    /// `hostname`), bound onto a file at `path`.
    static func createNamespace(at path: String, type: UInt64 = GANTRY_CLONE_NEWNET, hostname: String? = nil) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot create the namespace file \(path)", underlying: Sys.errno) }
        close(fd)
        guard gantry_namespace_create(path, Int32(type), hostname) == 0 else {
            let error = Sys.errno
            unlink(path)
            throw RuntimeError(.network, "cannot create a namespace at \(path)", underlying: error)
        }
    }

    /// Removes a namespace file made by ``createNamespace(at:type:hostname:)``
    /// (what is already gone is skipped).
    static func removeNamespace(at path: String) throws {
        if umount2(path, Int32(MNT_DETACH)) != 0, errno != EINVAL, errno != ENOENT {
            throw RuntimeError(.network, "cannot unmount the namespace \(path)", underlying: Sys.errno)
        }
        unlink(path)
    }

    // MARK: - Locks

    /// Runs `body` holding the network's lock (its directory, flock'd).
    func withLock<T>(_ network: String, _ body: () throws -> T) throws -> T {
        guard let lock = OwnedDescriptor(opening: directory + "/" + network, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { throw RuntimeError(.notFound, "no network is named \(network)", underlying: Sys.errno) }
        flock(lock.raw, LOCK_EX)
        return try body()
    }

    /// Runs `body` holding `/run/gantry/<name>` locked (flock), a lock of
    /// the whole host: its network devices and rules are shared by every
    /// state root and process.
    static func withHostLock<T>(_ name: String, _ body: () throws -> T) throws -> T {
        try Sys.makeDirectories("/run/gantry", mode: 0o700)
        guard let lock = OwnedDescriptor(opening: "/run/gantry/" + name, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600) else { throw RuntimeError(.network, "cannot open the host's lock /run/gantry/\(name)", underlying: Sys.errno) }
        flock(lock.raw, LOCK_EX)
        return try body()
    }
}
