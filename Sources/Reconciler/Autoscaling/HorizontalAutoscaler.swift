import Foundation

/// A metric an autoscaler holds at a target.
public struct AutoscalerMetric: Hashable, Sendable, Codable, CustomStringConvertible {
    /// What is measured.
    public enum Kind: Hashable, Sendable, Codable, CustomStringConvertible {
        /// CPU use as a percentage of each replica's CPU request.
        case cpuUtilization
        /// Memory use as a percentage of each replica's memory request.
        case memoryUtilization
        /// A value each replica reports, averaged over the replicas.
        case custom(String)

        public var description: String {
            switch self {
            case .cpuUtilization: "cpu"
            case .memoryUtilization: "memory"
            case .custom(let name): name
            }
        }
    }

    /// What is measured.
    public var kind: Kind
    /// The value to hold: a percentage of requests for CPU and memory, an
    /// average per replica for a custom metric.
    public var target: Double

    /// A metric and its target.
    public init(_ kind: Kind, target: Double) {
        self.kind = kind
        self.target = target
    }

    /// Average CPU use at `percent` of the replicas' CPU requests.
    public static func cpu(percent: Double) -> AutoscalerMetric { AutoscalerMetric(.cpuUtilization, target: percent) }
    /// Average memory use at `percent` of the replicas' memory requests.
    public static func memory(percent: Double) -> AutoscalerMetric { AutoscalerMetric(.memoryUtilization, target: percent) }
    /// A custom metric averaging `averageValue` per replica.
    public static func custom(_ name: String, averageValue: Double) -> AutoscalerMetric {
        AutoscalerMetric(.custom(name), target: averageValue)
    }

    public var description: String {
        switch kind {
        case .custom: "\(kind) averaging \(target)"
        default: "\(kind) at \(target)%"
        }
    }
}

/// A limit on how fast replicas are added or removed within a period.
public struct ScalingPolicy: Hashable, Sendable, Codable {
    /// How the change is bounded.
    public enum Kind: Hashable, Sendable, Codable {
        /// At most this many replicas per period.
        case pods(Int)
        /// At most this percentage of the replicas at the start of the period.
        case percent(Int)
    }

    public var kind: Kind
    /// The period the change is counted over.
    public var period: Duration

    /// A policy.
    public init(_ kind: Kind, per period: Duration) {
        self.kind = kind
        self.period = period
    }
}

/// Which of several policies applies.
public enum SelectPolicy: String, Hashable, Sendable, Codable {
    /// The policy that allows the largest change.
    case max = "Max"
    /// The policy that allows the smallest change.
    case min = "Min"
    /// No change in this direction at all.
    case disabled = "Disabled"
}

/// How an autoscaler scales in one direction.
public struct ScalingRules: Hashable, Sendable, Codable {
    /// Recommendations within this window are considered together: scaling
    /// up takes the lowest of them, scaling down the highest, so a brief
    /// spike or dip does not make the replicas flap.
    public var stabilizationWindow: Duration
    public var selectPolicy: SelectPolicy
    public var policies: [ScalingPolicy]

    /// Rules.
    public init(stabilizationWindow: Duration, selectPolicy: SelectPolicy = .max, policies: [ScalingPolicy]) {
        self.stabilizationWindow = stabilizationWindow
        self.selectPolicy = selectPolicy
        self.policies = policies
    }
}

/// How fast an autoscaler scales up and down.
public struct ScalingBehavior: Hashable, Sendable, Codable {
    public var scaleUp: ScalingRules
    public var scaleDown: ScalingRules

    /// A behaviour.
    public init(scaleUp: ScalingRules = ScalingBehavior.kubernetesDefault.scaleUp,
                scaleDown: ScalingRules = ScalingBehavior.kubernetesDefault.scaleDown) {
        self.scaleUp = scaleUp
        self.scaleDown = scaleDown
    }

