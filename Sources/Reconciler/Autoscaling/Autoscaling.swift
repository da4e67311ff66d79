public import Foundation
import GRDB
import Runtime
import Scheduler
import Synchronization

/// Where an autoscaler reads its metrics: one value per replica.
///
/// The Observability module's `CgroupMetricSource` reads CPU and memory
/// use from the replicas' cgroups; an application can serve its own
/// metrics (queue lengths, requests per second) through this protocol.
public protocol ReplicaMetricSource: Sendable {
    /// One reading of `metric` for each of `replicas`, in their order:
    /// CPU and memory use as a percentage of the service's requests
    /// (``ServiceSpec/requestedCPUs``, ``ServiceSpec/requestedMemory``),
    /// the raw value for a custom metric; `nil` for a replica that has no
    /// value yet.
    ///
    /// - Parameters:
    ///   - metric: what to read.
    ///   - service: the service the replicas belong to.
    ///   - replicas: its running replicas.
    /// - Throws: when the metric cannot be read at all (the autoscaler then
    ///   keeps the replica count and reports why).
    func sample(_ metric: AutoscalerMetric.Kind, of service: ServiceSpec, replicas: [Reconciler.ReplicaInfo]) async throws -> MetricSample
}

extension ServiceSpec {
    /// The CPUs each replica asks for, against which CPU utilisation is
    /// measured: the template's CPU shares (1024 per CPU, as the kubelet
    /// converts requests; compose's `deploy.resources.reservations.cpus`),
    /// else its CPU limit, as Kubernetes takes a limit for the request when
    /// none is given. `nil` when there is neither.
    public var requestedCPUs: Double? {
        let resources = template.resources
        if let shares = resources.cpuShares, shares > 0 { return Double(shares) / 1024 }
        if let quota = resources.cpuQuota, quota > 0 { return Double(quota) / Double(resources.cpuPeriod ?? 100_000) }
        return nil
    }

    /// The memory each replica asks for, against which memory utilisation
    /// is measured: the template's memory reservation, else its limit.
    public var requestedMemory: Int64? {
        let resources = template.resources
        if let reservation = resources.memoryReservation, reservation > 0 { return reservation }
        if let limit = resources.memory, limit > 0 { return limit }
        return nil
    }
}

/// A service's autoscaler as stored: what it keeps and what it last did.
public struct AutoscalerRecord: Hashable, Sendable, Codable {
    /// The service's project.
    public var project: String
    /// The service it scales.
    public var service: String
    /// Its replica range, metrics and behaviour.
    public var spec: AutoscalerSpec
    /// What it measured and decided last.
    public var status: AutoscalerStatus
}

/// What an autoscaler measured and decided last.
public struct AutoscalerStatus: Hashable, Sendable, Codable {
    /// The service's desired replicas when it last looked.
    public var currentReplicas: Int = 0
    /// What it decided.
    public var desiredReplicas: Int = 0
    /// The average of each metric over the replicas, by name (`cpu`, `memory`, custom names).
    public var metrics: [String: Double] = [:]
    /// When it last changed the replica count.
    public var lastScaleTime: Date?
    /// When it last looked.
    public var lastCheckTime: Date?
    /// Why it decided so, or why it could not.
    public var message: String?

    /// A status of an autoscaler that has not looked yet.
    public init() {}
}

extension ServiceStore {
    /// Gives a service an autoscaler, replacing any it had, or removes it
    /// (`spec` nil). Deleting the service removes its autoscaler too.
    ///
    /// - Parameters:
    ///   - spec: the autoscaler, or nil to remove it.
    ///   - service: the service.
    ///   - project: its project.
    /// - Returns: the stored record, or nil when it was removed.
    /// - Throws: ``ReconcilerError`` with code `notFound` when there is no
    ///   such service, `invalidSpec` naming what is wrong in `spec`.
    @discardableResult
    public func setAutoscaler(_ spec: AutoscalerSpec?, service: String, project: String = ServiceSpec.defaultProject) throws -> AutoscalerRecord? {
        if let spec {
            try spec.validate(name: service)
        }
        return try perform("set the autoscaler of service \(service)") {
            try pool.write { db -> AutoscalerRecord? in
                _ = try Self.service(db, project, service)
                guard let spec else {
                    try db.execute(sql: "DELETE FROM autoscaler WHERE project = ? AND service = ?", arguments: [project, service])
                    return nil
                }
                let record = AutoscalerRecord(project: project, service: service, spec: spec, status: AutoscalerStatus())
                try Self.write(db, record)
                return record
            }
        }
    }

    /// The autoscaler of a service, or nil when it has none.
    ///
    /// - Parameters:
    ///   - service: the service.
    ///   - project: its project.
    public func autoscaler(_ service: String, project: String = ServiceSpec.defaultProject) throws -> AutoscalerRecord? {
        try perform("read the autoscaler of service \(service)") {
            try pool.read { db in
                try Data.fetchOne(db, sql: "SELECT record FROM autoscaler WHERE project = ? AND service = ?", arguments: [project, service])
                    .map { try Self.decode(AutoscalerRecord.self, $0, "autoscaler of service \(service)") }
            }
        }
    }

