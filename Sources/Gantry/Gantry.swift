@_exported import OCIImage
@_exported import Observability
@_exported import Reconciler
@_exported import Runtime
@_exported import Scheduler
import GantryCore
public import Logging
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
    private let leftovers: LeftoverPolicy
    private let runsWithoutUnenforceableLimits: Bool
    private let runtime = Mutex<ContainerRuntime?>(nil)

    #if Registry
    /// Opens (creating if needed) the state root.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - registry: The registry client for pulls and pushes; by default one
    ///     with default options and the standard credential files.
    ///   - cgroupParent: The cgroup containers are created under.
    ///   - leftovers: What opening the container runtime does with what
    ///     processes that ended left behind: finish it at once (the
    ///     default), or leave it for `ContainerRuntime.recoverLeftovers()`.
    ///   - runWithoutUnenforceableLimits: For a process that is not root
    ///     where no cgroup is delegated to it: run containers that ask for
    ///     resource limits without them, instead of refusing them.
    ///   - logger: Where Gantry logs.
    public init(root: StateRoot = .default, registry: RegistryClient? = nil, cgroupParent: String = "gantry",
                leftovers: LeftoverPolicy = .recover, runWithoutUnenforceableLimits: Bool = false,
                logger: Logger = Logger(label: "gantry")) throws {
        self.root = root
        self.cgroupParent = cgroupParent
        self.leftovers = leftovers
        runsWithoutUnenforceableLimits = runWithoutUnenforceableLimits
        images = try ImageStore(root: root, registry: registry, logger: logger)
        self.logger = logger
    }
    #else
    /// Opens (creating if needed) the state root.
    ///
    /// - Parameters:
    ///   - root: The state root.
    ///   - cgroupParent: The cgroup containers are created under.
    ///   - leftovers: What opening the container runtime does with what
    ///     processes that ended left behind: finish it at once (the
    ///     default), or leave it for `ContainerRuntime.recoverLeftovers()`.
    ///   - runWithoutUnenforceableLimits: For a process that is not root
    ///     where no cgroup is delegated to it: run containers that ask for
    ///     resource limits without them, instead of refusing them.
    ///   - logger: Where Gantry logs.
    public init(root: StateRoot = .default, cgroupParent: String = "gantry",
                leftovers: LeftoverPolicy = .recover, runWithoutUnenforceableLimits: Bool = false,
                logger: Logger = Logger(label: "gantry")) throws {
        self.root = root
        self.cgroupParent = cgroupParent
        self.leftovers = leftovers
        runsWithoutUnenforceableLimits = runWithoutUnenforceableLimits
        images = try ImageStore(root: root, logger: logger)
        self.logger = logger
    }
    #endif

    /// The container runtime over this state root, opened on first use.
    ///
    /// Opening it finishes what processes that ended left behind, unless
    /// this Gantry was made with `leftovers: .leave`: their containers
    /// bound to them are removed, their independent ones adopted (see
    /// `ContainerRuntime.recoverLeftovers()`). Containers of processes
    /// that still run are never touched.
    public var containers: ContainerRuntime {
        get throws {
            try runtime.withLock { runtime in
                if let runtime { return runtime }
                let opened = try ContainerRuntime(images: images, cgroupParent: cgroupParent, leftovers: leftovers,
                                                  runWithoutUnenforceableLimits: runsWithoutUnenforceableLimits, logger: logger)
                runtime = opened
                return opened
            }
        }
    }

    /// Runs a container to its end and removes it; see `ContainerRuntime.run(_:_:)`.
    public func run<T: Sendable>(_ spec: ContainerSpec, _ body: (Container) async throws -> T) async throws -> (result: T, exit: ContainerExit) {
        try await containers.run(spec, body)
    }

    /// Removes everything this state root holds, and the root itself:
    /// every container (killed first), pod, network with its bridge and
    /// firewall rules, volume with its data, image and layer, and the
    /// cgroup parent once no other state root uses it. The Gantry cannot
    /// be used afterwards.
    ///
    /// - Throws: `RuntimeError` naming what could not be removed; the
    ///   state root then stays, so that nothing is lost track of.
    public func destroy() async throws {
        try await containers.removeEverything()
        try Sys.removeTree(root.path)
    }
}
