import Foundation
public import Runtime

/// This host as a ``Node``: its CPUs, memory and process ids, minus a
/// reserve, running workloads as containers of a `ContainerRuntime`.
///
/// A workload's limits become cgroup limits, its CPU request CPU shares,
/// its quality-of-service class its `oom_score_adj`. CPUs listed as
/// exclusive are given whole to guaranteed workloads that ask for them;
/// every other workload runs on the remaining CPUs, so an exclusive CPU
/// never runs anyone else's work.
public struct LocalNode: Node {
    /// The label naming a container's workload.
    public static let workloadLabel = "gantry.scheduler.workload"

    public let runtime: ContainerRuntime
    public let info: NodeInfo
    /// The CPUs this process may run on.
    public let onlineCPUs: [Int]
    /// Receives the output of every workload it runs, with the workload's
    /// name, as it comes; the last chunks arrive before the workload's end
    /// is reported. Containers are removed when their workload ends, so
    /// this is where their output can be kept.
    public var output: (@Sendable (_ workload: String, _ chunk: OutputChunk) -> Void)?

    /// This host.
    ///
    /// - Parameters:
    ///   - runtime: runs the containers.
    ///   - name: the node's name; the host name by default.
    ///   - labels: labels for selectors and affinity.
    ///   - taints: taints.
    ///   - reserved: kept for the host: 100 MiB of memory by default, as
    ///     the kubelet's eviction threshold.
    ///   - exclusiveCPUs: CPU numbers set aside for exclusive use.
    /// - Throws: ``SchedulerError`` naming an exclusive CPU this process cannot use.
    public init(runtime: ContainerRuntime, name: String? = nil, labels: [String: String] = [:], taints: [Taint] = [],
                reserved: ResourceVector = ResourceVector(memory: 100 << 20), exclusiveCPUs: [Int] = []) throws {
        self.runtime = runtime
        let cpus = Self.allowedCPUs()
        onlineCPUs = cpus
        for cpu in exclusiveCPUs where !cpus.contains(cpu) {
            throw SchedulerError(.invalidSpec, "exclusive CPU \(cpu) is not among this host's CPUs (\(cpus.map(String.init).joined(separator: ",")))")
        }
        if !exclusiveCPUs.isEmpty, exclusiveCPUs.count >= cpus.count {
            throw SchedulerError(.invalidSpec, "exclusive CPUs \(exclusiveCPUs) leave no CPU for other workloads")
        }
        let gpus = Self.gpuIndices()
        let capacity = ResourceVector(milliCPU: Int64(cpus.count) * 1000, memory: Self.memoryTotal(),
                                      pids: Self.pidLimit(), gpus: gpus.count)
        info = NodeInfo(name: name ?? ProcessInfo.processInfo.hostName, labels: labels, taints: taints, capacity: capacity,
                        reserved: reserved, exclusiveCPUs: exclusiveCPUs, gpuIndices: gpus)
    }

    /// The container spec a workload runs with: its limits, shares, cpuset,
    /// OOM score and devices applied to its container.
    ///
    /// - Throws: ``SchedulerError`` when the workload has no container.
    public func containerSpec(for workload: Workload, assignment: Assignment) throws -> ContainerSpec {
        guard var spec = workload.container else {
            throw SchedulerError(.invalidSpec, "workload \"\(workload.name)\" has no container to run on node \"\(info.name)\"")
        }
        let limits = workload.resources.limits
        let requests = workload.resources.effectiveRequests
        if let milliCPU = limits.milliCPU { spec = spec.resources(cpus: Double(milliCPU) / 1000) }
        if let memory = limits.memory { spec.resources.memory = memory }
        if let pids = limits.pids { spec.resources.pids = pids }
        // Where containers can have no cgroup (an ordinary user without a
        // delegated one), the node's own weights and CPU sets are left out:
        // only what the workload asks for is refused.
        let enforces = !(runtime.cgroups is NoCgroupDriver)
        // The kubelet's conversion: 1024 shares per CPU, at least 2.
        if enforces { spec.resources.cpuShares = UInt64(max(2, requests.milliCPU * 1024 / 1000)) }
        if !enforces {
        } else if !assignment.exclusiveCPUs.isEmpty {
            spec.resources.cpusetCPUs = assignment.exclusiveCPUs.map(String.init).joined(separator: ",")
        } else if !info.exclusiveCPUs.isEmpty {
            spec.resources.cpusetCPUs = onlineCPUs.filter { !info.exclusiveCPUs.contains($0) }.map(String.init).joined(separator: ",")
        }
        spec.oomScoreAdjustment = assignment.oomScoreAdjustment
        if !assignment.gpus.isEmpty {
            spec.environment.append("NVIDIA_VISIBLE_DEVICES=" + assignment.gpus.map(String.init).joined(separator: ","))
        }
        spec.labels[Self.workloadLabel] = workload.name
        return spec
    }

