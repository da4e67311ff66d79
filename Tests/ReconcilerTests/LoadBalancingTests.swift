import Foundation
import GantryTestSupport
@testable import Runtime
import Synchronization
import Testing
@testable import Reconciler

/// A service's load-balanced endpoint with real replicas: one published
/// port and one name in front of the ready replicas, kept whole while
/// replicas die, scale and roll.
@Suite(.requiresRoot, .serialized) struct LoadBalancingTests {
    /// A web server answering with its container's host name.
    static let server = "mkdir -p /www && cat /proc/sys/kernel/hostname > /www/index.html && exec httpd -f -p 80 -h /www"

    /// The body of a response, nil when it is not a whole 200.
    static func body(_ response: String?) -> String? {
        guard let response, response.hasPrefix("HTTP/1.") && response.contains(" 200 ") else { return nil }
        return response.components(separatedBy: "\r\n\r\n").last?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The body of one request to 127.0.0.1:port, nil when it failed.
    static func fetch(_ port: UInt16) async -> String? { body(await onOwnThread { httpGetBlocking(port: port) }) }

    /// Requests one after another until stopped, on a thread of its own
    /// (its calls block), counting what failed and when.
    final class ClientLoop: Sendable {
        private let counts = Mutex((succeeded: 0, failed: 0, failures: [ContinuousClock.Instant]()))
        private let stopped = Atomic(false)
        private let finished = DispatchSemaphore(value: 0)

        init(port: UInt16) {
            let thread = Thread { [self] in
                while !stopped.load(ordering: .relaxed) {
                    let began = ContinuousClock.now
                    let ok = LoadBalancingTests.body(httpGetBlocking(port: port)) != nil
                    counts.withLock { counts in
                        if ok {
                            counts.succeeded += 1
                        } else {
                            counts.failed += 1
                            counts.failures.append(began)
                        }
                    }
                    // Steady, not flat out: each request forks a server
                    // process, and the other tests share the machine.
                    usleep(2000)
                }
                finished.signal()
            }
            thread.start()
        }

        /// What succeeded and failed, and when each failed request began.
        func stop() async -> (succeeded: Int, failed: Int, failures: [ContinuousClock.Instant]) {
            stopped.store(true, ordering: .relaxed)
            await onOwnThread { [finished] in finished.wait() }
            return counts.withLock { $0 }
        }
    }

    @Test func aReconcilerThatAdoptsTheReplicasKeepsTheEndpointServingAndAReplicaReachesItsOwnService() async throws {
        try await withBusyboxRuntime("balance-adopt", applets: reconcilerApplets + ["httpd", "cat", "wget", "timeout"]) { runtime, _ in
            var spec = shellService("web", replicas: 2, Self.server)
            spec.template = spec.template.network(.bridge(Networks.defaultName))
                .publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80))
            // Slow to pass after a start: what the endpoint serves must not wait for it.
            spec.probes.readiness = Probe(.httpGet(path: "/", port: 80, host: nil), initialDelay: .seconds(3), period: .seconds(3))
            let first = try Reconciler(runtime: runtime, options: Reconciler.Options(onShutdown: .leaveRunning))
            let port = try await first.withRunning { [spec] reconciler -> UInt16 in
                try reconciler.apply(spec)
                try await reconciler.waitUntil("web", timeout: .seconds(30)) { record, _ in record?.status.readyReplicas == 2 }
                return try #require(try reconciler.store.service("web").status.publishedPorts?.first?.hostPort)
            }
            #expect(try runtime.endpoints().first?.backends.count == 2)
            // The next reconciler adopts the replicas the endpoint serves, without waiting for their probes.
            let second = try Reconciler(runtime: runtime)
            try await second.withRunning { reconciler in
                for _ in 0 ..< 10 {
                    #expect(try runtime.endpoints().first?.backends.count == 2)
                    #expect(await Self.fetch(port) != nil)
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(try reconciler.store.service("web").status.readyReplicas == 2)
                // A replica reaches its own service through the virtual
                // address, itself among the backends (the bridge's hairpin).
                let replica = try #require(try runningReplicas(runtime, service: "web").first)
                let process = try await runtime.container(replica.id).exec(ExecSpec(["sh", "-c", """
                    for i in $(seq 20); do timeout 3 wget -qO- http://web/ > /dev/null || exit 1; done; echo reached
                    """]))
                var output = ""
                for try await chunk in process.output { output += chunk.text }
                #expect(output == "reached\n", "\(output)")
                try reconciler.delete("web")
                try await reconciler.waitUntil("web") { record, replicas in record == nil && replicas.isEmpty }
            }
            #expect(try runtime.endpoints().isEmpty)
        }
    }

