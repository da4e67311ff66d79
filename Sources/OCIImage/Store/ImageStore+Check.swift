import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What ``ImageStore/check(repair:)`` found.
public struct ImageStoreCheck: Hashable, Sendable {
    /// An image that cannot be used as it is stored.
    public struct BrokenImage: Hashable, Sendable {
        /// Its name.
        public var reference: ImageReference
        /// What is wrong, naming the blob.
        public var problem: String
    }

    /// How many blobs were read and hashed.
    public var blobsChecked = 0
    /// Blobs whose content does not hash to their name.
    public var corruptBlobs: [Digest] = []
    /// Named images with a missing, corrupt or unreadable manifest, index
    /// or configuration. Pulling or importing them again mends them.
    public var brokenImages: [BrokenImage] = []
    /// The corrupt blobs a repair removed (a later pull fetches them again).
    public var removedBlobs: [Digest] = []
}

extension ImageStore {
    /// Reads every blob of the store and checks it against its digest, and
    /// every named image's documents; with `repair`, removes the corrupt
    /// blobs (nothing else), so that pulling or importing their images
    /// again fetches them anew. Waits for running operations on the store
    /// (in any process) to finish first.
    public func check(repair: Bool = false) async throws -> ImageStoreCheck {
        try await offload { isCancelled in
            try self.lock.withLock(repair ? .exclusive : .shared) {
                var report = ImageStoreCheck()
                for (digest, _) in try self.content.list() {
                    if isCancelled() { throw OCIImageError(.cancelled, "the check of the image store was cancelled") }
                    report.blobsChecked += 1
                    if try Self.hash(self.content.path(for: digest), algorithm: digest.algorithm) != digest {
                        report.corruptBlobs.append(digest)
                    }
                }
                let corrupt = Set(report.corruptBlobs)
                for record in try self.database.images() {
                    if let problem = self.problem(of: record.descriptor, corrupt: corrupt) {
                        report.brokenImages.append(ImageStoreCheck.BrokenImage(reference: record.reference, problem: problem))
                    }
                }
                if repair {
                    for digest in report.corruptBlobs {
                        try self.content.delete(digest)
                        try self.database.removeBlobSources(digest)
                        report.removedBlobs.append(digest)
                        self.logger.warning("removed a corrupt blob", metadata: ["digest": "\(digest)"])
                    }
                }
                return report
            }
        }
    }

    /// What keeps an image from being used: its top document missing, or a
    /// present document (index, manifest, configuration) corrupt or
    /// unreadable. Manifests of other platforms are not pulled, so their
    /// absence is no problem.
    private func problem(of top: Descriptor, corrupt: Set<Digest>) -> String? {
        guard content.contains(top.digest) else { return "its \(top.mediaType.isIndex ? "index" : "manifest") \(top.digest) is missing" }
        var pending = [top]
        var seen: Set<Digest> = []
        while let next = pending.popLast() {
            guard seen.insert(next.digest).inserted, content.contains(next.digest) else { continue }
            if corrupt.contains(next.digest) { return "blob \(next.digest) (\(next.mediaType)) is corrupt" }
            guard next.mediaType.isIndex || next.mediaType.isManifest || next == top else { continue }
            do {
                let data = try content.document(next)
                switch try DocumentKind.detect(data, announced: next.mediaType) {
                case .index: pending.append(contentsOf: try ImageIndex.decode(data, mediaType: next.mediaType).manifests)
                case .manifest:
                    let manifest = try Manifest.decode(data, mediaType: next.mediaType)
                    guard content.contains(manifest.config.digest) else { return "its configuration \(manifest.config.digest) is missing" }
                    _ = try ImageConfiguration.decode(try content.document(manifest.config))
                    pending.append(manifest.config)
                    pending.append(contentsOf: manifest.layers)
                }
            } catch {
                return "blob \(next.digest) cannot be read: \(error)"
            }
        }
        return nil
    }

    /// The digest of a file's content.
    private static func hash(_ path: String, algorithm: Digest.Algorithm) throws -> Digest {
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        var hasher = DigestHasher(algorithm: algorithm)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd.raw, buffer.baseAddress, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemCallError("read", path, Sys.errno)
            }
            if count == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
        return hasher.finalize()
    }
}
