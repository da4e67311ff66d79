import Foundation
import Logging
import Tracing
#if canImport(Glibc)
import Glibc
#endif

/// One layer of an image, as the snapshotter needs it.
struct LayerSource: Sendable {
    var descriptor: Descriptor
    var diffID: Digest
}

/// Unpacks each layer once into `snapshots/<chain-id>/`, ready to be stacked
/// as overlayfs lower directories.
///
/// A layer is unpacked into a scratch directory and renamed into place only
/// when complete and verified, so a snapshot directory is always whole. When
/// two processes prepare the same layer at once, the first rename wins and
/// the other discards its copy.
struct Snapshotter: Sendable {
    let root: StateRoot
    let content: ContentStore
    let database: MetadataDatabase
    let expansionLimit: LayerExpansionLimit
    /// Without privileges: the user namespace whose IDs files belong to.
    let userNamespace: UserNamespaceMapping?
    let logger: Logger

    /// The directory of the snapshot `chainID`.
    static func directory(for chainID: Digest, in root: StateRoot) -> String {
        root.snapshots + "/" + chainID.encoded
    }

    /// The chain IDs of a stack of layers: the first is the first DiffID, each
    /// next is `sha256(previous + " " + diffID)`.
    static func chainIDs(_ diffIDs: [Digest]) -> [Digest] {
        var result: [Digest] = []
        for diffID in diffIDs {
            guard let previous = result.last else {
                result.append(diffID)
                continue
            }
            result.append(Digest.compute(Array("\(previous) \(diffID)".utf8)))
        }
        return result
    }

    /// Makes sure every layer has a snapshot; returns them base first.
    func prepare(
        _ layers: [LayerSource], privileged: Bool, progress: ImageProgressHandler?, isCancelled: @escaping @Sendable () -> Bool
    ) throws -> [Snapshot] {
        let chainIDs = Self.chainIDs(layers.map(\.diffID))
        var snapshots: [Snapshot] = []
        for (index, layer) in layers.enumerated() {
            let chainID = chainIDs[index]
            let parent = index > 0 ? chainIDs[index - 1] : nil
            let directory = Self.directory(for: chainID, in: root)
            if let existing = try database.snapshot(chainID, root: root), Sys.lstat(directory) != nil {
                snapshots.append(existing)
                continue
            }
            // A directory without a record was renamed into place by a process
            // that stopped before recording it; it is complete, of unknown size.
            var size: Int64 = 0
            if Sys.lstat(directory) == nil {
                size = try unpack(layer, into: directory, lowers: snapshots.reversed().map(\.directory), index: index, count: layers.count,
                                  privileged: privileged, progress: progress, isCancelled: isCancelled)
            }
            try database.addSnapshot(chainID: chainID, parent: parent, diffID: layer.diffID, size: size)
            guard let snapshot = try database.snapshot(chainID, root: root) else {
                throw OCIImageError(.systemCall, "snapshot \(chainID) vanished while being recorded")
            }
            snapshots.append(snapshot)
        }
        return snapshots
    }

    private func unpack(
        _ layer: LayerSource, into directory: String, lowers: [String], index: Int, count: Int,
        privileged: Bool, progress: ImageProgressHandler?, isCancelled: @escaping @Sendable () -> Bool
    ) throws -> Int64 {
        let scratch = root.snapshots + "/.tmp-" + Sys.randomSuffix()
        try Sys.check("mkdir", scratch) { mkdir(scratch, 0o755) }
        do {
            var options = LayerUnpackOptions(
                whiteouts: .overlay(lowerLayers: lowers), privileged: privileged, expectedDiffID: layer.diffID,
                expectedSize: layer.descriptor.size, expansionLimit: expansionLimit,
                progress: ImageProgress.unpacking(layer.descriptor, index: index, count: count, handler: progress),
                isCancelled: isCancelled)
            if !privileged { options.userNamespace = userNamespace }
            let report = try withSpan("unpack") { span in
                span.attributes["gantry.layer"] = layer.descriptor.digest.description
                let report = try LayerUnpacker.unpack(layerAt: content.path(for: layer.descriptor.digest), into: scratch, options: options)
                span.attributes["gantry.bytes"] = Int(report.uncompressedSize)
                return report
            }
            ImageTelemetry.unpacked(bytes: report.uncompressedSize)
            if let userNamespace, !privileged { try giveOwners(report, of: layer, in: scratch, userNamespace) }
            if rename(scratch, directory) != 0 {
                let error = Sys.errno
                // Someone else finished the same snapshot first.
                guard error == .directoryNotEmpty || error == .fileExists else { throw SystemCallError("rename", directory, error) }
                try removeTree(scratch, mapping: userNamespace)
            }
            return report.uncompressedSize
        } catch {
            try? removeTree(scratch, mapping: userNamespace)
            throw error
        }
    }

    /// Gives the files of a layer unpacked without privileges the owners
    /// the image gave them, as the user namespace's root: first checks that
    /// the namespace maps every one, naming the first file it cannot hold.
    private func giveOwners(_ report: LayerUnpackReport, of layer: LayerSource, in directory: String, _ mapping: UserNamespaceMapping) throws {
        if report.skippedDeviceNodes > 0 {
            logger.notice("device nodes of an image layer were skipped: a user namespace cannot make them", metadata: [
                "layer": "\(layer.descriptor.digest)", "skipped": "\(report.skippedDeviceNodes)",
            ])
        }
        for owner in report.owners {
            if let reason = mapping.unmappedOwner(uid: owner.uid, gid: owner.gid) {
                throw OCIImageError(.unmappedOwner, "layer \(layer.descriptor.digest): /\(String(decoding: owner.path, as: UTF8.self)) belongs to \(reason)")
            }
        }
        do {
            try mapping.setOwners(report.owners, beneath: directory)
        } catch {
            throw OCIImageError(.systemCall, "layer \(layer.descriptor.digest): its files cannot be given their owners", underlying: error)
        }
    }
}
