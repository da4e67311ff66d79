public import Foundation
public import Runtime

/// Something that happened to a service or one of its replicas.
public struct ServiceEvent: Hashable, Sendable, Codable, CustomStringConvertible {
    /// What happened.
    public enum Kind: Hashable, Sendable, Codable {
        /// The service was applied: created or changed.
        case applied(generation: Int)
        /// The service was deleted.
        case deleted
        /// A replica was created.
        case created
        /// A replica started running.
        case started
        /// A replica ended.
        case exited(code: Int32, reason: ExitReason)
        /// A probe failed (it counts towards the failure threshold).
        case probeFailed(ProbeKind)
        /// A replica became ready or stopped being ready.
        case readinessChanged(ready: Bool)
        /// A replica failed its liveness or startup probe and is restarted.
        case unhealthy(ProbeKind)
        /// A replica's replacement waits for the crash-loop back-off.
        case backingOff(delay: Duration)
        /// A replica was replaced after it ended (a restart).
        case restarted(count: Int)
        /// The desired number of replicas changed.
        case scaled(from: Int, to: Int)
        /// The service's autoscaler changed its desired number of replicas.
        case autoscaled(from: Int, to: Int)
        /// A rollout to a revision began.
        case rolloutStarted(revision: Int)
        /// A rollout moved on: so many replicas of the new revision are available.
        case rolloutProgressed(revision: Int, updated: Int, available: Int)
        /// Every replica runs the revision and is available.
        case rolloutCompleted(revision: Int)
        /// A rollout made no progress within its deadline.
        case rolloutFailed(revision: Int)
        /// The service went back to an earlier revision's template.
        case rolledBack(from: Int, to: Int)
        /// Something could not be done (creating a replica, say); it is retried.
        case failed
        /// The service waits for services it depends on.
        case waiting
    }

    /// When it happened.
    public var time: Date
    /// The service's project.
    public var project: String
    /// The service.
    public var service: String
    /// The replica's container name, for replica events.
    public var container: String?
    /// What happened.
    public var kind: Kind
    /// A sentence for people.
    public var message: String

    /// An event happening now.
    ///
    /// - Parameters:
    ///   - project: the service's project.
    ///   - service: the service.
    ///   - container: the replica, for replica events.
    ///   - kind: what happened.
    ///   - message: a sentence for people.
    public init(project: String, service: String, container: String? = nil, kind: Kind, message: String) {
        time = Date()
        self.project = project
        self.service = service
        self.container = container
        self.kind = kind
        self.message = message
    }

    /// A short name of the kind, such as `exited` or `rolloutFailed`.
    public var name: String {
        switch kind {
        case .applied: "applied"
        case .deleted: "deleted"
        case .created: "created"
        case .started: "started"
        case .exited(_, let reason): reason == .oomKilled ? "oomKilled" : "exited"
        case .probeFailed: "probeFailed"
        case .readinessChanged(let ready): ready ? "ready" : "notReady"
        case .unhealthy: "unhealthy"
        case .backingOff: "backingOff"
        case .restarted: "restarted"
        case .scaled: "scaled"
        case .autoscaled: "autoscaled"
        case .rolloutStarted: "rolloutStarted"
        case .rolloutProgressed: "rolloutProgressed"
        case .rolloutCompleted: "rolloutCompleted"
        case .rolloutFailed: "rolloutFailed"
        case .rolledBack: "rolledBack"
        case .failed: "failed"
        case .waiting: "waiting"
        }
    }

    /// The object it concerns: `service/NAME` or `container/NAME`.
    public var object: String { container.map { "container/" + $0 } ?? "service/" + service }

    public var description: String {
        "\(service)\(container.map { " \($0)" } ?? "") \(name): \(message)"
    }
}
