import Foundation

extension ImageStore {
    /// Imports images from an OCI image layout (as written by skopeo, umoci
    /// or ``exportLayout(_:to:tag:progress:)``).
    ///
    /// - Parameters:
    ///   - directory: The layout's directory.
    ///   - tag: The `org.opencontainers.image.ref.name` to import; `nil`
    ///     imports every image listed in `index.json`.
    ///   - name: The name to give the image (`latest` is its tag when it has
    ///     none). When several images are imported, `name` is a repository and
    ///     each image keeps its layout tag. Without a name, a layout tag that is
    ///     a full reference is used as the name; otherwise the name is the
    ///     layout directory's name with the layout tag as tag.
    ///   - progress: Receives a report before and after each blob is copied.
    /// - Returns: The records created, in `index.json` order.
    /// - Throws: ``OCIImageError`` naming the layout, tag or blob at fault;
    ///   the store then has no new names (blobs already copied stay until the
    ///   next ``prune()``).
    @discardableResult
    public func importLayout(at directory: String, tag: String? = nil, name: String? = nil, progress: ImageProgressHandler? = nil) async throws -> [ImageRecord] {
        try await offload { isCancelled in
            try self.lock.withLock(.shared) {
                let layout = try ImageLayout(opening: directory)
                let descriptors = try layout.descriptors(tagged: tag)
                var names: [(ImageReference, Descriptor)] = []
                for descriptor in descriptors {
                    let reference = try Self.importName(for: descriptor, layout: layout, name: name, multiple: descriptors.count > 1)
                    names.append((reference, descriptor))
                }
                for (index, descriptor) in descriptors.enumerated() {
                    if isCancelled() { throw OCIImageError(.cancelled, "importing \(directory) was cancelled") }
                    try self.copyGraph(descriptor, from: layout, index: index, count: descriptors.count, progress: progress)
                }
                return try names.map { reference, descriptor in
                    try self.database.setImage(reference, to: descriptor)
                    return try self.lookup(reference.description)
                }
            }
        }
    }

    static func importName(for descriptor: Descriptor, layout: ImageLayout, name: String?, multiple: Bool) throws -> ImageReference {
        let layoutTag = descriptor.annotations?[AnnotationKey.refName]
        if let name {
            let reference = try namingReference(name)
            let explicit = hasExplicitTag(name)
            if !multiple { return reference }
            if explicit {
                throw OCIImageError(.invalidArgument, "the layout \(layout.directory) holds several images; give a name without a tag so that each keeps its own")
            }
            guard let layoutTag else {
                throw OCIImageError(.invalidArgument, "the layout \(layout.directory) has an untagged image; import it by tag or give each image a name")
            }
            return try reference.withTag(bareTag(layoutTag))
        }
        if let layoutTag, layoutTag.contains("/") || layoutTag.contains("@"), let reference = try? ImageReference(parsing: layoutTag) {
            return reference
        }
        let base = Sys.lastComponent(of: layout.directory).lowercased().map { character -> Character in
            character.isLetter || character.isNumber || character == "." || character == "-" || character == "_" ? character : "-"
        }
        let repository = String(base).trimmingCharacters(in: CharacterSet(charactersIn: ".-_"))
        do {
            return try ImageReference(parsing: repository + ":" + bareTag(layoutTag ?? ImageReference.defaultTag))
        } catch {
            throw OCIImageError(.invalidArgument, "no image name can be derived from the layout \(layout.directory) and its tag \"\(layoutTag ?? "")\"; give a name")
        }
    }

    /// Whether a name given by a user carries its own tag.
    static func hasExplicitTag(_ name: String) -> Bool {
        let beforeDigest = name.split(separator: "@", maxSplits: 1).first.map(String.init) ?? name
        guard let colon = beforeDigest.lastIndex(of: ":") else { return false }
        return !beforeDigest[colon...].contains("/")
    }

    /// The tag part of a layout tag, which some tools write as `name:tag`.
    private static func bareTag(_ layoutTag: String) -> String {
        if let colon = layoutTag.lastIndex(of: ":"), !layoutTag[colon...].contains("/") {
            return String(layoutTag[layoutTag.index(after: colon)...])
        }
        return layoutTag
    }

