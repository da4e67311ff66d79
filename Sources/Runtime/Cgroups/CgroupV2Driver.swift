import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// cgroup v2 (the unified hierarchy): one directory per container, which
/// the process is cloned straight into (`CLONE_INTO_CGROUP`).
public struct CgroupV2Driver: CgroupDriver {
    public var mode: CgroupMode { .unified }
    /// Where the cgroup2 file system is mounted (normally `/sys/fs/cgroup`).
    public let mountPoint: String

    /// The controllers delegated to each level above a container.
    static let controllers = ["cpu", "cpuset", "io", "memory", "pids"]

    /// A driver for the cgroup2 tree at `mountPoint`.
    public init(mountPoint: String = "/sys/fs/cgroup") {
        self.mountPoint = mountPoint
    }

    private func file(_ name: String, _ file: String) -> String {
        mountPoint + "/" + name + "/" + file
    }

    public func create(_ name: String, limits: ResourceLimits) throws {
        try limits.validate()
        // Each level above the container delegates the controllers it has.
        // A level that already has them is left alone: above a subtree
        // delegated to an ordinary user, the user can write nothing.
        var current = mountPoint
        for component in name.split(separator: "/") {
            let child = current + "/" + component
            if !hasControllers(child, of: current) { try enableControllers(in: current) }
            current = child
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw RuntimeError(.cgroup, "cannot create the cgroup \(current)", underlying: Sys.errno)
            }
        }
        do {
            try apply(limits, name)
        } catch {
            try? remove(name)
            throw error
        }
    }

    /// The controllers a cgroup file lists.
    private func controllers(_ path: String) throws -> Set<String> {
        Set((try FileIO.read(path)).split(whereSeparator: \.isWhitespace).map(String.init))
    }

    /// Whether the existing cgroup `child` has every controller Gantry
    /// uses that `parent` has.
    private func hasControllers(_ child: String, of parent: String) -> Bool {
        guard let available = try? controllers(parent + "/cgroup.controllers"),
              let inChild = try? controllers(child + "/cgroup.controllers") else { return false }
        return Self.controllers.allSatisfy { !available.contains($0) || inChild.contains($0) }
    }

    private func enableControllers(in directory: String) throws {
        let available = try controllers(directory + "/cgroup.controllers")
        let enabled = try controllers(directory + "/cgroup.subtree_control")
        let missing = Self.controllers.filter { available.contains($0) && !enabled.contains($0) }
        guard !missing.isEmpty else { return }
        do {
            try FileIO.write(missing.map { "+" + $0 }.joined(separator: " "), to: directory + "/cgroup.subtree_control")
        } catch {
            throw RuntimeError(.cgroup, "the cgroup \(directory) does not pass the controllers \(missing.joined(separator: ", ")) to the cgroups below it, "
                               + "and they cannot be turned on here; its owner must enable them (systemd: Delegate=yes)", underlying: error)
        }
    }

    private func apply(_ limits: ResourceLimits, _ name: String) throws {
        if limits.cpuQuota != nil || limits.cpuPeriod != nil {
            let quota = limits.cpuQuota.map(String.init) ?? "max"
            try FileIO.write("\(quota) \(limits.cpuPeriod ?? 100_000)", to: file(name, "cpu.max"))
        }
        if let shares = limits.cpuShares { try FileIO.write(String(Self.weight(shares: shares)), to: file(name, "cpu.weight")) }
        if let cpus = limits.cpusetCPUs { try FileIO.write(cpus, to: file(name, "cpuset.cpus")) }
        if let mems = limits.cpusetMems { try FileIO.write(mems, to: file(name, "cpuset.mems")) }
        if let memory = limits.memory { try FileIO.write(String(memory), to: file(name, "memory.max")) }
        if let reservation = limits.memoryReservation { try FileIO.write(String(reservation), to: file(name, "memory.low")) }
        if let swap = limits.memorySwap {
            // v2 limits swap alone; Docker's value counts memory too.
            let value = swap == -1 ? "max" : String(swap - (limits.memory ?? 0))
            try FileIO.write(value, to: file(name, "memory.swap.max"))
        }
        if let pids = limits.pids { try FileIO.write(String(pids), to: file(name, "pids.max")) }
        if let weight = limits.ioWeight {
            let bfq = file(name, "io.bfq.weight")
            if access(bfq, F_OK) == 0 {
                try FileIO.write(String(weight), to: bfq)
            } else {
                try FileIO.write("default \(Self.ioWeight(weight))", to: file(name, "io.weight"))
            }
        }
    }

    /// cgroup v1 shares (2 … 262 144) as a v2 weight (1 … 10 000), the
    /// conversion runc and crun use.
    static func weight(shares: UInt64) -> UInt64 {
        1 + ((shares - 2) * 9999) / 262_142
    }

    /// A v1 blkio weight (10 … 1000) as a v2 io.weight (1 … 10 000).
    static func ioWeight(_ weight: UInt16) -> UInt64 {
        1 + (UInt64(weight) - 10) * 9999 / 990
    }

    public func allowDevices(_ rules: [DeviceRule], in name: String) throws {
        let directory = mountPoint + "/" + name
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw RuntimeError(.cgroup, "cannot open the cgroup \(directory)", underlying: Sys.errno) }
        defer { close(fd) }
        let entries = rules.map { rule in
            gantry_device_rule(type: CChar(bitPattern: rule.kind.rawValue.utf8.first ?? UInt8(ascii: "a")),
                               major: rule.major.map(Int64.init) ?? -1, minor: rule.minor.map(Int64.init) ?? -1,
                               access: UInt32(rule.access.rawValue))
        }
        var log = [CChar](repeating: 0, count: 4096)
        let attached = entries.withUnsafeBufferPointer { rules in
            log.withUnsafeMutableBufferPointer { gantry_device_filter_attach(fd, rules.baseAddress, rules.count, $0.baseAddress, $0.count) }
        }
        guard attached == 0 else {
            let error = Sys.errno
            let verifier = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw RuntimeError(.cgroup, "cannot attach the device program to the cgroup \(directory)" + (verifier.isEmpty ? "" : ": \(verifier)"),
                               underlying: error)
        }
    }

    public func openForLaunch(_ name: String) throws -> (directory: Int32, tasks: [Int32]) {
        let path = mountPoint + "/" + name
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw RuntimeError(.cgroup, "cannot open the cgroup \(path)", underlying: Sys.errno) }
        return (fd, [])
    }

    public func usage(_ name: String) throws -> ResourceUsage {
        let cpu = FileIO.keyedValue("usage_usec", in: try FileIO.read(file(name, "cpu.stat"))) ?? 0
        return ResourceUsage(
            cpuNanoseconds: UInt64(max(0, cpu)) * 1000,
            memory: try FileIO.readNumber(file(name, "memory.current")) ?? 0,
            memoryPeak: (try? FileIO.readNumber(file(name, "memory.peak"))) ?? nil,
            memoryLimit: try FileIO.readNumber(file(name, "memory.max")),
            pids: try FileIO.readNumber(file(name, "pids.current")) ?? 0,
            pidsLimit: try FileIO.readNumber(file(name, "pids.max")),
            oomKills: oomKills(name))
    }

    public func oomKills(_ name: String) -> Int64 {
        guard let text = try? FileIO.read(file(name, "memory.events")) else { return 0 }
        return FileIO.keyedValue("oom_kill", in: text) ?? 0
    }

    public func setFrozen(_ frozen: Bool, _ name: String) throws {
        try FileIO.write(frozen ? "1" : "0", to: file(name, "cgroup.freeze"))
        // `cgroup.events` says "frozen 1" once every process has stopped.
        for _ in 0 ..< 1000 {
            let events = try FileIO.read(file(name, "cgroup.events"))
            if FileIO.keyedValue("frozen", in: events) == (frozen ? 1 : 0) { return }
            usleep(1000)
        }
        throw RuntimeError(.cgroup, "the cgroup \(mountPoint)/\(name) did not \(frozen ? "freeze" : "thaw") within a second")
    }

    public func processes(_ name: String) throws -> [Int32] {
        Self.parsePids(try FileIO.read(file(name, "cgroup.procs")))
    }

    public func children(of name: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: mountPoint + "/" + name)) ?? []).filter { entry in
            var info = stat()
            return stat(mountPoint + "/" + name + "/" + entry, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
        }.sorted()
    }

    public func remove(_ name: String) throws {
        let path = mountPoint + "/" + name
        guard access(path, F_OK) == 0 else { return }
        // cgroup.kill (Linux 5.14) kills everything at once.
        try? FileIO.write("1", to: path + "/cgroup.kill")
        try removeDirectory(path, killing: name)
    }
}
