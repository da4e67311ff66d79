import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Volumes whose record cannot be read. The data directory is the volume;
/// its record holds only its name, labels and creation time, so a damaged
/// record is rebuilt from the directory, losing its labels and never data.
extension Volumes {
    /// The volumes whose directory is there but whose record cannot be
    /// read, by name.
    public func damaged() -> [DamagedRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { name in
            let path = directory + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
                  let reason = FileIO.damage(of: VolumeRecord.self, at: path + "/volume.json", lock: path)
            else { return nil }
            let source = access(path + "/_data", F_OK) == 0 ? "data directory \(path)/_data" : nil
            return DamagedRecord(name: name, file: path + "/volume.json", reason: reason, repairSource: source)
        }
    }

    /// Rebuilds the record of a damaged volume from its data directory:
    /// its name and data stay, its labels are lost.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound` when no damaged
    ///   volume has that name, `invalidState` when its data directory is gone.
    @discardableResult
    public func repair(_ name: String) throws -> VolumeRecord {
        guard let damaged = damaged().first(where: { $0.name == name }) else {
            throw RuntimeError(.notFound, "no volume named \(name) has a damaged record")
        }
        guard damaged.repairSource != nil else {
            throw RuntimeError(.invalidState, "the record of volume \(name), \(damaged.file), cannot be rebuilt: \(damaged.advice(kind: "volume"))")
        }
        let data = directory + "/" + name + "/_data"
        var info = stat()
        let created = stat(data, &info) == 0 ? Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec)) : Date()
        let record = VolumeRecord(name: name, labels: [:], createdAt: created, mountpoint: data)
        try FileIO.replaceStateFile(damaged.file, with: ContainerRuntime.encoder.encode(record))
        logger.warning("rebuilt a damaged volume record from its data directory; its labels are lost", metadata: ["volume": "\(name)"])
        return record
    }

    /// Removes a volume whose record cannot be read, and its data, unless a
    /// container mounts it.
    ///
    /// - Throws: ``RuntimeError`` with code `notFound` when no damaged
    ///   volume has that name, `invalidState` while a container mounts it.
    public func removeDamaged(_ name: String) throws {
        guard damaged().contains(where: { $0.name == name }) else {
            throw RuntimeError(.notFound, "no volume named \(name) has a damaged record")
        }
        let using = try containers(using: name)
        guard using.isEmpty else {
            throw RuntimeError(.invalidState, "volume \(name) is in use by \(using.joined(separator: ", ")); remove those containers first")
        }
        try Sys.removeTree(directory + "/" + name)
        logger.warning("removed a volume whose record could not be read, with its data", metadata: ["volume": "\(name)"])
    }
}
