import Foundation
import GantryTestSupport
import MetricsTestKit
import Reconciler
import Runtime
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
            // Floating-point counters reach factories that lack them in whole units: burn past a second.
            try await Task.sleep(for: .milliseconds(1500))
            try sampler.sample()
            let dimensions = [("service", "burner"), ("container", "burner-1")]
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
}
