import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Networks whose record cannot be read. The bridge of each network
/// carries, as its interface alias, what its record holds but its labels,
/// so that a damaged record can be rebuilt from the kernel while the bridge
/// exists; without it, only a forced removal is left.
extension Networks {
    /// What a bridge's alias says of its network.
    struct BridgeAlias: Hashable, Sendable {
        static let prefix = "gantry-network"

        var name: String
        var id: String
        var subnet: IPv4Subnet
        var `internal`: Bool

        init(_ record: NetworkRecord) {
            name = record.name
            id = record.id
            subnet = record.subnet
            `internal` = record.internal
        }

        /// Parses `gantry-network name=N id=ID subnet=S internal=0|1`.
        init?(parsing text: String) {
            let words = text.split(separator: " ")
            guard words.first == Substring(Self.prefix) else { return nil }
            var fields: [Substring: Substring] = [:]
            for word in words.dropFirst() {
                guard let equals = word.firstIndex(of: "=") else { return nil }
                fields[word[..<equals]] = word[word.index(after: equals)...]
            }
            guard let name = fields["name"], let id = fields["id"], id.count == 64, id.allSatisfy(\.isHexDigit),
                  let subnet = fields["subnet"].flatMap({ IPv4Subnet(String($0)) }), let flag = fields["internal"], flag == "0" || flag == "1"
            else { return nil }
            self.name = String(name)
            self.id = String(id)
            self.subnet = subnet
            `internal` = flag == "1"
        }

        var text: String { "\(Self.prefix) name=\(name) id=\(id) subnet=\(subnet) internal=\(`internal` ? 1 : 0)" }

        var bridge: String { "gt-" + id.prefix(12) }
    }

    /// Labels the bridge with what rebuilds its network's record.
    static func writeAlias(_ record: NetworkRecord) {
        try? FileIO.write(BridgeAlias(record).text, to: "/sys/class/net/\(record.bridge)/ifalias", code: .network)
    }

    /// The aliases of this root's bridges: the host's Gantry bridges; none
    /// for an ordinary user's network host (its bridges carry none, and the
    /// host's could be another root's).
    func hostBridgeAliases() -> [BridgeAlias] {
        host.isSystem ? Self.bridgeAliases() : []
    }

    /// The aliases of the host's Gantry bridges.
    static func bridgeAliases() -> [BridgeAlias] {
        let devices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        return devices.filter { $0.hasPrefix("gt-") }.compactMap { device in
            guard let text = try? String(contentsOfFile: "/sys/class/net/\(device)/ifalias", encoding: .utf8),
                  let alias = BridgeAlias(parsing: text.trimmingCharacters(in: .whitespacesAndNewlines)), alias.bridge == device
            else { return nil }
            return alias
        }
    }

    /// The networks whose directory is there but whose record cannot be
    /// read, by name.
    public func damaged() -> [DamagedRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let aliases = hostBridgeAliases()
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { name in
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
            let file = directory + "/" + name + "/network.json"
            guard let reason = FileIO.damage(of: NetworkRecord.self, at: file, lock: directory + "/" + name) else { return nil }
            let source = aliases.first { $0.name == name }.map { "bridge \($0.bridge)" }
            return DamagedRecord(name: name, file: file, reason: reason, repairSource: source)
        }
    }

    /// The lease files of readable networks that cannot be read. Each keeps
    /// its address taken; `name` is the network's, `repairSource` names the
    /// container whose record holds that address, if one does.
    public func damagedLeases() -> [DamagedRecord] {
        var found: [DamagedRecord] = []
        for network in (try? list()) ?? [] {
            let readable = Set(leases(network.name).map(\.address))
            for address in leasedAddresses(network.name).subtracting(readable).sorted() {
                let file = leasePath(network.name, address)
                let reason = FileIO.damage(of: NetworkLease.self, at: file, lock: directory + "/" + network.name) ?? "it changed while read"
                let holder = holder(of: address, on: network.name).map { "record of container \($0.id.prefix(12))" }
                found.append(DamagedRecord(name: network.name, file: file, reason: reason, repairSource: holder))
            }
        }
        return found
    }

