public import Foundation
public import OCIImage
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

extension Container {
    /// Packs what the container changed in its root file system (its
    /// overlay's upper directory) as a layer in the image store: added and
    /// changed files as they are, removed ones as OCI whiteouts, directories
    /// it emptied and refilled as opaque. Nothing else is read, however
    /// large the image below.
    ///
    /// The container must not be running: a created or stopped one is read
    /// while no overlay is mounted over its upper directory.
    ///
    /// - Parameters:
    ///   - latestModification: Modification times after this are written
    ///     as it, for a reproducible layer.
    ///   - base: The layers of the container's image, when the
    ///     upper directory is to become the new layer's snapshot in the
    ///     store (so that containers of an image with these layers and the
    ///     new one need not unpack it). The container's changes then leave
    ///     it: for a container about to be removed, as a build's are.
    /// - Throws: ``RuntimeError`` (`invalidState`) for a running container
    ///   or one whose root is a directory rather than an image.
    public func writeChanges(latestModification: Date? = nil, snapshotAbove base: [BuiltLayer]? = nil) async throws -> BuiltLayer {
        let record = try record
        guard record.usesOverlay else {
            throw RuntimeError(.invalidState, "container \(name) runs on a directory, not an image: its changes are not kept apart from what was there")
        }
        guard record.status == .created || record.status == .stopped else {
            throw RuntimeError(.invalidState, "cannot write the changes of container \(name) while it is \(record.status): stop it first")
        }
        guard runtime.userNamespace != nil || record.spec.uidMappings.isEmpty else {
            throw RuntimeError(.invalidState, "cannot write the changes of container \(name): its files belong to the IDs of its own user namespace")
        }
        // A container that just ended is still taking its overlay down.
        let lock = try await offload { _ in try self.lockOverlay(what: "write the changes of", waiting: .seconds(30)) }
        defer { close(lock) }
        let upper = runtime.containerDirectory(id) + "/upper"
        let layer: BuiltLayer
        do {
            layer = try await runtime.images.writeLayer(from: upper, overlayUpper: true, latestModification: latestModification)
        } catch let error as SystemCallError where runtime.userNamespace != nil && error.errno == .permissionDenied {
            let inside = error.path.hasPrefix(upper) ? String(error.path.dropFirst(upper.count)) : error.path
            throw RuntimeError(.unsupportedHost, "cannot write the changes of container \(name): \(inside) is not readable by this user. An ordinary user reads a container's files as their owner on the host, and the container gave this one to another of its users, with no permission for others", underlying: error)
        }
        if let base, layer.entries != 0 {
            var status = stat()
            guard lstat(upper, &status) == 0 else { throw RuntimeError(.systemCall, "cannot inspect \(upper)", underlying: Sys.errno) }
            try await runtime.images.adoptSnapshot(upper, layers: base + [layer])
            // An empty upper directory, as it was made, for the container's removal.
            guard mkdir(upper, status.st_mode & 0o7777) == 0, chown(upper, status.st_uid, status.st_gid) == 0 else {
                throw RuntimeError(.systemCall, "cannot make \(upper) again", underlying: Sys.errno)
            }
        }
        return layer
    }

    /// Makes an image of the container, as `docker commit` does: its
    /// image's layers and one more with what the container changed.
    ///
    /// - Parameters:
    ///   - name: The new image's name.
    ///   - configuration: The run configuration to record; by default the
    ///     image's.
    ///   - comment: The text of the new history entry.
    @discardableResult
    public func commit(as name: String, configuration: RunConfiguration? = nil, comment: String? = nil) async throws -> ImageRecord {
        let record = try record
        guard case .image(let image) = record.spec.root else {
            throw RuntimeError(.invalidState, "container \(self.name) runs on a directory, not an image: it cannot be committed")
        }
        let base = try await runtime.images.resolve(record.imageDigest ?? image)
        let layer = try await writeChanges()
        var built = base.configuration
        let now = ISO8601DateFormatter().string(from: Date())
        built.created = now
        if let configuration { built.config = configuration }
        built.history = (built.history ?? []) + [ImageConfiguration.History(created: now, createdBy: comment ?? "gantry commit \(self.name)")]
        let layers = zip(base.manifest.layers, base.configuration.rootfs.diffIDs).map { BuiltLayer(descriptor: $0, diffID: $1) } + [layer]
        return try await runtime.images.writeImage(built, layers: layers, name: name).record
    }
}
