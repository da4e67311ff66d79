import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// cgroup v1, on legacy and hybrid hosts: one directory per controller
/// hierarchy (`/sys/fs/cgroup/memory/<name>`, …). A new process adds
/// itself to each, before anything else, by writing 0 to its `tasks` file.
public struct CgroupV1Driver: CgroupDriver {
    public var mode: CgroupMode
    /// Each controller's mount point.
    public let controllerMounts: [String: String]

    /// The controllers every container gets: accounting, limits and the freezer.
    static let controllers = ["memory", "pids", "cpu", "cpuacct", "freezer"]

    /// A driver over the controllers `hierarchy` mounts.
    ///
    /// - Throws: ``RuntimeError`` when a controller the runtime needs is missing.
    public init(hierarchy: CgroupHierarchy) throws {
        mode = hierarchy.mode
        controllerMounts = hierarchy.controllerMounts
        for controller in Self.controllers where controllerMounts[controller] == nil {
            throw RuntimeError(.unsupportedHost, "the cgroup v1 controller \(controller) is not mounted")
        }
    }

    private func path(_ controller: String, _ name: String) -> String? {
        controllerMounts[controller].map { $0 + "/" + name }
    }

    private func file(_ controller: String, _ name: String, _ file: String) -> String {
        (path(controller, name) ?? "/nonexistent") + "/" + file
    }

    /// The distinct hierarchies a cgroup lives in (cpu and cpuacct often share one).
    private func hierarchies(for limits: ResourceLimits?) -> [String] {
        var controllers = Self.controllers
        if limits == nil || limits?.cpusetCPUs != nil || limits?.cpusetMems != nil { controllers.append("cpuset") }
        if limits == nil || limits?.ioWeight != nil { controllers.append("blkio") }
        // Where the host has it (every v1 host does): device control.
        controllers.append("devices")
        var seen = Set<String>()
        return controllers.compactMap { controllerMounts[$0] }.filter { seen.insert($0).inserted }
    }

