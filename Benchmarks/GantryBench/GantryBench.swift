import ArgumentParser
import Foundation
import OCIImage
import Runtime

/// In-process benchmarks of the container runtime. Each subcommand prints
/// its measurements and ends with a `name: value unit` line.
@main
struct GantryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gantry-bench",
        abstract: "Measure how fast Gantry starts, heals and places containers and how little it keeps per container.",
        subcommands: [Start.self, Burst.self, Memory.self, Port.self, Heal.self, Converge.self, Balance.self, SchedulerBenchmark.self, TestingBench.self])
}

/// Where the benchmarks run: a state root holding a busybox image.
struct BenchOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A busybox root file system to import as the image.", valueName: "dir"))
    var rootfs: String

    @Option(help: ArgumentHelp("The state root (made and removed by the benchmark when not given).", valueName: "dir"))
    var root: String?

    @Option(help: "The cgroup parent for the benchmark's containers.")
    var cgroupParent = "gantry-bench"

    /// Opens a runtime with the image `busybox:bench` and runs `body`.
    func withRuntime<T>(_ body: (ContainerRuntime) async throws -> T) async throws -> T {
        let path = root ?? NSTemporaryDirectory() + "gantry-bench-\(getpid())"
        defer { if root == nil { try? FileManager.default.removeItem(atPath: path) } }
        let images = try ImageStore(root: StateRoot(path))
        if (try? await images.image("busybox:bench")) == nil {
            try await images.importRootfs(at: rootfs, name: "busybox:bench")
        }
        let runtime = try ContainerRuntime(images: images, cgroupParent: cgroupParent)
        let result = try await body(runtime)
        for record in try runtime.list() { try await runtime.container(record.id).remove(force: true) }
        // The parent, now empty, in every hierarchy.
        if let v1 = runtime.cgroups as? CgroupV1Driver {
            for mount in Set(v1.controllerMounts.values) { rmdir(mount + "/" + cgroupParent) }
        } else if let v2 = runtime.cgroups as? CgroupV2Driver {
            rmdir(v2.mountPoint + "/" + cgroupParent)
        }
        return result
    }
}

/// Creates and starts a container that sleeps for a minute.
func startSleeper(_ runtime: ContainerRuntime) async throws -> Container {
    let container = try await runtime.create(ContainerSpec(image: "busybox:bench", command: ["sleep", "60"]))
    try await container.start()
    return container
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
}

/// The median of `values` (0 when there are none).
func median(_ values: [Double]) -> Double {
    values.isEmpty ? 0 : percentile(values.sorted(), 0.5)
}

/// This process's resident memory, in KiB.
func residentKiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

/// Children of this process that are not the main process of a container.
func helperProcesses(containers: Set<Int32>) -> [Int32] {
    let me = getpid()
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 && Int32(fields[1]) == me && !containers.contains(pid)
    }
}

extension GantryBench {
    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, start, wait for and remove a container running `true`, repeatedly.")
        @OptionGroup var options: BenchOptions
        @Option(help: "How many runs.") var runs = 200
        @Option(help: "Runs before measuring.") var warmup = 10
        @Flag(help: "Without a seccomp filter (to see what the filter costs).") var unconfined = false

        func run() async throws {
            let samples = try await options.withRuntime { runtime in
                var spec = ContainerSpec(image: "busybox:bench", command: ["/bin/true"])
                if unconfined { spec.seccomp = .unconfined }
                var samples: [Double] = []
                var phases = [Double](repeating: 0, count: 4)
                let clock = ContinuousClock()
                for index in 0 ..< (warmup + runs) {
                    let start = clock.now
                    let container = try await runtime.create(spec)
                    let created = clock.now
                    try await container.start()
                    let started = clock.now
                    let exit = try await container.wait()
                    let exited = clock.now
                    try await container.remove()
                    guard exit.code == 0 else { throw ValidationError("the container failed: \(exit)") }
                    if index >= warmup {
                        samples.append(milliseconds(clock.now - start))
                        for (phase, time) in [created - start, started - created, exited - started, clock.now - exited].enumerated() {
                            phases[phase] += milliseconds(time) / Double(runs)
                        }
                    }
                }
                print(String(format: "phases (mean): create %.3f ms, start %.3f ms, wait %.3f ms, remove %.3f ms",
                             phases[0], phases[1], phases[2], phases[3]))
                // What the background teardown had not caught up with (it
                // runs during the loop, on the other cores).
                let backlog = clock.now
                await ContainerRuntime.settle()
                print(String(format: "reclaim backlog at the end: %.3f ms", milliseconds(clock.now - backlog)))
                return samples.sorted()
            }
            print("runs: \(samples.count)")
            print(String(format: "mean: %.3f ms", samples.reduce(0, +) / Double(samples.count)))
            print(String(format: "min: %.3f ms", samples[0]))
            print(String(format: "p99: %.3f ms", percentile(samples, 0.99)))
            print(String(format: "start_median: %.3f ms", percentile(samples, 0.5)))
        }
    }

    struct Burst: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start containers running `sleep` all at once; time until all run, and the cleanup.")
        @OptionGroup var options: BenchOptions
        @Option(help: "How many containers.") var count = 50
        @Option(help: "Containers started and removed one at a time before measuring, as a long-running server has.")
        var warmup = 1

        func run() async throws {
            let (started, cleaned) = try await options.withRuntime { runtime in
                // The first container of a process compiles the seccomp
                // profile and fills caches; a server pays that once.
                for _ in 0 ..< warmup { try await startSleeper(runtime).remove(force: true) }
                await ContainerRuntime.settle()
                let clock = ContinuousClock()
                let start = clock.now
                let containers = try await withThrowingTaskGroup(of: Container.self) { group in
                    for _ in 0 ..< count {
                        group.addTask { try await startSleeper(runtime) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let started = clock.now - start
                let cleanupStart = clock.now
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for container in containers { group.addTask { try await container.remove(force: true) } }
                    try await group.waitForAll()
                }
                // Until the mounts and files are reclaimed too.
                await ContainerRuntime.settle()
                return (started, clock.now - cleanupStart)
            }
            print("containers: \(count)")
            print(String(format: "cleanup: %.1f ms", milliseconds(cleaned)))
            print(String(format: "burst_start: %.1f ms", milliseconds(started)))
        }
    }

    struct Memory: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Host memory (this process's RSS) per running container, and helper processes (none).")
        @OptionGroup var options: BenchOptions
        @Option(help: "How many containers.") var count = 100

        func run() async throws {
            let (perContainer, helpers) = try await options.withRuntime { runtime in
                // Warm up: threads, caches and the allocator's arenas.
                var warm: [Container] = []
                for _ in 0 ..< 10 { warm.append(try await startSleeper(runtime)) }
                for container in warm { try await container.remove(force: true) }
                let before = residentKiB()
                var containers: [Container] = []
                for _ in 0 ..< count { containers.append(try await startSleeper(runtime)) }
                let after = residentKiB()
                let pids = Set(try containers.compactMap { try $0.record.pid })
                let helpers = helperProcesses(containers: pids)
                for container in containers { try await container.remove(force: true) }
                return (Double(after - before) / Double(count), helpers.count)
            }
            print("containers: \(count)")
            print("helper_processes: \(helpers)")
            print(String(format: "memory_per_container: %.1f KiB", perContainer))
        }
    }
}
