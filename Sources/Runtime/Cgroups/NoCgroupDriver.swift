import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The driver of a process that is not root where no cgroup is delegated
/// to it (cgroup v1 and hybrid hosts, or a cgroup v2 host without a
/// subtree of the user's): containers get no cgroup of their own. They run,
/// but nothing can limit, count, freeze or list what they use; a container
/// that asks for limits is refused (unless the runtime is told to run it
/// without them). Its PID namespace still ends every process of it with
/// its first.
public struct NoCgroupDriver: CgroupDriver {
    public let mode: CgroupMode
    /// Why no cgroup is delegated, and how to get one: the tail of every error.
    public let reason: String

    public init(mode: CgroupMode, reason: String) {
        self.mode = mode
        self.reason = reason
    }

    private func unavailable(_ what: String, _ name: String) -> RuntimeError {
        RuntimeError(.cgroup, "\(what) \(Sys.lastComponent(of: name).prefix(12)): containers have no cgroup here (\(reason))")
    }

    public func create(_ name: String, limits: ResourceLimits) throws {
        try limits.validate()
        guard limits == ResourceLimits() else { throw unavailable("cannot limit the resources of container", name) }
    }

    public func openForLaunch(_ name: String) throws -> (directory: Int32, tasks: [Int32]) { (-1, []) }

    /// Nothing to do: without privileges no device node can be made, and the
    /// container's standard nodes are the host's, bound.
    public func allowDevices(_ rules: [DeviceRule], in name: String) throws {}

    public func usage(_ name: String) throws -> ResourceUsage { throw unavailable("cannot measure what is used by container", name) }

    public func oomKills(_ name: String) -> Int64 { 0 }

    public func setFrozen(_ frozen: Bool, _ name: String) throws {
        throw unavailable(frozen ? "cannot freeze container" : "cannot thaw container", name)
    }

    public func processes(_ name: String) throws -> [Int32] { [] }

    public func remove(_ name: String) throws {}
}

extension Cgroups {
    /// The driver and cgroup parent for a process that is not root: on a
    /// cgroup v2 host, the subtree the user owns around its own cgroup (as
    /// systemd delegates one to each user's manager), with containers'
    /// cgroups beside its own under `parent`; elsewhere none.
    static func rootless(parent: String) -> (driver: any CgroupDriver, parent: String) {
        guard let hierarchy = try? CgroupHierarchy.current() else {
            return (NoCgroupDriver(mode: .legacy, reason: "no cgroup file system is mounted"), parent)
        }
        guard hierarchy.mode == .unified else {
            return (NoCgroupDriver(mode: hierarchy.mode, reason: "this host mounts cgroup v1 controllers, which cannot be delegated to an ordinary user; on a host with cgroup v2 alone, run in a subtree delegated to the user, as `systemd-run --user --scope -p Delegate=yes` gives"), parent)
        }
        let mount = hierarchy.unifiedMount ?? "/sys/fs/cgroup"
        if let delegated = delegatedBase(mount: mount) {
            return (CgroupV2Driver(mountPoint: mount), delegated.isEmpty ? parent : delegated + "/" + parent)
        }
        return (NoCgroupDriver(mode: .unified, reason: "the user owns no cgroup above its own process's; run in a subtree delegated to the user, as `systemd-run --user --scope -p Delegate=yes` gives"), parent)
    }

    /// The cgroup (relative to the mount) that holds this process's own
    /// cgroup, when the user may make cgroups in it and it has the memory
    /// and pids controllers; nil otherwise.
    static func delegatedBase(mount: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        else { return nil }
        let own = String(line.dropFirst(3)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !own.isEmpty else { return nil }
        let base = Sys.parentDirectory(of: "/" + own).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let directory = base.isEmpty ? mount : mount + "/" + base
        var info = stat()
        guard stat(directory, &info) == 0, info.st_uid == geteuid(), access(directory, W_OK) == 0,
              let controllers = try? String(contentsOfFile: directory + "/cgroup.controllers", encoding: .utf8)
        else { return nil }
        let available = Set(controllers.split(whereSeparator: \.isWhitespace).map(String.init))
        guard available.contains("memory"), available.contains("pids") else { return nil }
        return base
    }
}