    public func launch(_ workload: Workload, assignment: Assignment) async throws -> any RunningWorkload {
        let container = try await runtime.create(containerSpec(for: workload, assignment: assignment))
        do {
            try await container.start()
        } catch {
            try? await container.remove(force: true)
            throw error
        }
        let relay = output.map { output in
            let name = workload.name
            let stream = container.output
            return Task {
                do {
                    for try await chunk in stream { output(name, chunk) }
                } catch {}
            }
        }
        return LocalWorkload(container: container, relay: relay)
    }

    // MARK: - Reading the host

    /// Parses a kernel CPU list such as `0-3,8,10-11` into CPU numbers.
    ///
    /// - Throws: ``SchedulerError`` naming the list when it is malformed.
    public static func parseCPUList(_ text: String) throws -> [Int] {
        var cpus: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", maxSplits: 1).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard let low = bounds.first ?? nil, low >= 0, bounds.count == 1 || (bounds[1].map { $0 >= low } ?? false) else {
                throw SchedulerError(.invalidSpec, "CPU list \"\(text)\" is malformed at \"\(part)\"")
            }
            cpus.append(contentsOf: low...(bounds.count == 2 ? bounds[1]! : low))
        }
        return cpus
    }

    static func allowedCPUs() -> [Int] {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed_list:") {
            if let cpus = try? parseCPUList(line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)),
               !cpus.isEmpty {
                return cpus
            }
        }
        return Array(0..<max(1, ProcessInfo.processInfo.activeProcessorCount))
    }

    static func memoryTotal() -> Int64 {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int64(fields[1]) { return kib * 1024 }
        }
        return Int64(ProcessInfo.processInfo.physicalMemory)
    }

    static func pidLimit() -> Int64 {
        func read(_ path: String) -> Int64? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return [read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")].compactMap { $0 }.min() ?? 32768
    }

    static func gpuIndices() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/dev")) ?? []
        return names.compactMap { name in
            guard name.hasPrefix("nvidia") else { return nil }
            return Int(name.dropFirst("nvidia".count))
        }.sorted()
    }
}

/// A workload running as a container on a ``LocalNode``.
final class LocalWorkload: RunningWorkload {
    let container: Container
    /// Passes the container's output on, until it ends.
    let relay: Task<Void, Never>?

    init(container: Container, relay: Task<Void, Never>?) {
        self.container = container
        self.relay = relay
    }

    func wait() async throws -> WorkloadExit {
        let container = self.container
        let exit: ContainerExit
        do {
            exit = try await withTaskCancellationHandler {
                try await container.wait()
            } onCancel: {
                try? container.kill()
            }
        } catch {
            relay?.cancel()
            try? await container.remove(force: true)
            throw error
        }
        await relay?.value
        try? await container.remove(force: true)
        let reason: String? = switch exit.reason {
        case .exited: nil
        case .oomKilled: "oomKilled"
        case .timedOut: "timedOut"
        case .stopped: "stopped"
        case .unknown: "unknown"
        }
        return WorkloadExit(status: exit.code, reason: reason)
    }

    func stop(grace: Duration) async throws {
        _ = try await container.stop(grace: grace)
    }
}
