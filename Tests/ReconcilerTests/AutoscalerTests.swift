import Testing
@testable import Reconciler

private func cpu(_ values: Double?...) -> [MetricSample] { cpu(values) }
private func cpu(_ values: [Double?]) -> [MetricSample] { [MetricSample(.cpuUtilization, values: values)] }

private func autoscaler(min: Int = 1, max: Int = 10, _ metrics: [AutoscalerMetric] = [.cpu(percent: 50)],
                        behavior: ScalingBehavior = .kubernetesDefault) -> HorizontalAutoscaler {
    HorizontalAutoscaler(spec: AutoscalerSpec(minReplicas: min, maxReplicas: max, metrics: metrics, behavior: behavior))
}

@Suite struct AutoscalerTests {
    @Test func replicasFollowTheRatioOfMetricToTarget() {
        var hpa = autoscaler()
        #expect(hpa.decide(currentReplicas: 4, samples: cpu(100, 100, 100, 100), now: .zero).desiredReplicas == 8)
        var calm = autoscaler()
        let within = calm.decide(currentReplicas: 4, samples: cpu(53, 52, 55, 50), now: .zero)
        #expect(within.desiredReplicas == 4 && within.reason.contains("within tolerance"))
        var below = autoscaler()
        #expect(below.decide(currentReplicas: 4, samples: cpu(44, 44, 44, 44), now: .zero).desiredReplicas == 4)
        #expect(below.decide(currentReplicas: 4, samples: cpu(40, 40, 40, 40), now: .seconds(15)).desiredReplicas == 4)
    }

    @Test func theBoundThatDecidesIsTheOneNamed() {
        var hpa = autoscaler(max: 4)
        // 2 → 6 asked at 150 % of the target; the range allows 4.
        let first = hpa.decide(currentReplicas: 2, samples: cpu(150, 150), now: .zero)
        #expect(first.desiredReplicas == 4 && first.reason.contains("limited by maxReplicas"), "\(first.reason)")
        // At 4, 6 asked; the rate would allow 6 from the period's start, the range still 4.
        let next = hpa.decide(currentReplicas: 4, samples: cpu(150, 150, 150, 150), now: .seconds(1))
        #expect(next.desiredReplicas == 4)
        #expect(next.reason.contains("limited by maxReplicas"), "\(next.reason)")
    }

    @Test func scalingUpIsLimitedByThePolicies() {
        var hpa = autoscaler(max: 20)
        // 100 % gives 2, 4 pods give 5: the larger wins.
        let first = hpa.decide(currentReplicas: 1, samples: cpu(500), now: .zero)
        #expect(first.desiredReplicas == 5 && first.metricReplicas == 10)
        #expect(first.reason.contains("scale-up policies"))
        // Within the same 15 s the period still starts at 1 replica.
        #expect(hpa.decide(currentReplicas: 5, samples: cpu(500, 500, 500, 500, 500), now: .seconds(5)).desiredReplicas == 5)
        // A new period starts at 5: 100 % gives 10.
        #expect(hpa.decide(currentReplicas: 5, samples: cpu(500, 500, 500, 500, 500), now: .seconds(16)).desiredReplicas == 10)
    }

    @Test func scalingDownWaitsForTheStabilisationWindow() {
        var hpa = autoscaler()
        #expect(hpa.decide(currentReplicas: 4, samples: cpu(100, 100, 100, 100), now: .zero).desiredReplicas == 8)
        for second in stride(from: 15, through: 285, by: 15) {
            let decision = hpa.decide(currentReplicas: 8, samples: cpu(25, 25, 25, 25, 25, 25, 25, 25), now: .seconds(second))
            #expect(decision.desiredReplicas == 8, "at \(second) s")
            #expect(decision.metricReplicas == 4)
        }
        #expect(hpa.decide(currentReplicas: 8, samples: cpu(25, 25, 25, 25, 25, 25, 25, 25), now: .seconds(300)).desiredReplicas == 4)
    }

    @Test func briefSpikesAndDipsDoNotFlap() {
        var hpa = autoscaler()
        var replicas = 4
        var history: [Int] = []
        for (index, load) in [50.0, 100, 20, 100, 20, 60, 20].enumerated() {
            replicas = hpa.decide(currentReplicas: replicas, samples: cpu(Array(repeating: load, count: replicas)), now: .seconds(15 * index)).desiredReplicas
            history.append(replicas)
        }
        // Up at the first spike, then held: never down and up again.
        #expect(history == [4, 8, 8, 10, 10, 10, 10])
    }

    @Test func boundsAreKept() {
        var capped = autoscaler(max: 5)
        let decision = capped.decide(currentReplicas: 4, samples: cpu(100, 100, 100, 100), now: .zero)
        #expect(decision.desiredReplicas == 5 && decision.reason.contains("maxReplicas"))
        var floor = autoscaler(min: 3)
        #expect(floor.decide(currentReplicas: 4, samples: cpu(1, 1, 1, 1), now: .zero).desiredReplicas == 3)
        var below = autoscaler(min: 3)
        #expect(below.decide(currentReplicas: 1, samples: cpu(1), now: .zero).reason == "below minReplicas")
        var off = autoscaler()
        #expect(off.decide(currentReplicas: 0, samples: cpu(), now: .zero).desiredReplicas == 0)
    }

