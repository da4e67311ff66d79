@_exported import OCIImage
@_exported import Observability
@_exported import Reconciler
@_exported import Runtime
@_exported import Scheduler
import Logging
import Synchronization

/// The entry point to Gantry: one state root with its image store.
///
/// ```swift
/// let gantry = try Gantry(root: .default, logger: logger)
/// try await gantry.images.pull("127.0.0.1:5000/tools:1")
/// try await gantry.images.unpack("tools:1", into: "/tmp/unpacked")
/// let (lines, exit) = try await gantry.run(ContainerSpec(image: "tools:1", command: ["tool", "--check"])) { container in
///     try await container.output.text()
/// }
/// ```
public final class Gantry: Sendable {
    /// The state root.
    public let root: StateRoot
    /// The image store.
    public let images: ImageStore
    private let logger: Logger
    private let cgroupParent: String
    private let runtime = Mutex<ContainerRuntime?>(nil)

    /// Opens (creating if needed) the state root.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - registry: The registry client for pulls and pushes; by default one
    ///     with default options and the standard credential files.
    ///   - cgroupParent: The cgroup containers are created under.
    ///   - logger: Where Gantry logs.
    public init(root: StateRoot = .default, registry: RegistryClient? = nil, cgroupParent: String = "gantry",
                logger: Logger = Logger(label: "gantry")) throws {
        self.root = root
        self.cgroupParent = cgroupParent
        images = try ImageStore(root: root, registry: registry, logger: logger)
        self.logger = logger
    }

    /// The container runtime over this state root, opened on first use
    /// (which cleans up after processes that ended; see
    /// `ContainerRuntime.init(images:cgroupParent:cgroups:nameservers:logger:)`).
    public var containers: ContainerRuntime {
        get throws {
            try runtime.withLock { runtime in
                if let runtime { return runtime }
                let opened = try ContainerRuntime(images: images, cgroupParent: cgroupParent, logger: logger)
                runtime = opened
                return opened
            }
        }
    }

    /// Runs a container to its end and removes it; see `ContainerRuntime.run(_:_:)`.
    public func run<T: Sendable>(_ spec: ContainerSpec, _ body: (Container) async throws -> T) async throws -> (result: T, exit: ContainerExit) {
        try await containers.run(spec, body)
    }
}
