import Foundation
import GantryTestSupport
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// What careless and hostile specs used to break: numbers that trapped,
/// contradictions that were silently resolved, mounts that hid each other,
/// and ended containers that kept their published ports.
@Suite struct HardeningTests {
    @Test func cpuQuotasOfAnyDoubleNeitherTrapNorPass() throws {
        for cpus in [Double.nan, .infinity, -.infinity, -1, 0, 1e300, Double.greatestFiniteMagnitude] {
            let (quota, period) = ResourceLimits.quota(cpus: cpus)
            let limits = ResourceLimits(cpuQuota: quota, cpuPeriod: period)
            #expect(throws: RuntimeError.self, "--cpus \(cpus)") { try limits.validate() }
        }
        #expect(ResourceLimits.quota(cpus: 0.5) == (50_000, 100_000))
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        let tooMany = ResourceLimits.quota(cpus: Double(online) + 1)
        let error = try #require(throws: RuntimeError.self) { try ResourceLimits(cpuQuota: tooMany.quota, cpuPeriod: tooMany.period).validate() }
        #expect(error.description.contains("\(online) CPUs of this host"))
        try ResourceLimits(cpuQuota: Int64(online) * 100_000, cpuPeriod: 100_000).validate()
        for bytes: Int64 in [Int64.max, (1 << 62) + 1] {
            #expect(throws: RuntimeError.self) { try ResourceLimits(memory: bytes).validate() }
        }
    }

    @Test func mountsAreMadeParentsFirstAndBadTargetsAreRefused() throws {
        let ordered = try ContainerRuntime.orderedMounts([
            .tmpfs(target: "/data/cache"), .volume(name: "v", target: "/data/"), .tmpfs(target: "/a/b/c"), .tmpfs(target: "/z"),
        ])
        #expect(ordered.map(\.target) == ["/data/", "/z", "/data/cache", "/a/b/c"])
        let refused: [([ContainerSpec.Mount], String)] = [
            ([.bind(source: "/tmp", target: "/")], "on /"),
            ([.bind(source: "/tmp", target: "/./")], "on /"),
            ([.tmpfs(target: "/proc")], "in /proc"),
            ([.tmpfs(target: "/proc/sys/kernel")], "in /proc"),
            ([.tmpfs(target: "/data"), .volume(name: "v", target: "/data/")], "two mounts have the target /data"),
            ([.tmpfs(target: "relative")], "absolute"),
            ([.tmpfs(target: "/a/../etc")], "absolute"),
        ]
        for (mounts, message) in refused {
            let error = try #require(throws: RuntimeError.self) { try ContainerRuntime.orderedMounts(mounts) }
            #expect(error.description.contains(message), "\(error)")
        }
        _ = try ContainerRuntime.orderedMounts([.bind(source: "/proc/uptime", target: "/proc/uptime")])
    }
}

@Suite(.requiresRoot) struct HardeningRuntimeTests {
    @Test func specsAUserGotWrongAreRefusedNamingTheValueAndLeaveNothing() async throws {
        try await withRuntime("bad-specs") { runtime, dir in
            let refused: [(ContainerSpec, String)] = [
                (shell("true").resources(cpus: .nan), "below the kernel's minimum"),
                (shell("true").resources(cpus: .infinity), "below the kernel's minimum"),
                (shell("true").resources(cpus: 1e300), "more than the"),
                (shell("true").resources(memory: Int64.max), "more than any host has"),
                (shell("true").timeout(.zero), "timeout"),
                (shell("true").mounting(.bind(source: dir, target: "/")), "root file system"),
                (shell("true").mounting(.tmpfs(target: "/proc")), "/proc"),
                ({ var spec = shell("true"); spec.hostname = String(repeating: "h", count: 65); return spec }(), "host name"),
                ({ var spec = shell("true"); spec.hostname = "a/b"; return spec }(), "host name"),
                (shell("true").network(.bridge(Networks.defaultName)).publishing(PublishedPort(hostIP: IPv4Address("192.0.2.1"), hostPort: 18096, containerPort: 80)),
                 "not an address of this host"),
            ]
            for (spec, message) in refused {
                let error = try await #require(throws: RuntimeError.self) { try await runtime.create(spec) }
                #expect(error.description.contains(message), "\(error)")
            }
            #expect(try runtime.list().isEmpty)
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/state/containers/names")
            #expect(names.isEmpty, "names left: \(names)")
        }
    }

    @Test func publishingAPortPutsAContainerOnTheDefaultNetworkAsTheCommandLineDoes() async throws {
        try await withRuntime("publish-default") { runtime, _ in
            let port = try #require(Networks.freeHostPort(.tcp))
            let spec = shell("exec sleep 600").publishing(PublishedPort(hostPort: port, containerPort: 80))
            #expect(spec.network == .bridge(Networks.defaultName))
            let container = try await runtime.create(spec)
            try await container.start()
            #expect(try container.record.network?.network == Networks.defaultName)
            #expect(try container.record.network?.ports.first?.hostPort == port)
            try await container.remove(force: true)
            // A network chosen before or after is kept.
            #expect(shell("true").network(.host).publishing(PublishedPort(containerPort: 80)).network == .host)
            #expect(shell("true").publishing(PublishedPort(containerPort: 80)).network(.bridge("lan")).network == .bridge("lan"))
        }
    }

