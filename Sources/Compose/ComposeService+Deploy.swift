import Reconciler
import Runtime

extension ServiceReader {
    /// `deploy:` — replicas, resource limits, the update strategy, the
    /// restart policy and service labels. Returns `deploy.replicas`.
    func deploy(_ value: ComposeValue, into spec: inout ServiceSpec) throws -> Int? {
        let fields = try value.fields(["mode", "replicas", "resources", "update_config", "rollback_config", "restart_policy", "labels",
                                       "placement", "endpoint_mode"], what: "deploy key")
        if let mode = fields["mode"], try mode.string() != "replicated" { throw mode.error("only replicated services are supported; set replicas") }
        if let mode = fields["endpoint_mode"] {
            guard let parsed = EndpointMode(rawValue: try mode.string()) else { throw mode.error("must be vip or dnsrr") }
            spec.endpointMode = parsed
        }
        for key in ["rollback_config", "placement"] {
            fields[key]?.warn("ignored; Gantry rolls back to the previous revision and runs every replica on this host")
        }
        spec.labels = try ComposeLabels.read(fields["labels"])
        if let resources = fields["resources"] {
            let resourceFields = try resources.fields(["limits", "reservations"], what: "resources key")
            if let reservations = resourceFields["reservations"] {
                // Reservations are requests: CPU shares (1024 per CPU, as the
                // kubelet converts them) and the memory soft limit; the
                // autoscaler measures utilisation against them.
                let reservationFields = try reservations.fields(["cpus", "memory", "devices", "generic_resources"], what: "reservation")
                for key in ["devices", "generic_resources"] {
                    if let value = reservationFields[key] { throw value.keyError("not supported: Gantry gives replicas no devices") }
                }
                if let value = reservationFields["cpus"] {
                    spec.template.resources.cpuShares = UInt64(max(2, (try cpus(value) * 1024).rounded()))
                }
                if let value = reservationFields["memory"] { spec.template.resources.memoryReservation = try value.size() }
            }
            if let limits = resourceFields["limits"] {
                let limitFields = try limits.fields(["cpus", "memory", "pids", "devices"], what: "limit")
                if let devices = limitFields["devices"] { throw devices.keyError("not supported: Gantry gives replicas no devices") }
                spec.template = spec.template.resources(cpus: try limitFields["cpus"].map(cpus), memory: try limitFields["memory"]?.size(),
                                                        pids: try limitFields["pids"].map { Int64(try $0.int(1 ... Int.max)) })
            }
        }
        if let update = fields["update_config"] { try updateStrategy(update, into: &spec.update) }
        if let restart = fields["restart_policy"] {
            let restartFields = try restart.fields(["condition", "delay", "max_attempts", "window"], what: "restart_policy key")
            if let condition = restartFields["condition"] {
                switch try condition.string() {
                case "none": spec.restartPolicy = .never
                case "on-failure": spec.restartPolicy = .onFailure
                case "any": spec.restartPolicy = .always
                default: throw condition.error("must be none, on-failure or any")
                }
            }
            for key in ["delay", "max_attempts", "window"] {
                restartFields[key]?.warn("ignored; Gantry restarts with a growing back-off (x-gantry.crash_loop)")
            }
        }
        return try fields["replicas"]?.int(0 ... ServiceSpec.maximumReplicas)
    }

    /// `update_config:` — compose updates `parallelism` replicas at a time,
    /// stopping the old ones first unless `order: start-first`.
    private func updateStrategy(_ value: ComposeValue, into update: inout UpdateStrategy) throws {
        let fields = try value.fields(["parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"], what: "update_config key")
        let order = try fields["order"]?.string() ?? "stop-first"
        guard ["stop-first", "start-first"].contains(order) else { throw fields["order", default: value].error("must be stop-first or start-first") }
        let parallelism = try fields["parallelism"]?.int() ?? 1
        // Parallelism 0 means all at once.
        let step: ReplicaCount = parallelism == 0 ? .percent(100) : .count(parallelism)
        if order == "start-first" {
            update.maxSurge = step
            update.maxUnavailable = .count(0)
        } else {
            update.maxSurge = .count(0)
            update.maxUnavailable = step
        }
        if let action = fields["failure_action"] {
            switch try action.string() {
            case "rollback": update.rollbackOnFailure = true
            case "pause", "continue": update.rollbackOnFailure = false
            default: throw action.error("must be rollback, pause or continue")
            }
        }
        if let monitor = fields["monitor"] { update.progressDeadline = try positive(monitor) }
        fields["delay"]?.warn("ignored; Gantry moves on as soon as new replicas are ready")
        fields["max_failure_ratio"]?.warn("ignored; a rollout fails when it makes no progress for its deadline")
    }

