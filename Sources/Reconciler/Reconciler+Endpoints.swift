import Foundation
import Runtime

extension Reconciler {
    /// The key of a service's endpoint in the runtime.
    public static func endpointKey(project: String, service: String) -> String { project + "/" + service }

    /// The load-balanced endpoint the service should have; nil when its
    /// replicas are reached one by one (``EndpointMode/dnsRoundRobin``, no
    /// bridge network, or a runtime without endpoints).
    func endpoint(for spec: ServiceSpec) -> ServiceEndpoint? {
        guard spec.endpointMode == .virtualAddress, runtime.supportsEndpoints, case .bridge(let network) = spec.template.network else { return nil }
        return ServiceEndpoint(name: spec.name, network: network, ports: spec.template.publishedPorts, affinity: spec.sessionAffinity,
                               virtualPorts: spec.virtualPorts)
    }

    /// Points the service's endpoint at its ready replicas, leaving out
    /// those being stopped: called by every pass before it stops any, so
    /// that a replica takes no new connection once it is to go, and
    /// finishes those it has within its grace period.
    func updateEndpoint(_ name: String) async throws {
        guard let (spec, backends, installed, installedBackends) = state.withLock({ state -> (ServiceSpec, [String], ServiceEndpointRecord?, [String]?)? in
            guard let service = state.services[name] else { return nil }
            let backends = service.replicas.filter { $0.value.exit == nil && !$0.value.terminating && $0.value.ready && !$0.value.unhealthy }
                .map(\.key).sorted()
            return (service.record.spec, backends, service.endpoint, service.endpointBackends)
        }) else { return }
        let key = Self.endpointKey(project: spec.project, service: spec.name)
        guard let wanted = endpoint(for: spec) else {
            if installed != nil {
                try await runtime.removeEndpoint(key)
                state.withLock { state in
                    state.services[name]?.endpoint = nil
                    state.services[name]?.endpointBackends = nil
                }
            }
            return
        }
        if installed?.endpoint == wanted, installedBackends == backends { return }
        let record = try await runtime.setEndpoint(key, wanted, backends: backends)
        state.withLock { state in
            state.services[name]?.endpoint = record
            state.services[name]?.endpointBackends = backends
        }
    }

    /// Removes a service's endpoint (when it is deleted or taken down).
    func removeEndpoint(of spec: ServiceSpec) async {
        do {
            try await runtime.removeEndpoint(Self.endpointKey(project: spec.project, service: spec.name))
        } catch {
            logger.warning("cannot remove a service's endpoint", metadata: ["service": "\(spec.name)", "error": "\(error)"])
        }
        state.withLock { state in
            state.services[spec.name]?.endpoint = nil
            state.services[spec.name]?.endpointBackends = nil
        }
    }

    /// Removes the project's endpoints that no service of it wants (those
    /// of services deleted while no reconciler ran, or whose mode changed).
    func removeStaleEndpoints() async {
        let prefix = Self.endpointKey(project: options.project, service: "")
        let records = (try? runtime.endpoints()) ?? []
        for record in records where record.key.hasPrefix(prefix) {
            let service = String(record.key.dropFirst(prefix.count))
            let wanted = state.withLock { state in
                state.services[service].flatMap { $0.deleted ? nil : endpoint(for: $0.record.spec) }
            }
            guard wanted == nil else { continue }
            do {
                try await runtime.removeEndpoint(record.key)
            } catch {
                logger.warning("cannot remove a stale endpoint", metadata: ["endpoint": "\(record.key)", "error": "\(error)"])
            }
        }
    }
}
