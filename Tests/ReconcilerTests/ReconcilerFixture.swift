import Foundation
import GantryTestSupport
import Logging
import OCIImage
import Runtime
import Synchronization
import Testing
import CoreMetrics
import Tracing
@testable import Reconciler

/// Busybox applets the reconciler tests use.
let reconcilerApplets = ["touch", "rm", "test", "mkdir", "nc"]

/// A state root with a busybox image (`busybox:test`) and a runtime whose
/// containers live under a cgroup parent of their own. Afterwards every
/// container and cgroup is gone, which the fixture checks.
func withReconcilerRuntime<T>(_ label: String, _ body: (ContainerRuntime, String) async throws -> T) async throws -> T {
    try await withTemporaryDirectory(label) { dir in
        let rootfs = dir + "/rootfs"
        try makeBusyboxRootfs(rootfs, applets: reconcilerApplets)
        let images = try ImageStore(root: StateRoot(dir + "/state"))
        try await images.importRootfs(at: rootfs, name: "busybox:test")
        let parent = "gantry-test-\(UUID().uuidString.prefix(8).lowercased())"
        let runtime = try ContainerRuntime(images: images, cgroupParent: parent)
        func cleanUp() async throws {
            let left = try runtime.list()
            #expect(left.isEmpty, "containers left: \(left.map(\.name))")
            for record in left { try await runtime.container(record.id).remove(force: true) }
            for network in try runtime.networks.list() { try runtime.networks.remove(network.name) }
            try runtime.cgroups.remove(parent)
        }
        do {
            let result = try await body(runtime, dir)
            try await cleanUp()
            return result
        } catch {
            try? await cleanUp()
            throw error
        }
    }
}

/// Runs a reconciler over a fresh runtime while `body` runs, then shuts it
/// down (stopping its replicas) and waits for it to end.
func withReconciler<T: Sendable, C: Clock & Sendable>(
    _ label: String, options: Reconciler.Options = Reconciler.Options(), clock: C = ContinuousClock(),
    metrics: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil,
    _ body: @Sendable (Reconciler, ContainerRuntime) async throws -> T
) async throws -> T where C.Duration == Duration, C.Instant: Sendable {
    try await withReconcilerRuntime(label) { runtime, _ in
        let reconciler = try Reconciler(runtime: runtime, options: options, clock: clock, metricsFactory: metrics, tracer: tracer)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await reconciler.run()
                return nil
            }
            let result: Result<T, any Error>
            do {
                result = .success(try await body(reconciler, runtime))
            } catch {
                result = .failure(error)
            }
            group.cancelAll()
            while let _ = try await group.next() {}
            return try result.get()
        }
    }
}

/// A busybox service running `script` with `sh -c`.
func shellService(_ name: String, replicas: Int = 1, _ script: String) -> ServiceSpec {
    var spec = ServiceSpec(name: name, replicas: replicas, template: ContainerSpec(image: "busybox:test", command: ["sh", "-c", script]))
    spec.stopGracePeriod = .seconds(1)
    return spec
}

/// The running replicas' records, by the runtime.
func runningReplicas(_ runtime: ContainerRuntime, service: String) throws -> [ContainerRecord] {
    try runtime.list().filter { $0.spec.labels[ReplicaLabel.service] == service && $0.status == .running }
}

/// Collects a reconciler's events while it runs.
final class EventLog: Sendable {
    private final class Events: Sendable {
        let list = Mutex<[ServiceEvent]>([])
    }

    private let events = Events()
    private let task: Task<Void, Never>

    init(_ reconciler: Reconciler) {
        let stream = reconciler.events()
        let events = events
        task = Task {
            for await event in stream { events.list.withLock { $0.append(event) } }
        }
    }

    deinit { task.cancel() }

    var all: [ServiceEvent] { events.list.withLock { $0 } }

    func names(of service: String) -> [String] { all.filter { $0.service == service }.map(\.name) }

    /// Waits (up to 30 s) until `count` events match.
    @discardableResult
    func wait(count: Int = 1, timeout: Duration = .seconds(30), _ match: @Sendable (ServiceEvent) -> Bool) async throws -> [ServiceEvent] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let matching = all.filter(match)
            if matching.count >= count { return matching }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("waited \(timeout) for \(count) events; saw \(all.map(\.description))")
        throw ReconcilerError(.invalidState, "timed out waiting for events")
    }
}