    /// Copies a descriptor and everything it references from a layout,
    /// verifying each blob. Index entries whose blobs the layout lacks are
    /// skipped (layouts often hold one platform of a multi-platform image).
    private func copyGraph(_ root: Descriptor, from layout: ImageLayout, index: Int, count: Int, progress: ImageProgressHandler?) throws {
        func copy(_ descriptor: Descriptor) throws {
            let source = layout.blobPath(descriptor.digest)
            guard FileManager.default.fileExists(atPath: source) else {
                throw OCIImageError(.blobNotFound, "the layout \(layout.directory) lacks blob \(descriptor.digest) (\(descriptor.mediaType))")
            }
            progress?(ImageProgress(phase: .importing, digest: descriptor.digest, index: index, count: count, completed: 0, total: descriptor.size))
            try content.ingest(fileAt: source, expected: descriptor.digest, expectedSize: descriptor.size)
            progress?(ImageProgress(phase: .importing, digest: descriptor.digest, index: index, count: count, completed: descriptor.size, total: descriptor.size))
        }
        func visit(_ descriptor: Descriptor, depth: Int) throws {
            guard depth < 4 else { throw OCIImageError(.invalidManifest, "image indexes in \(layout.directory) nest too deeply") }
            try copy(descriptor)
            let data = try content.document(descriptor)
            switch try DocumentKind.detect(data, announced: descriptor.mediaType) {
            case .index:
                let index = try ImageIndex.decode(data, mediaType: descriptor.mediaType)
                let present = index.manifests.filter { FileManager.default.fileExists(atPath: layout.blobPath($0.digest)) }
                guard !present.isEmpty else {
                    throw OCIImageError(.blobNotFound, "the layout \(layout.directory) has none of the manifests of index \(descriptor.digest)")
                }
                for child in present { try visit(child, depth: depth + 1) }
            case .manifest:
                let manifest = try Manifest.decode(data, mediaType: descriptor.mediaType)
                try Self.validateImageManifest(manifest, digest: descriptor.digest)
                try copy(manifest.config)
                _ = try ImageConfiguration.decode(try content.document(manifest.config))
                for layer in manifest.layers { try copy(layer) }
            }
        }
        try visit(root, depth: 0)
    }

    /// Refuses manifests that are not container images Gantry can unpack.
    static func validateImageManifest(_ manifest: Manifest, digest: Digest) throws {
        guard manifest.config.mediaType == .ociConfig || manifest.config.mediaType == .dockerConfig else {
            throw OCIImageError(.invalidMediaType, "manifest \(digest) has configuration media type \(manifest.config.mediaType); it is not a container image")
        }
        for layer in manifest.layers where layer.mediaType.layerCompression == nil {
            throw OCIImageError(.invalidMediaType, "manifest \(digest) has layer \(layer.digest) of unsupported media type \(layer.mediaType)")
        }
    }

    /// Writes an image into an OCI image layout, creating the layout if
    /// needed or adding to an existing one (replacing the entry with the same
    /// tag). skopeo, umoci and podman read the result.
    ///
    /// - Parameters:
    ///   - name: The image to export.
    ///   - directory: The layout directory: new, empty, or an existing layout.
    ///   - tag: The layout tag; defaults to the image's tag.
    ///   - progress: Receives a report as each blob is copied.
    public func exportLayout(_ name: String, to directory: String, tag: String? = nil, progress: ImageProgressHandler? = nil) async throws {
        try await offload { _ in
            try self.lock.withLock(.shared) {
                let record = try self.lookup(name)
                let (descriptor, blobs) = try self.completeGraph(record)
                let layoutTag = tag ?? record.reference.tag ?? ImageReference.defaultTag
                let layout = try ImageLayout(creatingAt: directory)
                for (index, blob) in blobs.enumerated() {
                    progress?(ImageProgress(phase: .exporting, digest: blob.digest, index: index, count: blobs.count, completed: 0, total: blob.size))
                    try layout.addBlob(blob.digest, from: self.content.path(for: blob.digest))
                }
                try layout.setTag(layoutTag, to: descriptor)
            }
        }
    }

    /// What of an image can be copied elsewhere whole: its index with every
    /// blob, when every manifest the index lists is here; otherwise the
    /// manifest for the host platform alone. Blobs come children first.
    func completeGraph(_ record: ImageRecord) throws -> (descriptor: Descriptor, blobs: [Descriptor]) {
        var descriptor = record.descriptor
        if descriptor.mediaType.isIndex {
            let index = try ImageIndex.decode(try content.document(descriptor), mediaType: descriptor.mediaType)
            if !index.manifests.allSatisfy({ content.contains($0.digest) }) {
                let resolved = try resolve(record, platform: nil)
                descriptor = resolved.manifestDescriptor
                descriptor.platform = resolved.configuration.platform
            }
        }
        return (descriptor, try reachableBlobs(from: descriptor).reversed())
    }
}
