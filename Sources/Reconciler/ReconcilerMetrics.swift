import CoreMetrics
import Synchronization

/// The reconciler's metrics, made through one factory (the bootstrapped
/// one by default) with a bounded label set: the service, and the probe kind.
final class ReconcilerMetrics: Sendable {
    private struct PerService {
        var restarts: Counter
        var reconcileDuration: Timer
        var desired: Gauge
        var ready: Gauge
        var available: Gauge
        var probeDuration: [ProbeKind: Timer] = [:]
        var probeFailures: [ProbeKind: Counter] = [:]
    }

    let factory: any MetricsFactory
    let queueDepth: Gauge
    private let services = Mutex<[String: PerService]>([:])

    init(factory: any MetricsFactory) {
        self.factory = factory
        queueDepth = Gauge(label: "gantry_reconcile_queue_depth", factory: factory)
    }

    private func perService<T>(_ service: String, _ body: (inout PerService) -> T) -> T {
        services.withLock { services in
            if services[service] == nil {
                let dimensions = [("service", service)]
                services[service] = PerService(
                    restarts: Counter(label: "gantry_service_restarts_total", dimensions: dimensions, factory: factory),
                    reconcileDuration: Timer(label: "gantry_reconcile_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory),
                    desired: Gauge(label: "gantry_service_replicas_desired", dimensions: dimensions, factory: factory),
                    ready: Gauge(label: "gantry_service_replicas_ready", dimensions: dimensions, factory: factory),
                    available: Gauge(label: "gantry_service_replicas_available", dimensions: dimensions, factory: factory))
            }
            return body(&services[service]!)
        }
    }

    func restarted(_ service: String) { perService(service) { $0.restarts }.increment() }

    func reconciled(_ service: String, nanoseconds: Int64) {
        perService(service) { $0.reconcileDuration }.recordNanoseconds(nanoseconds)
    }

    func replicas(_ service: String, desired: Int, ready: Int, available: Int) {
        let (desiredGauge, readyGauge, availableGauge) = perService(service) { ($0.desired, $0.ready, $0.available) }
        desiredGauge.record(desired)
        readyGauge.record(ready)
        availableGauge.record(available)
    }

    func probed(_ service: String, kind: ProbeKind, nanoseconds: Int64, passed: Bool) {
        let (timer, failures) = perService(service) { entry in
            let dimensions = [("service", service), ("probe", kind.rawValue)]
            if entry.probeDuration[kind] == nil {
                entry.probeDuration[kind] = Timer(label: "gantry_probe_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
                entry.probeFailures[kind] = Counter(label: "gantry_probe_failures_total", dimensions: dimensions, factory: factory)
            }
            return (entry.probeDuration[kind]!, entry.probeFailures[kind]!)
        }
        timer.recordNanoseconds(nanoseconds)
        if !passed { failures.increment() }
    }

    /// Forgets a deleted service's metrics.
    func remove(_ service: String) {
        guard let entry = services.withLock({ $0.removeValue(forKey: service) }) else { return }
        entry.restarts.destroy()
        entry.reconcileDuration.destroy()
        entry.desired.destroy()
        entry.ready.destroy()
        entry.available.destroy()
        entry.probeDuration.values.forEach { $0.destroy() }
        entry.probeFailures.values.forEach { $0.destroy() }
    }
}
