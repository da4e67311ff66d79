import Foundation
import GantryCore
public import Runtime

/// A service: a number of identical replicas of one container template,
/// kept running by the ``Reconciler``. Applying a changed spec starts a
/// rolling update to a new revision.
public struct ServiceSpec: Hashable, Sendable, Codable {
    /// The unique name within its project: letters, digits, `_ . -`.
    public var name: String
    /// The project the service belongs to (a compose project); a
    /// reconciler manages the services of one project.
    public var project: String
    /// How many replicas should run.
    public var replicas: Int
    /// What each replica runs. Its name is chosen by the reconciler,
    /// unless the template names it (Compose's `container_name`): such a
    /// service runs at most one replica, replaced in place.
    public var template: ContainerSpec
    /// When an ended replica is restarted.
    public var restartPolicy: RestartPolicy
    /// The replicas' health checks.
    public var probes: ServiceProbes
    /// How a changed template is rolled out.
    public var update: UpdateStrategy
    /// The delays between restarts of a replica that keeps ending.
    public var crashLoop: CrashLoopBackoff
    /// Services that must be started, healthy or completed before this one starts.
    public var dependsOn: [ServiceDependency]
    /// Free-form labels, also put on every replica.
    public var labels: [String: String]
    /// How clients reach the replicas: through one load-balanced endpoint
    /// (the default), or each replica by itself.
    public var endpointMode: EndpointMode
    /// How a client's connections to the endpoint are given to replicas.
    public var sessionAffinity: ServiceEndpoint.Affinity
    /// The ports of the endpoint's virtual address, each to a port of the
    /// replicas (as a Kubernetes Service's `port` and `targetPort`); empty
    /// for every port going to the same port of a replica.
    public var virtualPorts: [PublishedPort]
    /// Containers that run one after the other, each to a successful end,
    /// before each replica starts (as a pod's init containers): on the
    /// replica's networks, with their own mounts, named after the replica.
    /// One that fails fails the replica's start, which is tried again with
    /// a back-off.
    public var initContainers: [ContainerSpec]
    /// The service whose replica's network namespace the replicas share
    /// (Compose's `network_mode: service:NAME`): its addresses, ports and
    /// names. They start once it runs a replica, and are replaced when
    /// that replica is, as their network ends with it.
    public var networkService: String?

    /// A service of `replicas` copies of `template`.
    ///
    /// - Parameters:
    ///   - name: the service's name.
    ///   - project: the project it belongs to.
    ///   - replicas: how many replicas should run.
    ///   - template: what each replica runs.
    public init(name: String, project: String = ServiceSpec.defaultProject, replicas: Int = 1, template: ContainerSpec) {
        self.name = name
        self.project = project
        self.replicas = replicas
        self.template = template
        restartPolicy = .always
        probes = ServiceProbes()
        update = UpdateStrategy()
        crashLoop = CrashLoopBackoff()
        dependsOn = []
        labels = [:]
        endpointMode = .virtualAddress
        sessionAffinity = .none
        virtualPorts = []
        initContainers = []
    }

    /// The project of services applied without one.
    public static let defaultProject = "default"

    /// The most replicas a service may ask for: every replica is a
    /// container on this host, and a number past this is a typing mistake
    /// that would otherwise exhaust memory before any limit is reached.
    public static let maximumReplicas = 10_000

    /// How long a replica has to stop before it is killed (the template's grace period).
    public var stopGracePeriod: Duration {
        get { template.stopGracePeriod }
        set { template.stopGracePeriod = newValue }
    }

    /// The part of the spec whose change makes a new revision: the
    /// template, the probes, the init containers and the service whose
    /// network the replicas share.
    public var revisionTemplate: RevisionTemplate {
        get { RevisionTemplate(container: template, probes: probes, initContainers: initContainers.isEmpty ? nil : initContainers, networkService: networkService) }
        set {
            template = newValue.container
            probes = newValue.probes
            initContainers = newValue.initContainers ?? []
            networkService = newValue.networkService
        }
    }