    @Test func aServicePortSpreadsOverReadyReplicasAndFailsNoRequestWhileReplicasChange() async throws {
        try await withReconciler("balance") { reconciler, runtime in
            // Port 0: the endpoint claims a free one (a port the kernel calls
            // free may be another test's published port).
            var spec = shellService("web", replicas: 3, Self.server)
            spec.template = spec.template.network(.bridge(Networks.defaultName))
                .publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80))
            spec.probes.readiness = Probe(.httpGet(path: "/", port: 80, host: nil), period: .milliseconds(100))
            try reconciler.apply(spec)
            let record = try await reconciler.waitForRollout("web")
            let published = try #require(record.status.publishedPorts?.first)
            #expect(published.hostIP == IPv4Address("127.0.0.1") && published.containerPort == 80 && published.hostPort != 0)
            let port = published.hostPort
            let virtual = try #require(record.status.virtualAddress)
            // The replicas publish nothing themselves.
            #expect(try runningReplicas(runtime, service: "web").allSatisfy { $0.network?.ports.isEmpty == true })
            try await reconciler.waitUntil("web") { record, _ in record?.status.readyReplicas == 3 }

            // Every replica answers through the one port.
            var seen: Set<String> = []
            for _ in 0 ..< 60 { if let body = await Self.fetch(port) { seen.insert(body) } }
            let hostnames = Set(try runningReplicas(runtime, service: "web").map { try runtime.container($0.id).record.spec.hostname ?? String($0.id.prefix(12)) })
            #expect(seen.count == 3, "answers came from \(seen)")
            #expect(seen == hostnames, "\(seen) against \(hostnames)")

            // Another container reaches the service by its name, which is the virtual address.
            let (output, exit) = try await runtime.run(ContainerSpec(image: "busybox:test", command: ["sh", "-c", """
                for i in $(seq 20); do wget -qO- http://web/ || exit 1; done; nslookup web
                """]).network(.bridge(Networks.defaultName))) { try await $0.output.text() }
            #expect(exit.status == .exited(0), "\(output)")
            #expect(Set(output.split(separator: "\n").filter { seen.contains(String($0)) }).count >= 2, "\(output)")
            #expect(output.contains("Address: \(virtual)"), "\(output)")

            // Under a steady client: a killed replica loses only what reached
            // it before its end was seen (its requests in flight, and new
            // connections in the milliseconds until the endpoint leaves it).
            @Sendable func readyCount(_ replicas: [Reconciler.ReplicaInfo]) -> Int { replicas.filter { $0.ready && !$0.terminating && $0.exit == nil }.count }
            var client = ClientLoop(port: port)
            try await Task.sleep(for: .milliseconds(200))
            let victim = try #require(try runningReplicas(runtime, service: "web").first)
            let killed = ContinuousClock.now
            try runtime.container(victim.id).kill(.kill)
            try await reconciler.waitUntil("web") { _, replicas in
                readyCount(replicas) == 3 && !replicas.contains { $0.id == victim.id }
            }
            let healed = ContinuousClock.now
            try await Task.sleep(for: .milliseconds(300))
            var counts = await client.stop()
            // Failures are those of the victim: begun at most a moment before
            // the kill (in flight), and before its replacement was in.
            let late = counts.failures.filter { $0 > healed || killed - $0 > .milliseconds(50) }
            #expect(late.isEmpty,
                    "\(counts.failed) of \(counts.succeeded + counts.failed) requests failed, the first at \(counts.failures.prefix(5).map { $0 - killed }) from the kill")

            // A scale to five and back, and a rolling update: no request fails.
            client = ClientLoop(port: port)
            let scaled = ContinuousClock.now
            try reconciler.scale("web", replicas: 5)
            try await reconciler.waitUntil("web") { _, replicas in readyCount(replicas) == 5 }
            try reconciler.scale("web", replicas: 3)
            try await reconciler.waitUntil("web") { _, replicas in readyCount(replicas) == 3 && replicas.count == 3 }
            spec.template.environment = ["REVISION=2"]
            let updated = ContinuousClock.now
            try reconciler.apply(spec)
            try await reconciler.waitUntil("web") { record, replicas in
                record?.revision == 2 && replicas.count == 3 && replicas.allSatisfy { $0.current && $0.ready && !$0.terminating }
            }
            counts = await client.stop()
            #expect(counts.succeeded > 50, "only \(counts.succeeded) requests were made")
            #expect(counts.failed == 0, "\(counts.failed) of \(counts.succeeded + counts.failed) requests failed, the first at \(counts.failures.prefix(5).map { $0 - scaled }) from the scale, \(updated - scaled) to the update")

            try reconciler.delete("web")
            try await reconciler.waitUntil("web") { record, replicas in record == nil && replicas.isEmpty }
            #expect(try runtime.endpoints().isEmpty)
            #expect(await httpGet(port: port, attempts: 1) == nil)
        }
    }
}
