public import Foundation
import GantryCore
public import Runtime
import Synchronization

/// A test container that has started and is ready: its ports on the host,
/// its output, and commands run in it.
public final class RunningContainer: Sendable {
    /// The runtime's container.
    public let container: Container
    /// The host address its exposed ports are reached at: `127.0.0.1`.
    public let host = "127.0.0.1"
    /// How it was described.
    public let description: TestContainer
    /// The runtime that runs it.
    let runtime: ContainerRuntime
    /// Fresh volumes made for it, removed with it.
    let volumes: [String]
    /// Whether it is kept when removed (a reusable container).
    let kept: Bool
    /// For a compose service's replica: the service's ports, which its
    /// load-balanced endpoint publishes for all its replicas.
    let servicePorts: [PublishedPort]?
    private let removed = Mutex(false)

    init(container: Container, runtime: ContainerRuntime, description: TestContainer, volumes: [String], kept: Bool,
         servicePorts: [PublishedPort]? = nil) {
        self.container = container
        self.runtime = runtime
        self.servicePorts = servicePorts
        self.description = description
        self.volumes = volumes
        self.kept = kept
    }

    /// The container's name.
    public var name: String { container.name }

    /// The container's ID.
    public var id: String { container.id }

    /// The host port that reaches the container's `port`.
    ///
    /// - Throws: ``TestingError`` with code `portNotExposed` naming the
    ///   ports it does expose, when `port` is not one of them.
    public func mappedPort(_ port: UInt16) throws -> UInt16 {
        let published = try servicePorts ?? container.record.network?.ports ?? []
        if let found = published.first(where: { $0.containerPort == port && $0.protocol == .tcp }) { return found.hostPort }
        let exposed = published.map { String($0.containerPort) }
        let how = servicePorts == nil ? "expose it with TestContainer.exposing(_:)" : "publish it with the service's ports: in the compose file"
        throw TestingError(.portNotExposed, "container \(name) does not expose port \(port)"
            + (exposed.isEmpty ? "; it exposes none (\(how))" : "; it exposes \(exposed.joined(separator: ", "))"))
    }

    /// `127.0.0.1:PORT` for the container's `port`.
    public func endpoint(_ port: UInt16) throws -> String {
        "\(host):\(try mappedPort(port))"
    }

    /// A URL that reaches the container's `port` from the host.
    public func url(_ port: UInt16, scheme: String = "http", path: String = "/") throws -> URL {
        let text = "\(scheme)://\(try endpoint(port))" + (path.hasPrefix("/") ? path : "/" + path)
        guard let url = URL(string: text) else { throw TestingError(.invalidSpec, "\(text) is not a URL") }
        return url
    }

    /// Its address on `network`, where other containers reach it.
    public func address(on network: TestNetwork) throws -> IPv4Address? {
        try runtime.networks.members(of: network.name).first { $0.containerID == id }?.address
    }

    /// Runs `command` in the container and returns its exit and output.
    ///
    /// - Parameters:
    ///   - command: The program and its arguments.
    ///   - environment: Variables added to the container's (`NAME=value`).
    ///   - user: The user to run as; by default the container's.
    ///   - timeout: How long it may run before it is killed.
    public func exec(_ command: [String], environment: [String] = [], user: String? = nil,
                     timeout: Duration = .seconds(60)) async throws -> RunOutput {
        let process = try await container.exec(ExecSpec(command, environment: environment, user: user))
        let timedOut = CancellationFlag()
        let result = await withTaskCancellationHandler {
            await withTaskGroup(of: RunOutput?.self) { group in
                group.addTask {
                    var stdout: [UInt8] = []
                    var stderr: [UInt8] = []
                    do {
                        for try await chunk in process.output {
                            if chunk.stream == .stderr { stderr += chunk.bytes } else { stdout += chunk.bytes }
                        }
                    } catch {
                        // The output ends with the process; its exit says how.
                    }
                    return RunOutput(exit: await process.wait(), stdout: stdout, stderr: stderr)
                }
                group.addTask {
                    // Past its time, it is killed: the group ends once it has.
                    try? await Task.sleep(for: timeout)
                    if !Task.isCancelled {
                        timedOut.set()
                        try? process.kill(.kill)
                    }
                    return nil
                }
                var result: RunOutput?
                while let next = await group.next() {
                    if let next {
                        result = next
                        group.cancelAll()
                    }
                }
                return result
            }
        } onCancel: {
            try? process.kill(.kill)
        }
        try Task.checkCancellation()
        guard let result, !timedOut.isSet else {
            throw TestingError(.timedOut, "\(command.joined(separator: " ")) in container \(name) did not end within \(timeout)")
        }
        return result
    }

    /// Everything the container has written so far, both streams in order.
    public func logs() async throws -> String {
        try await container.logs.text()
    }

    /// Its last `count` lines of output.
    public func lastLines(_ count: Int = 20) async -> [String] {
        let text = (try? await logs()) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(count + 1).map(String.init).filter { !$0.isEmpty }.suffix(count)
    }

    /// Copies a file or directory out of the container to the host.
    public func copyOut(_ path: String, to hostPath: String) async throws {
        try await container.copyOut(path, to: hostPath)
    }

    /// Copies a host file or directory into the container.
    public func copyIn(_ hostPath: String, to path: String) async throws {
        try await container.copyIn(from: hostPath, to: path)
    }

    /// Kills the container (a test needs no graceful stop) and removes it
    /// with its fresh volumes; a reusable container is kept running.
    /// Removing twice does nothing.
    public func remove() async throws {
        if kept { return }
        try await discard()
    }

    /// Removes the container, reusable or not.
    func discard() async throws {
        guard removed.withLock({ done in defer { done = true }; return !done }) else { return }
        for hook in description.hooks[.stopping] ?? [] { try? await hook(self) }
        try await container.remove(force: true)
        for volume in volumes { try await runtime.volumes.remove(volume) }
        for hook in description.hooks[.removed] ?? [] { try? await hook(self) }
    }
}