    public func children(of name: String) -> [String] {
        var names = Set<String>()
        for mount in hierarchies(for: nil) {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: mount + "/" + name)) ?? [] {
                var info = stat()
                if stat(mount + "/" + name + "/" + entry, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR { names.insert(entry) }
            }
        }
        return names.sorted()
    }

    public func create(_ name: String, limits: ResourceLimits) throws {
        try limits.validate()
        let mounts = hierarchies(for: limits)
        for mount in mounts {
            let directory = mount + "/" + name
            if mount == controllerMounts["cpuset"] {
                try makeCpusetDirectories(mount: mount, name: name)
            } else {
                try Sys.makeDirectories(directory)
            }
        }
        do {
            try apply(limits, name)
        } catch {
            try? remove(name)
            throw error
        }
    }

    /// A new cpuset cgroup starts with no CPUs or memory nodes; each level
    /// inherits its parent's before anything can join it.
    private func makeCpusetDirectories(mount: String, name: String) throws {
        var current = mount
        for component in name.split(separator: "/") {
            let parent = current
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw RuntimeError(.cgroup, "cannot create the cgroup \(current)", underlying: Sys.errno)
            }
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = try FileIO.read(current + "/" + file).trimmingCharacters(in: .whitespacesAndNewlines)
                if value.isEmpty {
                    try FileIO.write(try FileIO.read(parent + "/" + file).trimmingCharacters(in: .whitespacesAndNewlines), to: current + "/" + file)
                }
            }
        }
    }

    private func apply(_ limits: ResourceLimits, _ name: String) throws {
        if let period = limits.cpuPeriod { try FileIO.write(String(period), to: file("cpu", name, "cpu.cfs_period_us")) }
        if let quota = limits.cpuQuota { try FileIO.write(String(quota), to: file("cpu", name, "cpu.cfs_quota_us")) }
        if let shares = limits.cpuShares { try FileIO.write(String(shares), to: file("cpu", name, "cpu.shares")) }
        if let cpus = limits.cpusetCPUs { try FileIO.write(cpus, to: file("cpuset", name, "cpuset.cpus")) }
        if let mems = limits.cpusetMems { try FileIO.write(mems, to: file("cpuset", name, "cpuset.mems")) }
        if let memory = limits.memory { try FileIO.write(String(memory), to: file("memory", name, "memory.limit_in_bytes")) }
        if let swap = limits.memorySwap {
            let path = file("memory", name, "memory.memsw.limit_in_bytes")
            guard access(path, F_OK) == 0 else {
                throw RuntimeError(.cgroup, "the host does not account swap (no \(path)); boot with swapaccount=1 or drop the memory+swap limit")
            }
            try FileIO.write(String(swap), to: path)
        }
        if let reservation = limits.memoryReservation {
            try FileIO.write(String(reservation), to: file("memory", name, "memory.soft_limit_in_bytes"))
        }
        if let pids = limits.pids { try FileIO.write(String(pids), to: file("pids", name, "pids.max")) }
        if let weight = limits.ioWeight {
            let candidates = ["blkio.bfq.weight", "blkio.weight"].map { file("blkio", name, $0) }
            guard let path = candidates.first(where: { access($0, F_OK) == 0 }) else {
                throw RuntimeError(.cgroup, "the host's I/O scheduler has no weights (neither \(candidates.joined(separator: " nor ")) exists)")
            }
            try FileIO.write(String(weight), to: path)
        }
    }

    public func allowDevices(_ rules: [DeviceRule], in name: String) throws {
        guard controllerMounts["devices"] != nil else {
            throw RuntimeError(.unsupportedHost, "the cgroup v1 controller devices is not mounted: containers' devices cannot be restricted")
        }
        // Everything denied, then each entry allowed: a new cgroup starts
        // with its parent's list, which allows everything.
        try FileIO.write("a", to: file("devices", name, "devices.deny"))
        for rule in rules {
            // The kernel reads an `a` entry as "allow everything" whatever
            // access it names: written as its two kinds, it means what it says.
            let entries = rule.kind == .all
                ? [DeviceRule(.character, major: nil, minor: nil, access: rule.access), DeviceRule(.block, major: nil, minor: nil, access: rule.access)]
                : [rule]
            for entry in entries { try FileIO.write(entry.description, to: file("devices", name, "devices.allow")) }
        }
    }

    public func openForLaunch(_ name: String) throws -> (directory: Int32, tasks: [Int32]) {
        var descriptors: [Int32] = []
        for mount in hierarchies(for: nil) {
            let directory = mount + "/" + name
            guard access(directory, F_OK) == 0 else { continue }
            let fd = open(directory + "/tasks", O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else {
                let error = Sys.errno
                descriptors.forEach { close($0) }
                throw RuntimeError(.cgroup, "cannot open \(directory)/tasks", underlying: error)
            }
            descriptors.append(fd)
        }
        return (-1, descriptors)
    }

    public func usage(_ name: String) throws -> ResourceUsage {
        let memory = try FileIO.readNumber(file("memory", name, "memory.usage_in_bytes")) ?? 0
        let limit = try FileIO.readNumber(file("memory", name, "memory.limit_in_bytes"))
        return ResourceUsage(
            cpuNanoseconds: UInt64(max(0, try FileIO.readNumber(file("cpuacct", name, "cpuacct.usage")) ?? 0)),
            memory: memory,
            memoryPeak: try? FileIO.readNumber(file("memory", name, "memory.max_usage_in_bytes")),
            // v1 reports "unlimited" as the largest page-aligned value.
            memoryLimit: limit.flatMap { $0 >= Int64.max / 2 ? nil : $0 },
            pids: try FileIO.readNumber(file("pids", name, "pids.current")) ?? 0,
            pidsLimit: try FileIO.readNumber(file("pids", name, "pids.max")),
            oomKills: oomKills(name))
    }

    public func oomKills(_ name: String) -> Int64 {
        guard let text = try? FileIO.read(file("memory", name, "memory.oom_control")) else { return 0 }
        return FileIO.keyedValue("oom_kill", in: text) ?? 0
    }

    public func setFrozen(_ frozen: Bool, _ name: String) throws {
        let state = file("freezer", name, "freezer.state")
        try FileIO.write(frozen ? "FROZEN" : "THAWED", to: state)
        // Freezing completes asynchronously; FREEZING means not yet.
        for _ in 0 ..< 1000 {
            let now = try FileIO.read(state).trimmingCharacters(in: .whitespacesAndNewlines)
            if now == (frozen ? "FROZEN" : "THAWED") { return }
            usleep(1000)
        }
        throw RuntimeError(.cgroup, "\(state) did not become \(frozen ? "FROZEN" : "THAWED") within a second")
    }

    public func processes(_ name: String) throws -> [Int32] {
        Self.parsePids(try FileIO.read(file("pids", name, "cgroup.procs")))
    }

    public func remove(_ name: String) throws {
        // Thaw first: frozen processes cannot die.
        try? FileIO.write("THAWED", to: file("freezer", name, "freezer.state"))
        for mount in hierarchies(for: nil) {
            try removeDirectory(mount + "/" + name, killing: name)
        }
    }
}