    @Test func replicasWithoutValuesDampenTheChange() {
        var a = autoscaler()
        // Scaling up counts them as idle: 200 over 4 replicas is on target.
        #expect(a.decide(currentReplicas: 4, samples: cpu(100, 100, nil, nil), now: .zero).desiredReplicas == 4)
        var b = autoscaler()
        #expect(b.decide(currentReplicas: 4, samples: cpu(150, 150, nil, nil), now: .zero).desiredReplicas == 6)
        // Scaling down counts them at the target.
        var c = autoscaler()
        #expect(c.decide(currentReplicas: 4, samples: cpu(10, 10, nil, nil), now: .zero).desiredReplicas == 3)
        var d = autoscaler()
        let none = d.decide(currentReplicas: 4, samples: cpu(nil, nil, nil, nil), now: .zero)
        #expect(none.desiredReplicas == 4 && none.reason.contains("no metric"))
    }

    @Test func theLargestProposalOfSeveralMetricsWins() {
        var hpa = autoscaler([.cpu(percent: 50), .memory(percent: 50)])
        let samples = cpu(100, 100, 100, 100) + [MetricSample(.memoryUtilization, values: [25, 25, 25, 25])]
        #expect(hpa.decide(currentReplicas: 4, samples: samples, now: .zero).desiredReplicas == 8)
        var memory = autoscaler([.cpu(percent: 50), .memory(percent: 50)])
        let moreMemory = cpu(50, 50) + [MetricSample(.memoryUtilization, values: [150, 150])]
        #expect(memory.decide(currentReplicas: 2, samples: moreMemory, now: .zero).desiredReplicas == 6)
    }

    @Test func customMetricsAverageOverReplicas() {
        var hpa = autoscaler([.custom("queue_length", averageValue: 5)])
        let decision = hpa.decide(currentReplicas: 2, samples: [MetricSample(.custom("queue_length"), values: [30, 10])], now: .zero)
        #expect(decision.metricReplicas == 8)
        #expect(decision.desiredReplicas == 6)
        #expect(decision.reason.hasPrefix("queue_length 20 against a target of 5"))
    }

    @Test func aDisabledDirectionDoesNotMove() {
        var behavior = ScalingBehavior.kubernetesDefault
        behavior.scaleDown = ScalingRules(stabilizationWindow: .zero, selectPolicy: .disabled, policies: [])
        var hpa = autoscaler(behavior: behavior)
        let decision = hpa.decide(currentReplicas: 4, samples: cpu(5, 5, 5, 5), now: .zero)
        #expect(decision.desiredReplicas == 4 && decision.reason.contains("scaling down is disabled"))
        #expect(hpa.decide(currentReplicas: 4, samples: cpu(100, 100, 100, 100), now: .seconds(15)).desiredReplicas == 8)
        // A minimum policy picks the smaller step.
        var slow = ScalingBehavior.kubernetesDefault
        slow.scaleUp.selectPolicy = .min
        var careful = autoscaler(max: 50, behavior: slow)
        #expect(careful.decide(currentReplicas: 10, samples: cpu(Array(repeating: 200.0, count: 10)), now: .zero).desiredReplicas == 14)
    }

    @Test(arguments: [
        (AutoscalerSpec(minReplicas: 0, maxReplicas: 3, metrics: [.cpu(percent: 50)]), "minReplicas is 0"),
        (AutoscalerSpec(minReplicas: 4, maxReplicas: 3, metrics: [.cpu(percent: 50)]), "maxReplicas 3 is below minReplicas 4"),
        (AutoscalerSpec(maxReplicas: 3, metrics: []), "metrics is empty"),
        (AutoscalerSpec(maxReplicas: 3, metrics: [.cpu(percent: 0)]), "the target of metric cpu"),
        (AutoscalerSpec(maxReplicas: 3, metrics: [.cpu(percent: 50)], tolerance: 1.5), "tolerance 1.5"),
        (AutoscalerSpec(maxReplicas: 3, metrics: [.cpu(percent: 50)], behavior: ScalingBehavior(
            scaleDown: ScalingRules(stabilizationWindow: .seconds(7200), policies: [ScalingPolicy(.pods(1), per: .seconds(60))]))),
         "scaleDown.stabilizationWindow"),
        (AutoscalerSpec(maxReplicas: 3, metrics: [.cpu(percent: 50)], behavior: ScalingBehavior(
            scaleUp: ScalingRules(stabilizationWindow: .zero, policies: [ScalingPolicy(.percent(0), per: .seconds(60))]))),
         "scaleUp policy value 0"),
    ])
    func invalidSpecsNameTheField(spec: AutoscalerSpec, message: String) {
        #expect { try spec.validate(name: "web") } throws: { error in
            guard let error = error as? ReconcilerError else { return false }
            return error.code == .invalidSpec && error.message.hasPrefix("autoscaler web: ") && error.message.contains(message)
        }
        #expect(throws: Never.self) { try AutoscalerSpec(maxReplicas: 3, metrics: [.cpu(percent: 50)]).validate(name: "web") }
    }
}