    /// Rebuilds a damaged lease from the record of the container that holds
    /// its address; with `mayRemove` (nothing else could be using the
    /// address), removes it when no container record holds the address.
    func repairLease(_ damaged: DamagedRecord, mayRemove: Bool) throws {
        let addressText = ((damaged.file as NSString).lastPathComponent as NSString).deletingPathExtension
        guard let address = IPv4Address(addressText) else { throw RuntimeError(.invalidState, "\(damaged.file) is not a lease file") }
        try withLock(damaged.name) {
            if let holder = holder(of: address, on: damaged.name), let attachment = holder.network {
                let lease = NetworkLease(containerID: holder.id, name: holder.name, aliases: attachment.aliases, address: address,
                                         owner: containers + "/" + holder.id)
                try FileIO.replaceStateFile(damaged.file, with: ContainerRuntime.encoder.encode(lease))
                logger.warning("rebuilt a damaged network lease from its container's record", metadata: ["network": "\(damaged.name)", "address": "\(address)"])
            } else {
                guard mayRemove else {
                    throw RuntimeError(.invalidState, "the lease \(damaged.file) cannot be read and no container record holds its address; it is kept while a damaged container or pod record might")
                }
                unlink(damaged.file)
                logger.warning("removed a damaged network lease no container holds", metadata: ["network": "\(damaged.name)", "address": "\(address)"])
            }
        }
    }

    /// The container whose record says it holds `address` on `network`.
    private func holder(of address: IPv4Address, on network: String) -> ContainerRecord? {
        ContainerRuntime.records(in: containers).first { $0.network?.network == network && $0.network?.address == address }
    }

    /// Rebuilds the record of a damaged network from its bridge, as it was
    /// but its labels, and puts back the bridge's firewall rules.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound` when no damaged
    ///   network has that name, `invalidState` when its bridge is gone.
    @discardableResult
    public func repair(_ name: String) throws -> NetworkRecord {
        guard let damaged = damaged().first(where: { $0.name == name }) else {
            throw RuntimeError(.notFound, "no network named \(name) has a damaged record")
        }
        guard let alias = hostBridgeAliases().first(where: { $0.name == name }), let gateway = alias.subnet.address(1) else {
            throw RuntimeError(.invalidState, "the record of network \(name), \(damaged.file), cannot be rebuilt: \(damaged.advice(kind: "network"))")
        }
        var info = stat()
        let created = stat(directory + "/" + name, &info) == 0 ? Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec)) : Date()
        let record = NetworkRecord(id: alias.id, name: name, bridge: alias.bridge, subnet: alias.subnet, gateway: gateway,
                                   internal: alias.internal, labels: [:], createdAt: created)
        try withLock(name) {
            try Sys.makeDirectories(directory + "/" + name + "/leases", mode: 0o700)
            try FileIO.replaceStateFile(damaged.file, with: ContainerRuntime.encoder.encode(record))
        }
        try Firewall.removeRules(network: record.id, host: host)
        try Firewall.installNetwork(record, host: host)
        logger.warning("rebuilt a damaged network record from its bridge; its labels are lost", metadata: ["network": "\(name)", "bridge": "\(record.bridge)"])
        return record
    }

    /// Removes a network whose record cannot be read: its bridge and
    /// firewall rules (found by the bridge's alias), its address server and
    /// its directory.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound` when no damaged
    ///   network has that name, `invalidState` while containers use it.
    public func removeDamaged(_ name: String) throws {
        guard damaged().contains(where: { $0.name == name }) else {
            throw RuntimeError(.notFound, "no network named \(name) has a damaged record")
        }
        try withLock(name) {
            let users = leases(name).filter { access(owner(of: $0), F_OK) == 0 }
            guard users.isEmpty else {
                throw RuntimeError(.invalidState, "network \(name) is in use by \(users.map(\.name).sorted().joined(separator: ", "))")
            }
            if let alias = hostBridgeAliases().first(where: { $0.name == name }) {
                resolver.stop(networkID: alias.id)
                try Firewall.removeRules(network: alias.id, host: host)
                try RouteNetlink().deleteLink(alias.bridge)
            }
            try Sys.removeTree(directory + "/" + name)
        }
        logger.warning("removed a network whose record could not be read", metadata: ["network": "\(name)"])
    }
}

extension DamagedRecord {
    /// What a user of the `gantry` command can do about it, for messages:
    /// `kind` is `network` or `volume`.
    public func advice(kind: String) -> String {
        let removal = "`gantry \(kind) rm --force \(name)` removes it"
        guard let repairSource else { return "nothing is left to rebuild it from; " + removal }
        return "`gantry check --repair` rebuilds it from its \(repairSource), or " + removal
    }
}