    /// The HorizontalPodAutoscaler's defaults: up at once by 100 % or 4
    /// replicas (whichever is more) per 15 s; down by up to 100 % per 15 s
    /// after a 300 s stabilisation window.
    public static let kubernetesDefault = ScalingBehavior(
        up: ScalingRules(stabilizationWindow: .zero, policies: [
            ScalingPolicy(.percent(100), per: .seconds(15)), ScalingPolicy(.pods(4), per: .seconds(15)),
        ]),
        down: ScalingRules(stabilizationWindow: .seconds(300), policies: [ScalingPolicy(.percent(100), per: .seconds(15))]))

    private init(up: ScalingRules, down: ScalingRules) {
        scaleUp = up
        scaleDown = down
    }
}

/// What an autoscaler keeps: a replica range, the metrics it holds at their
/// targets, and how fast it may move.
public struct AutoscalerSpec: Hashable, Sendable, Codable {
    public var minReplicas: Int
    public var maxReplicas: Int
    public var metrics: [AutoscalerMetric]
    /// Ratios of metric to target within 1 ± tolerance cause no change.
    public var tolerance: Double
    public var behavior: ScalingBehavior

    /// A specification; Kubernetes' defaults for what is not given.
    public init(minReplicas: Int = 1, maxReplicas: Int, metrics: [AutoscalerMetric], tolerance: Double = 0.1,
                behavior: ScalingBehavior = .kubernetesDefault) {
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
        self.metrics = metrics
        self.tolerance = tolerance
        self.behavior = behavior
    }

    /// Checks the specification.
    ///
    /// - Parameter name: the autoscaler's name, for messages.
    /// - Throws: ``ReconcilerError`` with code `invalidSpec` naming the field at fault.
    public func validate(name: String) throws {
        func fail(_ why: String) -> ReconcilerError { ReconcilerError(.invalidSpec, "autoscaler \(name): \(why)") }
        guard minReplicas >= 1 else { throw fail("minReplicas is \(minReplicas); it must be at least 1") }
        guard maxReplicas >= minReplicas else { throw fail("maxReplicas \(maxReplicas) is below minReplicas \(minReplicas)") }
        guard !metrics.isEmpty else { throw fail("metrics is empty; give at least one") }
        for metric in metrics where !(metric.target > 0 && metric.target.isFinite) {
            throw fail("the target of metric \(metric.kind) is \(metric.target); it must be above 0")
        }
        guard tolerance >= 0, tolerance < 1 else { throw fail("tolerance \(tolerance) is outside 0..<1") }
        for (direction, rules) in [("scaleUp", behavior.scaleUp), ("scaleDown", behavior.scaleDown)] {
            guard rules.stabilizationWindow >= .zero, rules.stabilizationWindow <= .seconds(3600) else {
                throw fail("\(direction).stabilizationWindow \(rules.stabilizationWindow) is outside 0...3600 s")
            }
            guard rules.selectPolicy == .disabled || !rules.policies.isEmpty else {
                throw fail("\(direction).policies is empty; give one or set selectPolicy Disabled")
            }
            for policy in rules.policies {
                guard policy.period > .zero, policy.period <= .seconds(1800) else {
                    throw fail("\(direction) policy period \(policy.period) is outside 1...1800 s")
                }
                switch policy.kind {
                case .pods(let value) where value <= 0, .percent(let value) where value <= 0:
                    throw fail("\(direction) policy value \(value) must be above 0")
                default: break
                }
            }
        }
    }
}

/// One reading of a metric over the replicas: a value per replica, `nil`
/// where a replica has none yet.
public struct MetricSample: Sendable, Hashable {
    public var metric: AutoscalerMetric.Kind
    /// A percentage of requests for CPU and memory; the raw value for a custom metric.
    public var values: [Double?]

    /// A sample.
    public init(_ metric: AutoscalerMetric.Kind, values: [Double?]) {
        self.metric = metric
        self.values = values
    }
}

/// What an autoscaler decided, and why.
public struct AutoscalerDecision: Hashable, Sendable {
    /// The replicas to run.
    public var desiredReplicas: Int
    /// What the metrics alone asked for, before stabilisation, rate limits and bounds.
    public var metricReplicas: Int
    /// Why, in words.
    public var reason: String
}