    @Test func aFirstProcessWithoutAHandlerIsKilledAtOnceNotAfterTheGracePeriod() async throws {
        try await withRuntime("stop-unhandled") { runtime, _ in
            // busybox sleep as PID 1: SIGTERM would be dropped by the kernel.
            let sleeper = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "600"]))
            try await sleeper.start()
            let pid = try #require(try sleeper.record.pid)
            let started = ContinuousClock.now
            let stopping = Task { try await sleeper.stop(grace: .seconds(300)) }
            // The process itself is watched, not the report of its end,
            // which a busy machine may deliver later.
            while kill(pid, 0) == 0, ContinuousClock.now - started < .seconds(120) { try await Task.sleep(for: .milliseconds(20)) }
            #expect(kill(pid, 0) != 0 && ContinuousClock.now - started < .seconds(120), "the grace period was waited out")
            let exit = try #require(try await stopping.value)
            #expect(exit.status == .signaled(.kill))
            try await sleeper.remove()
            // One that handles it still gets it, and ends its own way.
            let handler = try await runtime.create(shell("trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done"))
            try await handler.start()
            try await waitForOutput(handler, "ready")
            #expect(try await handler.stop(grace: .seconds(60))?.status == .exited(3))
            try await handler.remove()
        }
    }

    @Test func collectedOutputIsBoundedForContainersAndExecsAlike() async throws {
        try await withRuntime("bounded-output") { runtime, _ in
            let error = await #expect(throws: RuntimeError.self) {
                _ = try await runtime.run(shell("yes | head -c 300000")) { try await $0.output.text(maximumBytes: 100_000) }
            }
            #expect(error?.description.contains("longer than 100000 bytes") == true, "\(String(describing: error))")
            let (text, _) = try await runtime.run(shell("exec sleep 600")) { container in
                let process = try await container.exec(ExecSpec(["sh", "-c", "echo from exec"]))
                let text = try await process.output.text()
                _ = await process.wait()
                try container.kill(.kill)
                return text
            }
            #expect(text == "from exec\n")
        }
    }

    @Test func aTmpfsInsideAVolumeIsMountedOnTheVolumeWhateverTheOrder() async throws {
        try await withRuntime("mount-order") { runtime, _ in
            let spec = shell("grep -E ' /data(/cache)? ' /proc/mounts | cut -d' ' -f2,3; echo kept > /data/file")
                .mounting(.tmpfs(target: "/data/cache"), .volume(name: "ordered", target: "/data"))
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.code == 0)
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.contains("/data/cache tmpfs"), "the tmpfs is hidden: \(output)")
            #expect(lines.first?.hasPrefix("/data ") == true, "\(output)")
            let (_, kept) = try await runCollecting(runtime, shell("cat /data/file").mounting(.volume(name: "ordered", target: "/data")))
            #expect(kept == "kept\n")
            try await runtime.volumes.remove("ordered")
        }
    }

    @Test func anEndedContainerGivesUpItsAddressAndPublishedPorts() async throws {
        try await withRuntime("ports-at-stop") { runtime, _ in
            let port = try #require(Networks.freeHostPort(.tcp))
            let spec = shell("exec sleep 600").network(.bridge(Networks.defaultName)).publishing(PublishedPort(hostPort: port, containerPort: 80))
            let first = try await runtime.create(spec)
            try await first.start()
            let address = try #require(try first.record.network?.address)
            try first.kill(.kill)
            _ = try await first.wait()
            // Stopped, it holds nothing on the network: no claim, rule, veth or lease.
            #expect(try first.status == .stopped)
            #expect(try first.record.network == nil)
            try expectNothingLeft(runtime, containers: [first.id])
            #expect(!runtime.networks.leases(Networks.defaultName).contains { $0.address == address })
            // So a replacement takes the same host port at once.
            let second = try await runtime.create(spec)
            try await second.start()
            #expect(try second.record.network?.ports.first?.hostPort == port)
            // The stopped one is still there to inspect, and removes cleanly.
            try await first.remove()
            try await second.remove(force: true)
            try expectNothingLeft(runtime, containers: [first.id, second.id])
        }
    }

    @Test func firewallChangesWorkWithThousandsOfDescriptorsOpen() async throws {
        // A busy server holds many descriptors; libnftables selects on its
        // socket, and a number past 1023 there aborted the process.
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0 ..< 1100 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            held.append(fd)
        }
        #expect((held.max() ?? 0) >= 1024)
        try await withRuntime("many-fds") { runtime, _ in
            let spec = shell("exec sleep 600").network(.bridge(Networks.defaultName)).publishing(PublishedPort(containerPort: 80))
            let container = try await runtime.create(spec)
            try await container.start()
            #expect(try container.record.network?.ports.first?.hostPort ?? 0 > 0)
            try await container.remove(force: true)
            try expectNothingLeft(runtime, containers: [container.id])
        }
    }
}
