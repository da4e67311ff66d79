import SystemPackage
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The limits a container's cgroup enforces. `nil` leaves the kernel's
/// default (unlimited, or the parent's value).
public struct ResourceLimits: Hashable, Sendable, Codable {
    /// CPU time per period, in microseconds (`--cpus 0.5` is 50 000 of 100 000).
    public var cpuQuota: Int64?
    /// The length of a CPU period, in microseconds (default 100 000).
    public var cpuPeriod: UInt64?
    /// Relative CPU weight in cgroup v1 shares (2 … 262 144, default 1024);
    /// converted to `cpu.weight` on cgroup v2.
    public var cpuShares: UInt64?
    /// The CPUs the container may run on, as `0-3,5`.
    public var cpusetCPUs: String?
    /// The memory nodes the container may use, as `0`.
    public var cpusetMems: String?
    /// The memory limit in bytes; the container is OOM-killed above it.
    public var memory: Int64?
    /// Memory the kernel tries to leave the container under pressure, in bytes.
    public var memoryReservation: Int64?
    /// Memory plus swap, in bytes (Docker's `--memory-swap`); -1 is unlimited.
    public var memorySwap: Int64?
    /// The most processes and threads the container may have.
    public var pids: Int64?
    /// Relative block I/O weight (10 … 1000).
    public var ioWeight: UInt16?

    /// No limits.
    public init(cpuQuota: Int64? = nil, cpuPeriod: UInt64? = nil, cpuShares: UInt64? = nil, cpusetCPUs: String? = nil,
                cpusetMems: String? = nil, memory: Int64? = nil, memoryReservation: Int64? = nil, memorySwap: Int64? = nil,
                pids: Int64? = nil, ioWeight: UInt16? = nil) {
        self.cpuQuota = cpuQuota
        self.cpuPeriod = cpuPeriod
        self.cpuShares = cpuShares
        self.cpusetCPUs = cpusetCPUs
        self.cpusetMems = cpusetMems
        self.memory = memory
        self.memoryReservation = memoryReservation
        self.memorySwap = memorySwap
        self.pids = pids
        self.ioWeight = ioWeight
    }

    /// Limits CPU time to `cpus` CPUs' worth per 100 ms period. A value
    /// that is not a positive finite number gives a quota of 0, and one past
    /// any host's size the largest quota; creating a container refuses both.
    public static func quota(cpus: Double) -> (quota: Int64, period: UInt64) {
        guard cpus.isFinite, cpus > 0 else { return (0, 100_000) }
        let microseconds = (cpus * 100_000).rounded()
        return (microseconds < 0x1p62 ? Int64(microseconds) : Int64.max, 100_000)
    }

    /// Checks the values against the kernel's ranges.
    func validate() throws {
        func fail(_ message: String) -> RuntimeError { RuntimeError(.invalidSpec, message) }
        if let cpuQuota, cpuQuota < 1000 { throw fail("CPU quota \(cpuQuota) µs is below the kernel's minimum of 1000 µs (0.01 CPUs)") }
        if let cpuPeriod, !(1000 ... 1_000_000).contains(cpuPeriod) {
            throw fail("CPU period \(cpuPeriod) µs is outside 1000 … 1 000 000 µs")
        }
        if let cpuQuota {
            // As Docker does: more time than the host's CPUs have is a mistake, not a limit.
            let period = Int64(cpuPeriod ?? 100_000)
            let online = Int64(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            if cpuQuota > online * period {
                let asked = cpuQuota == Int64.max ? "more" : String(format: "%.2f", Double(cpuQuota) / Double(period))
                throw fail("a CPU limit of \(asked) CPUs is more than the \(online) CPUs of this host")
            }
        }
        if let cpuShares, !(2 ... 262_144).contains(cpuShares) { throw fail("CPU shares \(cpuShares) are outside 2 … 262 144") }
        if let memory, memory < 4096 { throw fail("memory limit \(memory) bytes is below one page") }
        // The kernel takes limits in pages of a 64-bit counter; beyond 2^62
        // bytes a value can only be a typing mistake.
        for (name, value) in [("memory limit", memory), ("memory reservation", memoryReservation), ("memory+swap limit", memorySwap)] {
            if let value, value > 1 << 62 { throw fail("\(name) \(value) bytes is more than any host has (at most 4 EiB)") }
        }
        if let memoryReservation, memoryReservation < 0 { throw fail("memory reservation \(memoryReservation) is negative") }
        if let memorySwap, memorySwap != -1 {
            guard let memory else { throw fail("a memory+swap limit needs a memory limit") }
            if memorySwap < memory { throw fail("memory+swap limit \(memorySwap) is below the memory limit \(memory)") }
        }
        if let pids, pids < 1 { throw fail("pids limit \(pids) must be at least 1") }
        if let ioWeight, !(10 ... 1000).contains(ioWeight) { throw fail("I/O weight \(ioWeight) is outside 10 … 1000") }
        for (name, value) in [("cpuset CPUs", cpusetCPUs), ("cpuset memory nodes", cpusetMems)] {
            if let value, value.isEmpty || !value.allSatisfy({ $0.isNumber || $0 == "," || $0 == "-" }) {
                throw fail("\(name) \"\(value)\" is not a list such as 0-3,5")
            }
        }
    }
}

/// What a container's cgroup has used.
public struct ResourceUsage: Hashable, Sendable, Codable {
    /// CPU time used by all its processes, in nanoseconds.
    public var cpuNanoseconds: UInt64
    /// Memory in use now, in bytes.
    public var memory: Int64
    /// The most memory used at once, in bytes (when the kernel tracks it).
    public var memoryPeak: Int64?
    /// The memory limit in bytes, or `nil` when unlimited.
    public var memoryLimit: Int64?
    /// Processes and threads now.
    public var pids: Int64
    /// The pids limit, or `nil` when unlimited.
    public var pidsLimit: Int64?
    /// How many times the kernel's OOM killer killed a process in it.
    public var oomKills: Int64
}

/// One container's cgroup, however the host arranges its hierarchies.
public protocol CgroupDriver: Sendable {
    /// The kind of host the driver serves.
    var mode: CgroupMode { get }