    /// Checks the spec, naming what is wrong.
    public func validate() throws {
        try Self.validate(name: name, kind: "service")
        try Self.validate(name: project, kind: "project")
        try Self.validate(replicas: replicas, service: name)
        if let container = template.name {
            // A named container is one (Compose's container_name).
            guard replicas <= 1 else {
                throw ReconcilerError(.invalidSpec, "service \(name) names its container \(container), so it runs one replica, not \(replicas)")
            }
        }
        try validateSecrets()
        for (kind, probe) in probes.all { try probe.validate(service: name, kind: kind) }
        try update.validate(service: name)
        guard crashLoop.initial > .zero, crashLoop.maximum >= crashLoop.initial else {
            throw ReconcilerError(.invalidSpec, "service \(name): the crash-loop back-off needs 0 < initial <= maximum")
        }
        for port in virtualPorts where port.hostPort == 0 || port.containerPort == 0 {
            throw ReconcilerError(.invalidSpec, "service \(name): the virtual port \(port.hostPort) → \(port.containerPort) needs both ports above 0")
        }
        for (index, container) in initContainers.enumerated() where !container.publishedPorts.isEmpty || container.pod != nil {
            throw ReconcilerError(.invalidSpec, "service \(name): init container \(index + 1) publishes ports or joins a pod; it runs on the replica's networks only")
        }
        if let networkService {
            guard networkService != name else { throw ReconcilerError(.invalidSpec, "service \(name) cannot share its own network") }
            guard template.publishedPorts.isEmpty, virtualPorts.isEmpty, template.networkAliases.isEmpty, template.additionalNetworks.isEmpty else {
                throw ReconcilerError(.invalidSpec, "service \(name) shares the network of service \(networkService): give networks, aliases and ports to \(networkService)")
            }
        }
        for dependency in dependsOn where dependency.service == name {
            throw ReconcilerError(.invalidSpec, "service \(name) depends on itself")
        }
    }

    static func validate(replicas: Int, service: String) throws {
        guard replicas >= 0 else { throw ReconcilerError(.invalidSpec, "service \(service): replicas must not be negative (\(replicas))") }
        guard replicas <= maximumReplicas else {
            throw ReconcilerError(.invalidSpec, "service \(service): \(replicas) replicas are more than the \(maximumReplicas) one host can run")
        }
    }

    package static func validate(name: String, kind: String) throws {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") }
        guard !name.isEmpty, name.count <= 63, allowed, name.first?.isLetter == true || name.first?.isNumber == true else {
            throw ReconcilerError(.invalidSpec, "\"\(name)\" is not a valid \(kind) name: use up to 63 letters, digits, _ . -, starting with a letter or digit")
        }
    }
}

extension ServiceSpec {
    private enum CodingKeys: String, CodingKey {
        case name, project, replicas, template, restartPolicy, probes, update, crashLoop, dependsOn, labels, endpointMode, sessionAffinity, virtualPorts,
             initContainers, networkService
    }

    /// Decodes a spec; one stored before a field existed takes its default.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try container.decode(String.self, forKey: .name), project: try container.decode(String.self, forKey: .project),
                  replicas: try container.decode(Int.self, forKey: .replicas), template: try container.decode(ContainerSpec.self, forKey: .template))
        restartPolicy = try container.decode(RestartPolicy.self, forKey: .restartPolicy)
        probes = try container.decode(ServiceProbes.self, forKey: .probes)
        update = try container.decode(UpdateStrategy.self, forKey: .update)
        crashLoop = try container.decode(CrashLoopBackoff.self, forKey: .crashLoop)
        dependsOn = try container.decode([ServiceDependency].self, forKey: .dependsOn)
        labels = try container.decode([String: String].self, forKey: .labels)
        endpointMode = try container.decodeIfPresent(EndpointMode.self, forKey: .endpointMode) ?? .virtualAddress
        sessionAffinity = try container.decodeIfPresent(ServiceEndpoint.Affinity.self, forKey: .sessionAffinity) ?? .none
        virtualPorts = try container.decodeIfPresent([PublishedPort].self, forKey: .virtualPorts) ?? []
        initContainers = try container.decodeIfPresent([ContainerSpec].self, forKey: .initContainers) ?? []
        networkService = try container.decodeIfPresent(String.self, forKey: .networkService)
    }
}

