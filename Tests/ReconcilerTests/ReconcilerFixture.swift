import Foundation
import GantryTestSupport
import Logging
import OCIImage
import Runtime
import CoreMetrics
import Synchronization
import Testing
import Tracing
@testable import Reconciler

/// Busybox applets the reconciler tests use.
let reconcilerApplets = ["touch", "rm", "test", "mkdir", "nc", "seq", "nslookup"]

/// Runs a reconciler over a fresh runtime while `body` runs, then shuts it
/// down (stopping its replicas) and waits for it to end.
func withReconciler<T: Sendable, C: Clock & Sendable>(
    _ label: String, options: Reconciler.Options = Reconciler.Options(), clock: C = ContinuousClock(),
    metrics: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil,
    _ body: @Sendable (Reconciler, ContainerRuntime) async throws -> T
) async throws -> T where C.Duration == Duration, C.Instant: Sendable {
    try await withBusyboxRuntime(label, applets: reconcilerApplets) { runtime, _ in
        let reconciler = try Reconciler(runtime: runtime, options: options, clock: clock, metricsFactory: metrics, tracer: tracer)
        return try await reconciler.withRunning { try await body($0, runtime) }
    }
}

/// A busybox service running `script` with `sh -c`.
func shellService(_ name: String, replicas: Int = 1, _ script: String) -> ServiceSpec {
    var spec = ServiceSpec(name: name, replicas: replicas, template: ContainerSpec(image: "busybox:test", command: ["sh", "-c", script]))
    spec.stopGracePeriod = .seconds(1)
    return spec
}

/// The running replicas' records, by the runtime (init containers are not replicas).
func runningReplicas(_ runtime: ContainerRuntime, service: String) throws -> [ContainerRecord] {
    try runtime.list().filter { $0.spec.labels[ReplicaLabel.service] == service && $0.spec.labels[ReplicaLabel.initContainer] == nil && $0.status == .running }
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