/// The HorizontalPodAutoscaler's algorithm, as a value: feed it readings
/// with the time they were taken, and it answers how many replicas to run.
///
/// Each metric proposes `ceil(replicas × value / target)`, or no change
/// when the ratio is within the tolerance; the largest proposal wins.
/// Replicas without a value count as using nothing when scaling up and
/// exactly the target when scaling down, and a change they would reverse
/// is not made. The proposal is then stabilised (scaling down takes the
/// highest recommendation of the window), limited by the scaling policies
/// (changes already made within their periods count) and kept within the
/// replica range. Times are offsets from any origin; nothing here reads a
/// clock.
public struct HorizontalAutoscaler: Sendable {
    public var spec: AutoscalerSpec
    private var recommendations: [(time: Duration, replicas: Int)] = []
    private var scaleUpEvents: [(time: Duration, change: Int)] = []
    private var scaleDownEvents: [(time: Duration, change: Int)] = []

    /// An autoscaler with no history.
    public init(spec: AutoscalerSpec) {
        self.spec = spec
    }

    /// Decides how many replicas to run now, and remembers it.
    ///
    /// - Parameters:
    ///   - currentReplicas: the replicas the service asks for now; 0 turns
    ///     autoscaling off, as it does in Kubernetes.
    ///   - samples: the latest reading of each metric.
    ///   - now: when the readings were taken.
    public mutating func decide(currentReplicas: Int, samples: [MetricSample], now: Duration) -> AutoscalerDecision {
        guard currentReplicas > 0 else {
            return AutoscalerDecision(desiredReplicas: 0, metricReplicas: 0, reason: "scaled to zero: autoscaling is off")
        }
        if currentReplicas > spec.maxReplicas {
            record(from: currentReplicas, to: spec.maxReplicas, at: now)
            return AutoscalerDecision(desiredReplicas: spec.maxReplicas, metricReplicas: currentReplicas, reason: "above maxReplicas")
        }
        if currentReplicas < spec.minReplicas {
            record(from: currentReplicas, to: spec.minReplicas, at: now)
            return AutoscalerDecision(desiredReplicas: spec.minReplicas, metricReplicas: currentReplicas, reason: "below minReplicas")
        }
        var proposal: (replicas: Int, reason: String)?
        for metric in spec.metrics {
            guard let sample = samples.last(where: { $0.metric == metric.kind }),
                  let proposed = propose(metric, sample, currentReplicas) else { continue }
            if proposal == nil || proposed.replicas > proposal!.replicas { proposal = proposed }
        }
        guard let proposal else {
            return AutoscalerDecision(desiredReplicas: currentReplicas, metricReplicas: currentReplicas, reason: "no metric has a value yet")
        }
        let stable = stabilize(proposal.replicas, current: currentReplicas, now: now)
        let (limited, limit) = limitRate(stable, current: currentReplicas, now: now)
        let desired = min(max(limited, spec.minReplicas), spec.maxReplicas)
        var reason = proposal.reason
        // The bound that decided, the last applied first: the replica range, then the rate, then the window.
        if desired != proposal.replicas {
            if desired != limited {
                reason += desired == spec.maxReplicas ? "; limited by maxReplicas" : "; limited by minReplicas"
            } else if let limit {
                reason += "; \(limit)"
            } else if stable != proposal.replicas {
                reason += "; held at \(stable) by the scale-down stabilisation window"
            } else {
                reason += desired == spec.maxReplicas ? "; limited by maxReplicas" : "; limited by minReplicas"
            }
        }
        record(from: currentReplicas, to: desired, at: now)
        return AutoscalerDecision(desiredReplicas: desired, metricReplicas: proposal.replicas, reason: reason)
    }

