import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What garbage collection removed.
public struct PruneReport: Hashable, Sendable, Codable {
    /// Blobs removed.
    public var blobs: Int = 0
    /// Snapshots removed.
    public var snapshots: Int = 0
    /// Bytes of blobs removed.
    public var bytes: Int64 = 0
    /// Leftovers of interrupted work removed (partial blobs and snapshots).
    public var leftovers: Int = 0
}

extension ImageStore {
    /// Removes every blob and snapshot that no image name references, and
    /// the leftovers of interrupted imports and unpacks. Waits for running
    /// operations on the store (in any process) to finish first.
    ///
    /// - Throws: If an image's manifests cannot be read; nothing is removed then.
    @discardableResult
    public func prune() async throws -> PruneReport {
        try await offload { _ in try self.collectGarbage() }
    }

    func collectGarbage() throws -> PruneReport {
        try lock.withLock(.exclusive) {
            var report = PruneReport()
            // Mark: every blob reachable from a name, and the chain IDs of
            // every platform manifest's layers.
            var liveBlobs: Set<Digest> = []
            var liveChains: Set<Digest> = []
            let roots = try database.images().map { ("image \($0.reference.familiarDescription)", $0.descriptor) }
                + database.buildCacheEntries().map { ("the cached build step \($0.key)", $0.descriptor) }
            for (what, descriptor) in roots {
                let blobs: [Descriptor]
                do {
                    blobs = try reachableBlobs(from: descriptor)
                } catch let error as OCIImageError {
                    throw OCIImageError(error.code, "garbage collection stopped: \(what) cannot be read: \(error.message)")
                }
                liveBlobs.formUnion(blobs.map(\.digest))
                for blob in blobs where blob.mediaType.isManifest {
                    let manifest = try Manifest.decode(try content.document(blob), mediaType: blob.mediaType)
                    guard content.contains(manifest.config.digest) else { continue }
                    let configuration = try ImageConfiguration.decode(try content.document(manifest.config))
                    liveChains.formUnion(Snapshotter.chainIDs(configuration.rootfs.diffIDs))
                }
            }
            // Snapshots containers stand on stay, whatever happened to their images.
            liveChains.formUnion(try heldChainIDs())
            // Sweep.
            for (digest, size) in try content.list() where !liveBlobs.contains(digest) {
                try content.delete(digest)
                try database.removeBlobSources(digest)
                report.blobs += 1
                report.bytes += size
            }
            for snapshot in try database.snapshots(root: root) where !liveChains.contains(snapshot.chainID) {
                try removeTree(snapshot.directory, mapping: userNamespace)
                try database.removeSnapshot(snapshot.chainID)
                report.snapshots += 1
            }
            // Directories without records, and scratch space of interrupted work:
            // nothing else holds the lock, so nothing is in progress.
            let kept = Set(try database.snapshots(root: root).map(\.chainID.encoded)).union(liveChains.map(\.encoded))
            for name in try directoryNames(root.snapshots) where !kept.contains(name) && name != Self.userNamespaceRecord {
                try removeTree(root.snapshots + "/" + name, mapping: userNamespace)
                if name.hasPrefix(".tmp-") { report.leftovers += 1 } else { report.snapshots += 1 }
            }
            for name in try directoryNames(content.ingestDirectory) {
                try Sys.removeTree(content.ingestDirectory + "/" + name)
                report.leftovers += 1
            }
            for name in try directoryNames(root.scratch) {
                try Sys.removeTree(root.scratch + "/" + name)
                report.leftovers += 1
            }
            logger.debug("pruned", metadata: ["blobs": "\(report.blobs)", "snapshots": "\(report.snapshots)", "bytes": "\(report.bytes)"])
            return report
        }
    }

    func directoryNames(_ path: String) throws -> [String] {
        guard Sys.lstat(path) != nil else { return [] }
        let fd = try OwnedDescriptor.open(path, O_RDONLY | O_DIRECTORY)
        return try Sys.listDirectoryNames(fd.raw, display: path)
    }
}
