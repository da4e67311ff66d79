import Foundation

/// Which cgroup hierarchies a host mounts.
public enum CgroupMode: String, Hashable, Sendable, Codable {
    /// Only cgroup v2, mounted at `/sys/fs/cgroup` (most current hosts).
    case unified
    /// v1 controllers under `/sys/fs/cgroup/<controller>` and a cgroup2 tree
    /// (usually `/sys/fs/cgroup/unified`) holding no controllers.
    case hybrid
    /// Only v1 controllers.
    case legacy
}

/// The cgroup mounts of a host, read from `/proc/self/mountinfo`.
public struct CgroupHierarchy: Hashable, Sendable {
    /// The kind of host.
    public var mode: CgroupMode
    /// The cgroup2 mount point, if any.
    public var unifiedMount: String?
    /// Each v1 controller's mount point (`cpu` → `/sys/fs/cgroup/cpu,cpuacct`).
    public var controllerMounts: [String: String]

    /// Reads the hierarchy of the calling process's mount namespace.
    ///
    /// - Throws: ``RuntimeError`` if `/proc/self/mountinfo` cannot be read or
    ///   lists no cgroup file system.
    public static func current() throws -> CgroupHierarchy {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else {
            throw RuntimeError(.unsupportedHost, "/proc/self/mountinfo cannot be read; is /proc mounted?")
        }
        return try parse(mountinfo: text)
    }

    /// Parses the text of a `mountinfo` file (see proc(5)).
    public static func parse(mountinfo: String) throws -> CgroupHierarchy {
        var unified: String?
        var controllers: [String: String] = [:]
        for line in mountinfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let before = halves[0].split(separator: " ")
            let after = halves[1].split(separator: " ")
            guard before.count >= 5, after.count >= 3 else { continue }
            let mountPoint = unescape(String(before[4]))
            switch after[0] {
            case "cgroup2":
                if unified == nil { unified = mountPoint }
            case "cgroup":
                for option in after[2].split(separator: ",") {
                    let name = String(option)
                    guard !["rw", "ro", "xattr", "clone_children", "noprefix", "cpuset_v2_mode", "favordynmods"].contains(name),
                          !name.hasPrefix("name=") && !name.hasPrefix("release_agent=")
                    else { continue }
                    if controllers[name] == nil { controllers[name] = mountPoint }
                }
            default:
                continue
            }
        }
        let mode: CgroupMode
        switch (unified != nil, !controllers.isEmpty) {
        case (true, false): mode = .unified
        case (true, true): mode = .hybrid
        case (false, true): mode = .legacy
        case (false, false):
            throw RuntimeError(.unsupportedHost, "no cgroup file system is mounted")
        }
        return CgroupHierarchy(mode: mode, unifiedMount: unified, controllerMounts: controllers)
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var iterator = Array(field.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == 0x5c, iterator.count >= 3, let value = UInt8(String(decoding: iterator.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                iterator = iterator.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