    /// What one metric asks for, or nil when no replica has a value.
    private func propose(_ metric: AutoscalerMetric, _ sample: MetricSample, _ current: Int) -> (replicas: Int, reason: String)? {
        let known = sample.values.compactMap { $0 }
        guard !known.isEmpty else { return nil }
        let missing = sample.values.count - known.count
        let average = known.reduce(0, +) / Double(known.count)
        let ratio = average / metric.target
        let unit = if case .custom = metric.kind { "" } else { "%" }
        let reading = "\(metric.kind) \(Self.format(average))\(unit) against a target of \(Self.format(metric.target))\(unit)"
        if abs(1 - ratio) <= spec.tolerance && missing == 0 {
            return (current, reading + ": within tolerance")
        }
        guard missing > 0 else { return (Int((ratio * Double(known.count)).rounded(.up)), reading) }
        // Replicas without a value: none of the metric when scaling up, the
        // target when scaling down; a change they would reverse is not made.
        let assumed = ratio > 1 ? 0 : metric.target
        let recomputed = (known.reduce(0, +) + assumed * Double(missing)) / Double(sample.values.count) / metric.target
        if abs(1 - recomputed) <= spec.tolerance || (ratio > 1) != (recomputed > 1) {
            return (current, reading + ": no change once replicas without a value are counted")
        }
        return (Int((recomputed * Double(sample.values.count)).rounded(.up)), reading)
    }

    /// The recommendation after the stabilisation windows: up to the lowest
    /// of the scale-up window, down to the highest of the scale-down window.
    private mutating func stabilize(_ proposed: Int, current: Int, now: Duration) -> Int {
        let longest = max(spec.behavior.scaleUp.stabilizationWindow, spec.behavior.scaleDown.stabilizationWindow)
        recommendations.removeAll { $0.time < now - longest }
        var up = proposed
        var down = proposed
        for recommendation in recommendations {
            if recommendation.time > now - spec.behavior.scaleUp.stabilizationWindow { up = min(up, recommendation.replicas) }
            if recommendation.time > now - spec.behavior.scaleDown.stabilizationWindow { down = max(down, recommendation.replicas) }
        }
        recommendations.append((now, proposed))
        return current < up ? up : (current > down ? down : current)
    }

    /// The recommendation within the scaling policies, and what limited it.
    private mutating func limitRate(_ desired: Int, current: Int, now: Duration) -> (Int, String?) {
        let longest = (spec.behavior.scaleUp.policies + spec.behavior.scaleDown.policies).map(\.period).max() ?? .zero
        scaleUpEvents.removeAll { $0.time <= now - longest }
        scaleDownEvents.removeAll { $0.time <= now - longest }
        if desired > current {
            let rules = spec.behavior.scaleUp
            var limit = rules.selectPolicy == .min ? Int.max : Int.min
            for policy in rules.policies {
                let added = scaleUpEvents.filter { $0.time > now - policy.period }.reduce(0) { $0 + $1.change }
                let start = current - added
                let proposed = switch policy.kind {
                case .pods(let value): start + value
                case .percent(let value): Int((Double(start) * (1 + Double(value) / 100)).rounded(.up))
                }
                limit = rules.selectPolicy == .min ? min(limit, proposed) : max(limit, proposed)
            }
            if rules.selectPolicy == .disabled { limit = current }
            limit = max(limit, current)
            if desired > limit {
                return (limit, rules.selectPolicy == .disabled ? "scaling up is disabled" : "limited by the scale-up policies to \(limit)")
            }
        } else if desired < current {
            let rules = spec.behavior.scaleDown
            var limit = rules.selectPolicy == .min ? Int.min : Int.max
            for policy in rules.policies {
                let removed = scaleDownEvents.filter { $0.time > now - policy.period }.reduce(0) { $0 + $1.change }
                let start = current + removed
                let proposed = switch policy.kind {
                case .pods(let value): start - value
                case .percent(let value): Int(Double(start) * (1 - Double(value) / 100))
                }
                limit = rules.selectPolicy == .min ? max(limit, proposed) : min(limit, proposed)
            }
            if rules.selectPolicy == .disabled { limit = current }
            limit = min(limit, current)
            if desired < limit {
                return (limit, rules.selectPolicy == .disabled ? "scaling down is disabled" : "limited by the scale-down policies to \(limit)")
            }
        }
        return (desired, nil)
    }

    private mutating func record(from current: Int, to desired: Int, at now: Duration) {
        if desired > current { scaleUpEvents.append((now, desired - current)) }
        if desired < current { scaleDownEvents.append((now, current - desired)) }
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }
}