    /// A `healthcheck:`-shaped mapping as a probe; nil when disabled.
    /// Compose's defaults: every 30 s, 30 s timeout, 3 retries.
    func probe(_ value: ComposeValue) throws -> Probe? {
        let fields = try value.fields(["test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"], what: "healthcheck key")
        if let disable = fields["disable"], try disable.bool() { return nil }
        guard let test = fields["test"] else { throw value.keyError("test: is missing; Gantry does not run the image's HEALTHCHECK") }
        let command: [String]
        if case .sequence = test.node {
            let words = try test.sequence().map { try $0.string() }
            switch words.first {
            case "NONE": return nil
            case "CMD" where words.count > 1: command = Array(words.dropFirst())
            case "CMD-SHELL" where words.count > 1: command = ["/bin/sh", "-c", words.dropFirst().joined(separator: " ")]
            default: throw test.keyError("must be [\"CMD\", program, args…], [\"CMD-SHELL\", command], [\"NONE\"] or a shell command")
            }
        } else {
            let line = try test.string()
            guard !line.isEmpty else { throw test.keyError("is empty") }
            command = ["/bin/sh", "-c", line]
        }
        fields["start_interval"]?.warn("ignored; checks run every interval from the start")
        return Probe(.exec(command), initialDelay: try fields["start_period"]?.duration() ?? .zero,
                     period: try fields["interval"].map(positive) ?? .seconds(30), timeout: try fields["timeout"].map(positive) ?? .seconds(30),
                     failureThreshold: try fields["retries"]?.int(1 ... Int.max) ?? 3)
    }

    /// `x-gantry:` — what compose has no key for.
    func gantryExtensions(_ value: ComposeValue, into spec: inout ServiceSpec) throws {
        let fields = try value.fields(["lifetime", "liveness", "crash_loop", "min_ready", "progress_deadline", "session_affinity"], what: "x-gantry key")
        if let affinity = fields["session_affinity"] {
            guard let parsed = ServiceEndpoint.Affinity(rawValue: try affinity.string()) else { throw affinity.error("must be none or client-address") }
            spec.sessionAffinity = parsed
        }
        if let lifetime = fields["lifetime"] {
            switch try lifetime.string() {
            case "bound": spec.template.lifetime = .boundToHost
            case "independent": spec.template.lifetime = .independent
            default: throw lifetime.error("must be bound or independent")
            }
        }
        if let liveness = fields["liveness"] { spec.probes.liveness = try probe(liveness) }
        if let crashLoop = fields["crash_loop"] {
            let loopFields = try crashLoop.fields(["initial", "maximum", "reset_after"], what: "crash_loop key")
            if let initial = loopFields["initial"] { spec.crashLoop.initial = try positive(initial) }
            if let maximum = loopFields["maximum"] { spec.crashLoop.maximum = try positive(maximum) }
            if let reset = loopFields["reset_after"] { spec.crashLoop.resetAfter = try reset.duration() }
            guard spec.crashLoop.maximum >= spec.crashLoop.initial else { throw crashLoop.keyError("maximum must not be below initial") }
        }
        if let minReady = fields["min_ready"] { spec.update.minReady = try minReady.duration() }
        if let deadline = fields["progress_deadline"] { spec.update.progressDeadline = try positive(deadline) }
    }

    /// A duration above zero.
    private func positive(_ value: ComposeValue) throws -> Duration {
        let duration = try value.duration()
        guard duration > .zero else { throw value.error("must be longer than 0") }
        return duration
    }
}
