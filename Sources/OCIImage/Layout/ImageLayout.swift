import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An OCI image layout on disk: `oci-layout`, `index.json` and
/// `blobs/<algorithm>/<hex>`, as written by skopeo, umoci, buildah and
/// `docker save` for OCI.
public struct ImageLayout: Sendable {
    /// The layout's directory.
    public let directory: String

    /// The version written to `oci-layout`.
    public static let version = "1.0.0"

    private struct Header: Codable {
        var imageLayoutVersion: String
    }

    /// Opens an existing layout, checking its `oci-layout` file.
    ///
    /// - Throws: ``OCIImageError/Code/invalidLayout`` naming what is missing or wrong.
    public init(opening directory: String) throws {
        self.directory = absolutePath(directory)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: self.directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw OCIImageError(.invalidLayout, "\(directory) is not a directory")
        }
        guard let data = FileManager.default.contents(atPath: self.directory + "/oci-layout") else {
            throw OCIImageError(.invalidLayout, "\(directory) is not an OCI image layout: it has no oci-layout file")
        }
        guard let header = try? JSONDecoder().decode(Header.self, from: data) else {
            throw OCIImageError(.invalidLayout, "\(directory)/oci-layout is not valid JSON with an imageLayoutVersion")
        }
        guard header.imageLayoutVersion.hasPrefix("1.") else {
            throw OCIImageError(.invalidLayout, "\(directory) has layout version \(header.imageLayoutVersion); only 1.x is supported")
        }
    }

    /// Opens the layout in `directory`, creating an empty one if the
    /// directory is missing or empty.
    ///
    /// - Throws: ``OCIImageError/Code/invalidLayout`` if the directory holds
    ///   something that is not a layout (nothing there is changed).
    public init(creatingAt directory: String) throws {
        let path = absolutePath(directory)
        let existing = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? nil
        if let existing, !existing.isEmpty {
            guard existing.contains("oci-layout") else {
                throw OCIImageError(.invalidLayout, "\(directory) is not empty and is not an OCI image layout; choose an empty or new directory")
            }
            self = try ImageLayout(opening: path)
            return
        }
        try Sys.makeDirectories(path + "/blobs/sha256")
        self.directory = path
        let header = try JSONEncoder.canonical.encode(Header(imageLayoutVersion: Self.version))
        try Sys.writeFileAtomically(path + "/oci-layout", header)
        try writeIndex(ImageIndex(manifests: []))
    }

    /// The path of a blob in the layout.
    public func blobPath(_ digest: Digest) -> String {
        "\(directory)/blobs/\(digest.algorithm.rawValue)/\(digest.encoded)"
    }

    /// Reads `index.json`.
    public func index() throws -> ImageIndex {
        guard let data = FileManager.default.contents(atPath: directory + "/index.json") else {
            throw OCIImageError(.invalidLayout, "\(directory) is not an OCI image layout: it has no index.json")
        }
        do {
            return try ImageIndex.decode(data, mediaType: .ociIndex)
        } catch let error as OCIImageError {
            throw OCIImageError(.invalidLayout, "\(directory)/index.json: \(error.message)")
        }
    }

    /// Replaces `index.json` atomically.
    public func writeIndex(_ index: ImageIndex) throws {
        try Sys.writeFileAtomically(directory + "/index.json", try JSONEncoder.canonical.encode(index))
    }

    /// The tags (`org.opencontainers.image.ref.name`) in `index.json`.
    public func tags() throws -> [String] {
        try index().manifests.compactMap { $0.annotations?[AnnotationKey.refName] }
    }

    /// The descriptors in `index.json` tagged `tag`, or, for `nil`, every
    /// descriptor.
    ///
    /// - Throws: ``OCIImageError/Code/tagNotFound`` listing the tags there are.
    public func descriptors(tagged tag: String?) throws -> [Descriptor] {
        let manifests = try index().manifests
        guard let tag else {
            guard !manifests.isEmpty else { throw OCIImageError(.invalidLayout, "\(directory)/index.json lists no images") }
            return manifests
        }
        let matches = manifests.filter { $0.annotations?[AnnotationKey.refName] == tag }
        guard !matches.isEmpty else {
            let tags = manifests.compactMap { $0.annotations?[AnnotationKey.refName] }
            throw OCIImageError(.tagNotFound, "the layout \(directory) has no image tagged \"\(tag)\" (tags: \(tags.isEmpty ? "none" : tags.joined(separator: ", ")))")
        }
        return matches
    }

    /// Copies a blob into the layout unless it is there already, going
    /// through a temporary file so that a partial copy is never visible.
    public func addBlob(_ digest: Digest, from source: String) throws {
        let destination = blobPath(digest)
        if FileManager.default.fileExists(atPath: destination) { return }
        try Sys.makeDirectories(Sys.parentDirectory(of: destination))
        let temporary = destination + ".tmp-" + Sys.randomSuffix()
        let input = try OwnedDescriptor.open(source, O_RDONLY)
        let output = try Sys.open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        do {
            defer { Sys.close(output) }
            let size = try Sys.fstat(input.raw, path: source).st_size
            try Sys.copyFile(from: input.raw, to: output, size: Int64(size), display: destination)
            try Sys.fsync(output, path: temporary)
            try Sys.check("rename", destination) { rename(temporary, destination) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Adds `descriptor` to `index.json` under `tag`, replacing any entry
    /// with the same tag.
    public func setTag(_ tag: String, to descriptor: Descriptor) throws {
        // Writers of one layout (in any process) take turns on index.json.
        let lock = try OwnedDescriptor.open(directory, O_RDONLY | O_DIRECTORY)
        try Sys.check("flock", directory) { flock(lock.raw, LOCK_EX) }
        var index = try index()
        var entry = descriptor
        var annotations = entry.annotations ?? [:]
        annotations[AnnotationKey.refName] = tag
        entry.annotations = annotations
        index.manifests.removeAll { $0.annotations?[AnnotationKey.refName] == tag }
        index.manifests.append(entry)
        try writeIndex(index)
    }
}