/// How clients reach a service's replicas (Compose's `deploy.endpoint_mode`).
public enum EndpointMode: String, Hashable, Sendable, Codable, CaseIterable {
    /// Through a load-balanced endpoint, as a Kubernetes Service: on the
    /// service's bridge network its name resolves to one virtual address,
    /// and the template's published ports are the service's; both spread
    /// new connections over the ready replicas, which publish nothing
    /// themselves. (Where the runtime has no endpoints, as an ordinary
    /// user's, the service is reached as in ``dnsRoundRobin``.)
    case virtualAddress = "vip"
    /// Each replica by itself: the service's name resolves to every
    /// replica's address, and each replica publishes the template's ports
    /// (so a fixed host port is held by one replica at a time).
    case dnsRoundRobin = "dnsrr"
}

/// When the reconciler restarts a replica that ended, as in Kubernetes and compose.
public enum RestartPolicy: String, Hashable, Sendable, Codable, CaseIterable {
    /// Whatever its exit.
    case always
    /// Only after a failure: a non-zero exit, a signal, an OOM kill.
    case onFailure = "on-failure"
    /// Never: an ended replica stays ended.
    case never
}

/// The template of one revision: what changes make a rollout.
public struct RevisionTemplate: Hashable, Sendable, Codable {
    /// What each replica runs.
    public var container: ContainerSpec
    /// The replicas' health checks.
    public var probes: ServiceProbes
    /// The containers run before each replica; `nil` for none (so that a
    /// template without them hashes as before they existed).
    public var initContainers: [ContainerSpec]?
    /// The service whose replica's network the replicas share, if one.
    public var networkService: String?

    /// A short, stable hash of the template, naming the revision.
    public var hash: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(self)) ?? Data()
        return String(stableHash(data), radix: 16)
    }
}

/// The delays between restarts of a replica that keeps ending: at once the
/// first time, then `initial`, doubling up to `maximum`; back to the start
/// once a replica has run for `resetAfter`. Kubernetes' defaults.
public struct CrashLoopBackoff: Hashable, Sendable, Codable {
    /// The delay before the second restart in a row.
    public var initial: Duration
    /// The longest delay.
    public var maximum: Duration
    /// How long a replica must run for the back-off to start over.
    public var resetAfter: Duration

    /// 10 s doubling to 300 s, reset after 10 minutes.
    ///
    /// - Parameters:
    ///   - initial: the delay before the second restart in a row.
    ///   - maximum: the longest delay.
    ///   - resetAfter: how long a replica must run for the back-off to start over.
    public init(initial: Duration = .seconds(10), maximum: Duration = .seconds(300), resetAfter: Duration = .seconds(600)) {
        self.initial = initial
        self.maximum = maximum
        self.resetAfter = resetAfter
    }
}

/// A service another one waits for, and for what, as compose's `depends_on`.
public struct ServiceDependency: Hashable, Sendable, Codable {
    /// What the dependency must have reached.
    public enum Condition: String, Hashable, Sendable, Codable, CaseIterable {
        /// A replica of it runs.
        case started = "service_started"
        /// Its replicas are ready (their readiness probes pass).
        case healthy = "service_healthy"
        /// Its replicas ended with status 0.
        case completedSuccessfully = "service_completed_successfully"
    }

    /// The service waited for, in the same project.
    public var service: String
    /// What it must have reached.
    public var condition: Condition

    /// A dependency on `service` reaching `condition`.
    ///
    /// - Parameters:
    ///   - service: the service waited for.
    ///   - condition: what it must have reached.
    public init(_ service: String, condition: Condition = .started) {
        self.service = service
        self.condition = condition
    }
}

/// A number of replicas, absolute or as a percentage of the desired count.
public enum ReplicaCount: Hashable, Sendable, Codable, CustomStringConvertible {
    /// So many replicas.
    case count(Int)
    /// This percentage of the desired replicas.
    case percent(Int)

    /// The number for `total` desired replicas, rounding up or down.
    ///
    /// - Parameters:
    ///   - total: the desired number of replicas.
    ///   - roundingUp: whether a fraction counts as one more.
    public func resolve(total: Int, roundingUp: Bool) -> Int {
        switch self {
        case .count(let count): return count
        case .percent(let percent):
            let product = total * percent
            return roundingUp ? (product + 99) / 100 : product / 100
        }
    }

