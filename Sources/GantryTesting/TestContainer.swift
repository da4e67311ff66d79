import Foundation
public import Runtime

/// A container for a test: its image, how it runs, which ports it
/// exposes, and how to tell that it is ready.
///
/// A value type built in steps, each returning a changed copy:
///
/// ```swift
/// let web = TestContainer(image: "busybox:test", command: ["httpd", "-f", "-p", "80", "-h", "/www"])
///     .copying(contents: "hello", to: "/www/index.html")
///     .exposing(80)
///     .waiting(for: .http("/", port: 80))
/// ```
public struct TestContainer: Sendable {
    /// Where the container's image comes from.
    public enum ImageSource: Hashable, Sendable {
        /// An image by name: found in the state root, else pulled.
        case named(String)
        /// An image built from a Dockerfile in `context` (by default the
        /// context's `Dockerfile`), with build arguments; it is built
        /// again only where the build cache has no answer.
        case built(context: String, dockerfile: String?, arguments: [String: String])
    }

    /// A file given to the container before it starts.
    public enum File: Hashable, Sendable {
        /// A file or directory of the host, copied to `target`.
        case host(path: String, target: String)
        /// Bytes written to `target` with `mode`.
        case contents([UInt8], target: String, mode: UInt32)
    }

    /// The points of a container's life where hooks run.
    public enum LifecyclePoint: Hashable, Sendable, CaseIterable {
        /// Created, not yet started: files can still be copied in.
        case created
        /// Its process runs; the wait strategy has not yet been checked.
        case started
        /// The wait strategy is satisfied.
        case ready
        /// About to be stopped and removed.
        case stopping
        /// Stopped and removed: its output and files are gone.
        case removed
    }

    /// A hook: work done at a point of the container's life.
    public typealias Hook = @Sendable (RunningContainer) async throws -> Void

    /// Where the image comes from.
    public var image: ImageSource
    /// The runtime's specification, apart from the image (which
    /// ``image`` names), ports and networks (which the session adds when it starts it).
    public var spec: ContainerSpec
    /// The container's ports that get free host ports.
    public var exposedPorts: [UInt16] = []
    /// The networks the container joins, with its aliases on each; without
    /// any, a container that exposes ports joins the default network.
    public var networks: [(network: TestNetwork, aliases: [String])] = []
    /// Files copied in before it starts.
    public var files: [File] = []
    /// Paths that get a fresh volume each, removed with the container.
    public var volumeTargets: [String] = []
    /// How to tell that it is ready; by default, that it runs.
    public var waitStrategy: WaitStrategy = .running
    /// How long it may take from the start to ready.
    public var startupTimeout: Duration = .seconds(60)
    /// Who reads its output, line by line, as it comes.
    public var logConsumers: [@Sendable (String) -> Void] = []
    /// Hooks by the point they run at.
    public var hooks: [LifecyclePoint: [Hook]] = [:]
    /// Whether it is kept between runs and found again by its configuration.
    public var reuse = false

    /// A container from an image by name, running `command` (by default
    /// the image's).
    public init(image: String, command: [String]? = nil) {
        self.image = .named(image)
        spec = ContainerSpec(image: image, command: command)
    }

    /// A container from an image built from a Dockerfile.
    ///
    /// - Parameters:
    ///   - context: The build context's directory.
    ///   - dockerfile: The Dockerfile, relative to the context; by default
    ///     `Dockerfile`.
    ///   - arguments: Build arguments (`ARG`).
    ///   - command: The command; by default the image's.
    public init(building context: String, dockerfile: String? = nil, arguments: [String: String] = [:], command: [String]? = nil) {
        image = .built(context: context, dockerfile: dockerfile, arguments: arguments)
        spec = ContainerSpec(image: "", command: command)
    }

    private func with(_ change: (inout TestContainer) -> Void) -> TestContainer {
        var copy = self
        change(&copy)
        return copy
    }

    /// The command, replacing the image's.
    public func command(_ command: [String]) -> TestContainer { with { $0.spec.command = command } }

    /// The entry point, replacing the image's.
    public func entrypoint(_ entrypoint: [String]) -> TestContainer { with { $0.spec.entrypoint = entrypoint } }

