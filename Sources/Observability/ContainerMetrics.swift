public import CoreMetrics
import Foundation
public import Logging
import Reconciler
public import Runtime
public import ServiceLifecycle
import Synchronization

/// Samples every running container's cgroup and reports it through
/// swift-metrics: CPU seconds, memory use and limit, pids and OOM kills,
/// labelled by service (for replicas) and container name. Metrics of
/// containers that are gone are destroyed, so the label set stays bounded
/// by what runs.
///
/// A ServiceLifecycle `Service`: ``run()`` samples every ``interval`` until
/// graceful shutdown or cancellation. ``sample()`` takes one sample.
public final class ContainerMetrics: Service, Sendable {
    private struct Series {
        var cpu: FloatingPointCounter
        var memory: Gauge
        var memoryLimit: Gauge
        var pids: Gauge
        var oomKills: Counter
        var lastCPU: UInt64
        var lastOOMKills: Int64

        func destroy() {
            cpu.destroy()
            memory.destroy()
            memoryLimit.destroy()
            pids.destroy()
            oomKills.destroy()
        }
    }

    /// The runtime whose containers are sampled.
    public let runtime: ContainerRuntime
    /// How often ``run()`` samples.
    public let interval: Duration
    private let factory: any MetricsFactory
    private let logger: Logger
    private let series = Mutex<[String: Series]>([:])

    /// Samples `runtime`'s containers.
    ///
    /// - Parameters:
    ///   - runtime: the runtime whose containers are sampled.
    ///   - interval: how often ``run()`` samples.
    ///   - metricsFactory: where metrics go; the bootstrapped factory by default.
    ///   - logger: where it logs.
    public init(runtime: ContainerRuntime, interval: Duration = .seconds(5), metricsFactory: (any MetricsFactory)? = nil,
                logger: Logger = Logger(label: "gantry.observability")) {
        self.runtime = runtime
        self.interval = interval
        factory = metricsFactory ?? MetricsSystem.factory
        self.logger = logger
    }

    /// Samples until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try self.sample()
                    try await Task.sleep(for: self.interval)
                } catch is CancellationError {
                    return
                } catch {
                    self.logger.warning("cannot sample containers", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: self.interval)
                }
            }
        }
        series.withLock { series in
            series.values.forEach { $0.destroy() }
            series.removeAll()
        }
    }

    /// Takes one sample of every running container; returns how many.
    @discardableResult
    public func sample() throws -> Int {
        let records = try runtime.list().filter { $0.status == .running || $0.status == .paused }
        var seen = Set<String>()
        for record in records {
            guard let usage = try? runtime.container(record.id).usage() else { continue }
            seen.insert(record.id)
            series.withLock { series in
                var entry = series[record.id] ?? makeSeries(record)
                if usage.cpuNanoseconds > entry.lastCPU {
                    entry.cpu.increment(by: Double(usage.cpuNanoseconds - entry.lastCPU) / 1e9)
                    entry.lastCPU = usage.cpuNanoseconds
                }
                entry.memory.record(usage.memory)
                entry.memoryLimit.record(usage.memoryLimit ?? 0)
                entry.pids.record(usage.pids)
                if usage.oomKills > entry.lastOOMKills {
                    entry.oomKills.increment(by: usage.oomKills - entry.lastOOMKills)
                    entry.lastOOMKills = usage.oomKills
                }
                series[record.id] = entry
            }
        }
        let gone = series.withLock { series in
            let ids = series.keys.filter { !seen.contains($0) }
            return ids.compactMap { series.removeValue(forKey: $0) }
        }
        gone.forEach { $0.destroy() }
        return seen.count
    }

    private func makeSeries(_ record: ContainerRecord) -> Series {
        var dimensions = [("container", record.name)]
        if let service = record.spec.labels[ReplicaLabel.service] { dimensions.insert(("service", service), at: 0) }
        return Series(
            cpu: FloatingPointCounter(label: "gantry_container_cpu_seconds_total", dimensions: dimensions, factory: factory),
            memory: Gauge(label: "gantry_container_memory_bytes", dimensions: dimensions, factory: factory),
            memoryLimit: Gauge(label: "gantry_container_memory_limit_bytes", dimensions: dimensions, factory: factory),
            pids: Gauge(label: "gantry_container_pids", dimensions: dimensions, factory: factory),
            oomKills: Counter(label: "gantry_container_oom_kills_total", dimensions: dimensions, factory: factory),
            lastCPU: 0, lastOOMKills: 0)
    }
}
