import Foundation
import GantryTestSupport
import MetricsTestKit
import Reconciler
import Runtime
import Scheduler
import Testing
@testable import Observability

/// A container labelled as a replica of `service`, running `script`.
private func replica(_ service: String, _ name: String, _ script: String) -> ContainerSpec {
    var spec = ContainerSpec(image: "busybox:test", command: ["sh", "-c", script]).named(name)
    spec.labels = [ReplicaLabel.project: ServiceSpec.defaultProject, ReplicaLabel.service: service]
    spec.stopGracePeriod = .milliseconds(200)
    return spec
}

@Suite(.requiresRoot, .serialized) struct ObservabilityTests {
    @Test func containerMetricsFollowTheCgroups() async throws {
        try await withBusyboxRuntime("obs-metrics", applets: ["yes", "head"]) { runtime, _ in
            let metrics = TestMetrics()
            let sampler = ContainerMetrics(runtime: runtime, metricsFactory: metrics)
            var spec = replica("burner", "burner-1", "yes > /dev/null")
            spec = spec.resources(memory: 64 << 20, pids: 32)
            let container = try await runtime.create(spec)
            try await container.start()
            try await Task.sleep(for: .milliseconds(300))
            #expect(try sampler.sample() == 1)
            // Floating-point counters reach factories that lack them in whole
            // units: burn past a second of CPU time (however long a busy or
            // emulated machine takes to give it).
            let dimensions = [("service", "burner"), ("container", "burner-1")]
            for _ in 0 ..< 100 {
                try await Task.sleep(for: .milliseconds(200))
                try sampler.sample()
                if try metrics.expectCounter("gantry_container_cpu_seconds_total", dimensions).totalValue >= 1 { break }
            }
            let memory = try metrics.expectGauge("gantry_container_memory_bytes", dimensions)
            #expect((memory.lastValue ?? 0) > 0)
            #expect(try metrics.expectGauge("gantry_container_memory_limit_bytes", dimensions).lastValue == Double(64 << 20))
            #expect((try metrics.expectGauge("gantry_container_pids", dimensions).lastValue ?? 0) >= 1)
            let cpu = try metrics.expectCounter("gantry_container_cpu_seconds_total", dimensions)
            #expect(cpu.totalValue >= 1)
            _ = try await container.stop()
            try await container.remove()
            // A container that is gone has no series left.
            #expect(try sampler.sample() == 0)
            #expect(throws: (any Error).self) { try metrics.expectGauge("gantry_container_memory_bytes", dimensions) }
        }
    }

