#if canImport(Glibc)
import Glibc
#endif

/// The defaults of the OCI runtime specification and Docker: the standard
/// mounts, masked and read-only paths, and the default capability set.
enum ContainerDefaults {
    static let nosuid = UInt(MS_NOSUID)
    static let nodev = UInt(MS_NODEV)
    static let noexec = UInt(MS_NOEXEC)
    static let rdonly = UInt(MS_RDONLY)

    /// `/proc`, `/dev` with its standard nodes, `/dev/pts`, `/dev/shm`,
    /// `/dev/mqueue`, and `/sys` read-only unless `writableSys` (only with a
    /// network namespace of its own can sysfs be mounted fresh; otherwise
    /// the host's is bound). `/dev/shm` holds 64 MiB unless `shmSize` says otherwise.
    static func mounts(ownNetwork: Bool, writableSys: Bool = false, shmSize: Int64? = nil) -> [PlannedMount] {
        var mounts: [PlannedMount] = [
            .filesystem("proc", at: "/proc", flags: nosuid | nodev | noexec),
            // nodev, with the standard nodes bound from the host's /dev: a
            // node made inside the container opens nothing.
            .filesystem("tmpfs", at: "/dev", source: "tmpfs", flags: nosuid | nodev, data: "mode=755,size=65536k"),
        ]
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            mounts.append(.device("/dev/" + node, at: "/dev/" + node))
        }
        mounts += [
            .filesystem("devpts", at: "/dev/pts", source: "devpts", flags: nosuid | noexec, data: "newinstance,ptmxmode=0666,mode=0620"),
            .symlink("/dev/ptmx", to: "pts/ptmx"),
            .symlink("/dev/fd", to: "/proc/self/fd"),
            .symlink("/dev/stdin", to: "/proc/self/fd/0"),
            .symlink("/dev/stdout", to: "/proc/self/fd/1"),
            .symlink("/dev/stderr", to: "/proc/self/fd/2"),
            .symlink("/dev/core", to: "/proc/kcore"),
            .filesystem("tmpfs", at: "/dev/shm", source: "shm", flags: nosuid | nodev | noexec, data: "mode=1777,size=\(shmSize.map { String($0) } ?? "65536k")"),
            .filesystem("mqueue", at: "/dev/mqueue", flags: nosuid | nodev | noexec),
        ]
        let sysFlags = nosuid | nodev | noexec | (writableSys ? 0 : rdonly)
        if ownNetwork {
            mounts.append(.filesystem("sysfs", at: "/sys", flags: sysFlags))
        } else {
            mounts.append(.bind("/sys", at: "/sys", flags: sysFlags))
        }
        return mounts
    }

    /// Paths hidden from the container (the OCI and Docker defaults).
    static let maskedPaths = [
        "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]

    /// Paths the container may read but not change.
    static let readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

    /// Files of the container's procfs that a bind mount may replace (as
    /// LXCFS does, to show a container its own limits), as runc allows.
    static let replaceableProcFiles: Set<String> = [
        "/proc/cpuinfo", "/proc/diskstats", "/proc/loadavg", "/proc/meminfo", "/proc/slabinfo", "/proc/stat", "/proc/swaps", "/proc/uptime",
    ]

    /// The default environment when neither the image nor the caller sets PATH.
    static let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