    /// Environment variables, added to the image's.
    public func environment(_ variables: [String: String]) -> TestContainer { with { $0.spec = $0.spec.environment(variables) } }

    /// Ports of the container that get free ports on the host's 127.0.0.1
    /// (see ``RunningContainer/mappedPort(_:)``).
    public func exposing(_ ports: UInt16...) -> TestContainer { with { $0.exposedPorts += ports } }

    /// Copies a host file or directory to `target` before the container starts.
    public func copying(_ hostPath: String, to target: String) -> TestContainer {
        with { $0.files.append(.host(path: hostPath, target: target)) }
    }

    /// Writes `contents` to `target` before the container starts.
    public func copying(contents: String, to target: String, mode: UInt32 = 0o644) -> TestContainer {
        with { $0.files.append(.contents(Array(contents.utf8), target: target, mode: mode)) }
    }

    /// Adds mounts: bind mounts, named volumes and tmpfs.
    public func mounting(_ mounts: ContainerSpec.Mount...) -> TestContainer { with { $0.spec.mounts += mounts } }

    /// A tmpfs at `target`.
    public func tmpfs(_ target: String, size: Int64? = nil) -> TestContainer {
        with { $0.spec.mounts.append(.tmpfs(target: target, size: size)) }
    }

    /// A fresh volume at `target`, filled with what the image has there,
    /// removed with the container.
    public func volume(at target: String) -> TestContainer { with { $0.volumeTargets.append(target) } }

    /// Labels.
    public func labeled(_ labels: [String: String]) -> TestContainer { with { $0.spec = $0.spec.labeled(labels) } }

    /// Resource limits: CPUs, memory in bytes, processes.
    public func resources(cpus: Double? = nil, memory: Int64? = nil, pids: Int64? = nil) -> TestContainer {
        with { $0.spec = $0.spec.resources(cpus: cpus, memory: memory, pids: pids) }
    }

    /// The user (`name`, `uid`, `uid:gid`).
    public func user(_ user: String) -> TestContainer { with { $0.spec = $0.spec.user(user) } }

    /// The container's name; by default a fresh one.
    public func named(_ name: String) -> TestContainer { with { $0.spec = $0.spec.named(name) } }

    /// Joins `network`, where other containers find it by its name and `aliases`.
    public func network(_ network: TestNetwork, aliases: [String] = []) -> TestContainer {
        with { $0.networks.append((network, aliases)) }
    }

    /// How to tell that the container is ready.
    public func waiting(for strategy: WaitStrategy) -> TestContainer { with { $0.waitStrategy = strategy } }

    /// How long the container may take from its start to ready (60 s unless set).
    public func startupTimeout(_ timeout: Duration) -> TestContainer { with { $0.startupTimeout = timeout } }

    /// Gives every line of the container's output, as it comes, to `consumer`.
    public func consumingLogs(_ consumer: @escaping @Sendable (String) -> Void) -> TestContainer {
        with { $0.logConsumers.append(consumer) }
    }

    /// Prints the container's output to standard output, line by line.
    public func printingLogs() -> TestContainer {
        consumingLogs { line in print(line) }
    }

    /// Runs `hook` at `point` of the container's life.
    public func on(_ point: LifecyclePoint, _ hook: @escaping Hook) -> TestContainer {
        with { $0.hooks[point, default: []].append(hook) }
    }

    /// Changes the runtime's specification directly, for what the steps
    /// above do not cover (capabilities, seccomp, read-only root, …).
    public func configuring(_ change: (inout ContainerSpec) -> Void) -> TestContainer { with { change(&$0.spec) } }

    /// Keeps the container after the test and between runs: a later start
    /// of the same configuration (image, command, environment, ports,
    /// mounts, files) finds it running and waits for it as for a new one.
    /// ``TestSession/removeReusedContainers()`` removes such containers, and
    /// the volumes made for them.
    /// Networks made for a test cannot be reused with it.
    public func reusable(_ reuse: Bool = true) -> TestContainer { with { $0.reuse = reuse } }
}
