import Foundation
public import Runtime
import Scheduler
import Synchronization

/// Autoscaling metrics read from the replicas' cgroups: CPU use as a
/// percentage of the service's requested CPUs, averaged since the previous
/// reading, and memory use as a percentage of its requested memory — what
/// Kubernetes' metrics server gives the horizontal pod autoscaler.
///
/// A replica's first CPU reading has no earlier one to average from, so it
/// has no value until the next; the autoscaler counts it as using nothing
/// when scaling up and the target when scaling down. Custom metrics come
/// from the closures given for them by name.
///
/// ```swift
/// let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(
///     metricSource: CgroupMetricSource(runtime: runtime)))
/// ```
public final class CgroupMetricSource: ReplicaMetricSource {
    /// Reads a custom metric of one replica; nil when it has none yet.
    public typealias CustomMetric = @Sendable (Reconciler.ReplicaInfo) async throws -> Double?

    private struct Reading {
        var cpuNanoseconds: UInt64
        var time: UInt64
    }

    /// The runtime the replicas run in.
    public let runtime: ContainerRuntime
    private let custom: [String: CustomMetric]
    /// The last CPU reading of each replica, by project/service and container ID.
    private let readings = Mutex<[String: [String: Reading]]>([:])

    /// A source reading `runtime`'s cgroups.
    ///
    /// - Parameters:
    ///   - runtime: the runtime the replicas run in.
    ///   - custom: readers of custom metrics, by metric name.
    public init(runtime: ContainerRuntime, custom: [String: CustomMetric] = [:]) {
        self.runtime = runtime
        self.custom = custom
    }

    public func sample(_ metric: AutoscalerMetric.Kind, of service: ServiceSpec, replicas: [Reconciler.ReplicaInfo]) async throws -> MetricSample {
        switch metric {
        case .cpuUtilization:
            guard let cpus = service.requestedCPUs else {
                throw ReconcilerError(.invalidSpec, "service \(service.name) requests no CPU (no CPU reservation or limit): its CPU utilisation cannot be measured")
            }
            let now = DispatchTime.now().uptimeNanoseconds
            var current: [String: Reading] = [:]
            let key = service.project + "/" + service.name
            let previous = readings.withLock { $0[key] ?? [:] }
            let values = replicas.map { replica -> Double? in
                guard let usage = try? runtime.container(replica.id).usage() else { return nil }
                current[replica.id] = Reading(cpuNanoseconds: usage.cpuNanoseconds, time: now)
                guard let last = previous[replica.id], now > last.time, usage.cpuNanoseconds >= last.cpuNanoseconds else { return nil }
                let used = Double(usage.cpuNanoseconds - last.cpuNanoseconds) / Double(now - last.time)
                return used / cpus * 100
            }
            // Only the replicas read now are kept: the table stays as small as what runs.
            readings.withLock { $0[key] = current }
            return MetricSample(.cpuUtilization, values: values)
        case .memoryUtilization:
            guard let memory = service.requestedMemory else {
                throw ReconcilerError(.invalidSpec, "service \(service.name) requests no memory (no memory reservation or limit): its memory utilisation cannot be measured")
            }
            let values = replicas.map { replica -> Double? in
                guard let usage = try? runtime.container(replica.id).usage() else { return nil }
                return Double(usage.memory) / Double(memory) * 100
            }
            return MetricSample(.memoryUtilization, values: values)
        case .custom(let name):
            guard let read = custom[name] else {
                throw ReconcilerError(.invalidSpec, "no reader for the custom metric \(name): give one to CgroupMetricSource(runtime:custom:)")
            }
            var values: [Double?] = []
            for replica in replicas { values.append(try await read(replica)) }
            return MetricSample(metric, values: values)
        }
    }
}