    @Test func serviceLogsInterleaveReplicas() async throws {
        try await withBusyboxRuntime("obs-logs") { runtime, _ in
            let first = try await runtime.create(replica("chat", "chat-a", "echo a1; sleep 0.2; echo a2; exec sleep 600"))
            try await first.start()
            try await Task.sleep(for: .milliseconds(100))
            let second = try await runtime.create(replica("chat", "chat-b", "echo b1; sleep 0.2; echo b2 >&2; exec sleep 600"))
            try await second.start()
            let logs = ServiceLogs(runtime: runtime, service: "chat")
            var lines: [ServiceLogLine] = []
            for _ in 0 ..< 200 {
                lines = try await logs.lines()
                if lines.count == 4 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            // Ordered by time across replicas (how they interleave depends on the machine's load), in order within each.
            #expect(lines.filter { $0.container == "chat-a" }.map(\.text) == ["a1", "a2"])
            #expect(lines.filter { $0.container == "chat-b" }.map(\.text) == ["b1", "b2"])
            #expect(lines.first { $0.text == "b2" }?.stream == .stderr)
            #expect(lines.map(\.time) == lines.map(\.time).sorted())

            // Following picks up replicas that start later.
            let followed = Task {
                var seen: [String] = []
                for try await line in logs.follow(interval: .milliseconds(50)) {
                    seen.append(line.container + ":" + line.text)
                    if line.text == "c1" { break }
                }
                return seen
            }
            try await Task.sleep(for: .milliseconds(200))
            let third = try await runtime.create(replica("chat", "chat-c", "echo c1; exec sleep 600"))
            try await third.start()
            let seen = try await followed.value
            #expect(seen.prefix(4).sorted() == ["chat-a:a1", "chat-a:a2", "chat-b:b1", "chat-b:b2"])
            #expect(seen.last == "chat-c:c1")
            for container in [first, second, third] { try await container.remove(force: true) }
        }
    }

    @Test func aCPUBurningServiceScalesUpAndBackDown() async throws {
        try await withBusyboxRuntime("obs-autoscale") { runtime, dir in
            // The replicas burn CPU while the control file exists, and idle otherwise.
            let control = dir + "/control"
            try FileManager.default.createDirectory(atPath: control, withIntermediateDirectories: true)
            try write("", to: control + "/burn")
            // Idle is a read of a pipe nobody writes, which times out: no
            // process is started, which would cost much under emulation.
            #expect(mkfifo(control + "/idle", 0o666) == 0)
            var template = ContainerSpec(image: "busybox:test", command: ["sh", "-c", "while :; do [ -e /control/burn ] || read -t 1 _ <> /control/idle; done"])
            template.mounts = [.bind(source: control, target: "/control", readOnly: true)]
            template.resources.cpuShares = 256  // a request of a quarter of a CPU
            template.stopGracePeriod = .milliseconds(200)
            let service = ServiceSpec(name: "burner", replicas: 1, template: template)
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(
                autoscaleInterval: .milliseconds(500), metricSource: CgroupMetricSource(runtime: runtime)))
            let events = reconciler.events()
            let collected = Task {
                var scalings: [(Int, Int)] = []
                for await event in events {
                    if case .autoscaled(let from, let to) = event.kind { scalings.append((from, to)) }
                }
                return scalings
            }
            defer { collected.cancel() }
            try await reconciler.withRunning { reconciler in
                try reconciler.apply(service)
                try await reconciler.waitForRollout("burner")
                // While the replicas burn, a reading taken while the machine
                // is busy elsewhere must not scale down: the window is long.
                var behavior = ScalingBehavior.kubernetesDefault
                behavior.scaleDown.stabilizationWindow = .seconds(120)
                try reconciler.setAutoscaler(AutoscalerSpec(minReplicas: 1, maxReplicas: 3, metrics: [.cpu(percent: 50)], behavior: behavior),
                                             service: "burner")
                try await reconciler.waitUntil("burner", timeout: .seconds(60)) { record, replicas in
                    record?.spec.replicas == 3 && replicas.filter { $0.exit == nil && !$0.terminating }.count == 3
                }
                let busy = try #require(try reconciler.store.autoscaler("burner"))
                #expect((busy.status.metrics["cpu"] ?? 0) > 50, "status: \(busy.status)")

                try FileManager.default.removeItem(atPath: control + "/burn")
                behavior.scaleDown.stabilizationWindow = .seconds(1)
                try reconciler.setAutoscaler(AutoscalerSpec(minReplicas: 1, maxReplicas: 3, metrics: [.cpu(percent: 50)], behavior: behavior),
                                             service: "burner")
                try await reconciler.waitUntil("burner", timeout: .seconds(60)) { record, replicas in
                    record?.spec.replicas == 1 && replicas.filter { $0.exit == nil && !$0.terminating }.count == 1
                }
                let idle = try #require(try reconciler.store.autoscaler("burner"))
                #expect(idle.status.desiredReplicas == 1 && idle.status.lastScaleTime != nil, "status: \(idle.status)")
                #expect((idle.status.metrics["cpu"] ?? 100) < 50, "status: \(idle.status)")
            }
            collected.cancel()
            let scalings = await collected.value
            // Up to the maximum, then down to the minimum, each in one step or
            // more: how many replicas one reading asks for depends on the CPU
            // the replica got, which a busy machine shares out.
            let ups = scalings.prefix { $0.1 > $0.0 }
            #expect(!ups.isEmpty && ups.first?.0 == 1 && ups.last?.1 == 3, "\(scalings)")
            let downs = scalings.dropFirst(ups.count)
            #expect(!downs.isEmpty && downs.allSatisfy { $0.1 < $0.0 } && downs.last?.1 == 1, "\(scalings)")
        }
    }
}