    /// The autoscalers of `project`'s services, or of every project's when
    /// nil, by service.
    ///
    /// - Parameter project: the project, or nil for all.
    public func autoscalers(project: String? = nil) throws -> [AutoscalerRecord] {
        try perform("list autoscalers") {
            try pool.read { db in
                let rows = if let project {
                    try Row.fetchAll(db, sql: "SELECT service, record FROM autoscaler WHERE project = ? ORDER BY service", arguments: [project])
                } else {
                    try Row.fetchAll(db, sql: "SELECT service, record FROM autoscaler ORDER BY project, service")
                }
                return try rows.map { try Self.decode(AutoscalerRecord.self, $0["record"], "autoscaler of service \($0["service"] as String)") }
            }
        }
    }

    /// Records what an autoscaler decided, unless its spec changed meanwhile.
    func setAutoscalerStatus(_ status: AutoscalerStatus, of record: AutoscalerRecord) throws {
        try perform("record the autoscaler status of service \(record.service)") {
            try pool.write { db in
                guard let data = try Data.fetchOne(db, sql: "SELECT record FROM autoscaler WHERE project = ? AND service = ?",
                                                   arguments: [record.project, record.service]) else { return }
                var stored = try Self.decode(AutoscalerRecord.self, data, "autoscaler of service \(record.service)")
                guard stored.spec == record.spec else { return }
                stored.status = status
                try Self.write(db, stored)
            }
        }
    }

    private static func write(_ db: Database, _ record: AutoscalerRecord) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO autoscaler (project, service, record) VALUES (?, ?, ?)",
                       arguments: [record.project, record.service, try encoder.encode(record)])
    }
}

extension Reconciler {
    /// Gives one of the project's services an autoscaler (or removes it
    /// with nil); the reconciler applies it from its next check on, every
    /// ``Options/autoscaleInterval``, reading metrics from
    /// ``Options/metricSource``.
    ///
    /// - Parameters:
    ///   - spec: the autoscaler, or nil to remove it.
    ///   - service: the service.
    @discardableResult
    public func setAutoscaler(_ spec: AutoscalerSpec?, service: String) throws -> AutoscalerRecord? {
        try store.setAutoscaler(spec, service: service, project: options.project)
    }

    /// Checks every autoscaler of the project every ``Options/autoscaleInterval``.
    func autoscaleLoop() async {
        while !Task.isCancelled {
            do {
                try await clock.sleep(options.autoscaleInterval)
            } catch {
                return
            }
            await autoscaleOnce()
        }
    }

    /// Reads each autoscaled service's metrics, decides its replicas with
    /// the HorizontalPodAutoscaler's algorithm and scales it when that
    /// differs. The algorithm's history (stabilisation, rate limits) lives
    /// in memory, as in Kubernetes' controller.
    func autoscaleOnce() async {
        let records: [AutoscalerRecord]
        do {
            records = try store.autoscalers(project: options.project)
        } catch {
            logger.warning("cannot read the autoscalers", metadata: ["error": "\(error)"])
            return
        }
        let names = Set(records.map(\.service))
        autoscalers.withLock { $0 = $0.filter { names.contains($0.key) } }
        for record in records {
            await autoscale(record)
        }
    }

    private func autoscale(_ record: AutoscalerRecord) async {
        let name = record.service
        guard let spec = state.withLock({ $0.services[name].flatMap { $0.deleted ? nil : $0.record.spec } }) else { return }
        var status = record.status
        status.lastCheckTime = Date()
        status.currentReplicas = spec.replicas
        defer {
            do {
                try store.setAutoscalerStatus(status, of: record)
            } catch {
                logger.warning("cannot record an autoscaler's status", metadata: ["service": "\(name)", "error": "\(error)"])
            }
        }
        guard let source = options.metricSource else {
            status.desiredReplicas = spec.replicas
            status.message = "no metric source: the reconciler was opened without one"
            return
        }
        let replicas = replicas(of: name).filter { $0.exit == nil && !$0.terminating }
        var samples: [MetricSample] = []
        do {
            for metric in record.spec.metrics {
                samples.append(try await source.sample(metric.kind, of: spec, replicas: replicas))
            }
        } catch {
            status.desiredReplicas = spec.replicas
            status.message = "cannot read the metrics: \(error)"
            return
        }
        status.metrics = [:]
        for sample in samples {
            let known = sample.values.compactMap { $0 }
            if !known.isEmpty { status.metrics[sample.metric.description] = known.reduce(0, +) / Double(known.count) }
        }
        let now = clock.now()
        let decision = autoscalers.withLock { autoscalers in
            var autoscaler = autoscalers[name].flatMap { $0.spec == record.spec ? $0 : nil } ?? HorizontalAutoscaler(spec: record.spec)
            defer { autoscalers[name] = autoscaler }
            return autoscaler.decide(currentReplicas: spec.replicas, samples: samples, now: now)
        }
        status.desiredReplicas = decision.desiredReplicas
        status.message = decision.reason
        guard decision.desiredReplicas != spec.replicas else { return }
        do {
            // The decision is on record before its effect, so that whoever
            // sees the new replica count finds the status that explains it.
            status.lastScaleTime = Date()
            try store.setAutoscalerStatus(status, of: record)
            try store.scale(name, project: options.project, replicas: decision.desiredReplicas)
            emit(ServiceEvent(project: options.project, service: name, kind: .autoscaled(from: spec.replicas, to: decision.desiredReplicas),
                              message: "autoscaled from \(spec.replicas) to \(decision.desiredReplicas) replicas: \(decision.reason)"))
            try refresh()
        } catch {
            status.message = "cannot scale to \(decision.desiredReplicas): \(error)"
        }
    }
}