    /// Creates the cgroup `name` (a relative path such as `gantry/3f9c…`)
    /// and applies `limits`.
    func create(_ name: String, limits: ResourceLimits) throws

    /// Descriptors a new process needs to start inside the cgroup: the
    /// cgroup directory for `CLONE_INTO_CGROUP` (v2) or the `tasks` files
    /// the new process (a single thread) writes itself to (v1). The caller
    /// closes them.
    func openForLaunch(_ name: String) throws -> (directory: Int32, tasks: [Int32])

    /// Lets the cgroup's processes use only the devices `rules` allow:
    /// every other access to a device node fails with `EPERM`.
    func allowDevices(_ rules: [DeviceRule], in name: String) throws

    /// What the cgroup has used.
    func usage(_ name: String) throws -> ResourceUsage

    /// How many processes the OOM killer has killed in the cgroup.
    func oomKills(_ name: String) -> Int64

    /// Freezes (or thaws) every process in the cgroup, returning once done.
    func setFrozen(_ frozen: Bool, _ name: String) throws

    /// The pids in the cgroup.
    func processes(_ name: String) throws -> [Int32]

    /// Removes the cgroup, killing what is left in it and retrying while the
    /// kernel reports it busy. A missing cgroup is not an error.
    func remove(_ name: String) throws

    /// The names of the cgroups directly under `name`, in any hierarchy.
    func children(of name: String) -> [String]
}

extension CgroupDriver {
    /// None known (a driver that cannot list its cgroups).
    public func children(of name: String) -> [String] { [] }

    /// Removes the cgroup `name` from every hierarchy when nothing is in
    /// it: no process and no cgroup below it (a parent that several state
    /// roots share stays while any of them uses it). Returns whether it is
    /// gone (or was never there).
    @discardableResult
    public func removeIfEmpty(_ name: String) -> Bool {
        guard children(of: name).isEmpty, ((try? processes(name)) ?? []).isEmpty else { return false }
        return (try? remove(name)) != nil
    }
}

extension CgroupDriver {
    /// Retries `rmdir` while the kernel still counts exiting processes.
    func removeDirectory(_ path: String, killing name: String) throws {
        var delay: useconds_t = 200
        for attempt in 0 ..< 60 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            guard errno == EBUSY else {
                throw RuntimeError(.cgroup, "cannot remove the cgroup \(path)", underlying: Sys.errno)
            }
            if attempt % 10 == 0 {
                for pid in (try? processes(name)) ?? [] { kill(pid, SIGKILL) }
            }
            usleep(delay)
            delay = min(delay * 2, 100_000)
        }
        throw RuntimeError(.cgroup, "the cgroup \(path) stays busy; processes are still in it", underlying: Errno.resourceBusy)
    }

    /// Parses a `cgroup.procs` file.
    static func parsePids(_ text: String) -> [Int32] {
        text.split(separator: "\n").compactMap { Int32($0) }
    }
}

/// Chooses the driver for a host.
public enum Cgroups {
    /// The driver for the current host: v2 on unified hosts, v1 on legacy
    /// and hybrid hosts (where the v2 tree holds no controllers).
    public static func hostDriver() throws -> any CgroupDriver {
        let hierarchy = try CgroupHierarchy.current()
        switch hierarchy.mode {
        case .unified:
            return CgroupV2Driver(mountPoint: hierarchy.unifiedMount ?? "/sys/fs/cgroup")
        case .hybrid, .legacy:
            return try CgroupV1Driver(hierarchy: hierarchy)
        }
    }
}