    public var description: String {
        switch self {
        case .count(let count): "\(count)"
        case .percent(let percent): "\(percent)%"
        }
    }

    /// Parses `3` or `25%`.
    ///
    /// - Parameter text: the count or percentage.
    public init?(_ text: String) {
        if text.hasSuffix("%") {
            guard let value = Int(text.dropLast()), (0...100).contains(value) else { return nil }
            self = .percent(value)
        } else {
            guard let value = Int(text), value >= 0 else { return nil }
            self = .count(value)
        }
    }

    var isNegativeOrOver100: Bool {
        switch self {
        case .count(let count): count < 0
        case .percent(let percent): percent < 0 || percent > 100
        }
    }
}

/// How a new revision replaces the old one, as a Kubernetes Deployment's
/// rolling update.
public struct UpdateStrategy: Hashable, Sendable, Codable {
    /// How many replicas may run above the desired count during a rollout (25 %).
    public var maxSurge: ReplicaCount
    /// How many replicas may be unavailable during a rollout (25 %).
    public var maxUnavailable: ReplicaCount
    /// How long a ready replica must stay ready to count as available.
    public var minReady: Duration
    /// How long a rollout may go without progress before it fails (600 s).
    public var progressDeadline: Duration
    /// How many old revisions are kept for rollbacks (10).
    public var revisionHistoryLimit: Int
    /// Whether a failed rollout rolls back to the previous revision on its own.
    public var rollbackOnFailure: Bool

    /// Kubernetes' defaults, and rollback on failure.
    ///
    /// - Parameters:
    ///   - maxSurge: replicas allowed above the desired count.
    ///   - maxUnavailable: replicas allowed to be unavailable.
    ///   - minReady: how long a replica must be ready to count as available.
    ///   - progressDeadline: how long a rollout may go without progress.
    ///   - revisionHistoryLimit: how many old revisions are kept.
    ///   - rollbackOnFailure: whether a failed rollout rolls back on its own.
    public init(maxSurge: ReplicaCount = .percent(25), maxUnavailable: ReplicaCount = .percent(25), minReady: Duration = .zero,
                progressDeadline: Duration = .seconds(600), revisionHistoryLimit: Int = 10, rollbackOnFailure: Bool = true) {
        self.maxSurge = maxSurge
        self.maxUnavailable = maxUnavailable
        self.minReady = minReady
        self.progressDeadline = progressDeadline
        self.revisionHistoryLimit = revisionHistoryLimit
        self.rollbackOnFailure = rollbackOnFailure
    }

    func validate(service: String) throws {
        guard !maxSurge.isNegativeOrOver100, !maxUnavailable.isNegativeOrOver100 else {
            throw ReconcilerError(.invalidSpec, "service \(service): maxSurge and maxUnavailable must be counts >= 0 or percentages 0…100")
        }
        guard maxSurge != .count(0) || maxUnavailable != .count(0), maxSurge != .percent(0) || maxUnavailable != .percent(0) else {
            throw ReconcilerError(.invalidSpec, "service \(service): maxSurge and maxUnavailable cannot both be 0")
        }
        guard minReady >= .zero, progressDeadline > .zero, revisionHistoryLimit >= 0 else {
            throw ReconcilerError(.invalidSpec, "service \(service): minReady, progressDeadline and revisionHistoryLimit must not be negative")
        }
    }

    /// The surge and unavailability limits for `replicas` desired replicas,
    /// as Kubernetes resolves them: surge rounds up, unavailability down,
    /// and at least one of them is 1 or more.
    func limits(replicas: Int) -> (surge: Int, unavailable: Int) {
        let surge = maxSurge.resolve(total: replicas, roundingUp: true)
        var unavailable = maxUnavailable.resolve(total: replicas, roundingUp: false)
        if surge == 0 && unavailable == 0 { unavailable = 1 }
        return (surge, unavailable)
    }
}

extension ContainerSpec {
    /// Whether the spec publishes a fixed host port, which two replicas
    /// cannot hold at once.
    var publishesFixedHostPorts: Bool { publishedPorts.contains { $0.hostPort != 0 } }
}
