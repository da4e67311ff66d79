import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Containers and leases whose records cannot be read.
extension ContainerRuntime {
    /// The containers whose record cannot be read (a damaged or truncated
    /// `state.json`). They are listed nowhere else, but nothing of them is
    /// removed on that account: their processes may run and their names
    /// stay taken until ``removeDamaged(_:)`` is asked for.
    public func damagedContainers() -> [DamagedContainer] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.count == 64 && $0.allSatisfy(\.isHexDigit) }.sorted().compactMap { id in
            let path = containerDirectory(id) + "/state.json"
            guard access(path, F_OK) == 0 else { return nil }
            do {
                _ = try load(id)
                return nil
            } catch {
                return DamagedContainer(id: id, stateFile: path, reason: "\(error)", names: namesPointing(at: id),
                                        processes: (try? cgroups.processes(cgroupParent + "/" + id)) ?? [])
            }
        }
    }

    /// Mends a network lease that cannot be read (one of
    /// ``Networks/damagedLeases()``): rebuilt from the record of the
    /// container that holds its address, or removed when no container or
    /// pod holds it and no container or pod record is damaged (then nothing
    /// can be using the address).
    ///
    /// - Throws: ``RuntimeError`` with code `invalidState` when the lease is
    ///   kept because a damaged record might be its holder's.
    public func repairLease(_ damaged: DamagedRecord) throws {
        let pods = (try? self.pods.list()) ?? []
        let podDirectories = ((try? FileManager.default.contentsOfDirectory(atPath: self.pods.directory)) ?? []).filter { !$0.hasPrefix(".") }
        let podHolds = pods.contains { $0.network.map { "\(networks.directory)/\($0.network)/leases/\($0.address).json" } == damaged.file }
        try networks.repairLease(damaged, mayRemove: damagedContainers().isEmpty && !podHolds && podDirectories.count == pods.count)
    }

    /// Removes a container whose record cannot be read, given its name or
    /// ID: kills its processes (in this runtime's cgroup parent), and
    /// removes its cgroup, network lease, name, snapshot hold and directory.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound`, or `invalidState`
    ///   when its record can be read (remove it as usual then).
    public func removeDamaged(_ nameOrID: String) throws {
        let id = try resolveID(nameOrID)
        guard let damaged = damagedContainers().first(where: { $0.id == id }) else {
            throw RuntimeError(.invalidState, "container \(nameOrID) has a readable record; remove it as usual")
        }
        logger.warning("removing a container whose record cannot be read", metadata: ["id": "\(id.prefix(12))", "reason": "\(damaged.reason)"])
        try cgroups.remove(cgroupParent + "/" + id)
        removeNetworkLeftovers(removing: containerDirectory(id))
        for name in damaged.names { unlink(directory + "/names/" + name) }
        try images.releaseSnapshots(holder: id)
        try removeDirectory(of: id)
        live.withLock { _ = $0.removeValue(forKey: id) }
        writtenRecords.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// The names that point at a container.
    func namesPointing(at id: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/names")) ?? []).filter { name in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/names/" + name)) == id
        }.sorted()
    }
}
