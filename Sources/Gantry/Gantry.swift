@_exported import OCIImage
@_exported import Observability
@_exported import Reconciler
@_exported import Runtime
@_exported import Scheduler
import Logging

/// The entry point to Gantry: one state root with its image store.
///
/// ```swift
/// let gantry = try await Gantry(root: .default, logger: logger)
/// try await gantry.images.pull("127.0.0.1:5000/tools:1")
/// try await gantry.images.unpack("tools:1", into: "/tmp/unpacked")
/// ```
public final class Gantry: Sendable {
    /// The state root.
    public let root: StateRoot
    /// The image store.
    public let images: ImageStore

    /// Opens (creating if needed) the state root.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - registry: The registry client for pulls and pushes; by default one
    ///     with default options and the standard credential files.
    ///   - logger: Where Gantry logs.
    public init(root: StateRoot = .default, registry: RegistryClient? = nil, logger: Logger = Logger(label: "gantry")) async throws {
        self.root = root
        images = try ImageStore(root: root, registry: registry, logger: logger)
    }
}
