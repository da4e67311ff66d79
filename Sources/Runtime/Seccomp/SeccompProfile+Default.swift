extension SeccompProfile {
    /// The default profile: the same policy as Docker's default. Calls are
    /// refused with EPERM unless listed; the ones that reach beyond the
    /// container (namespaces, mounts, keyrings, modules, kexec, BPF, clocks,
    /// reboot, …) are allowed only when the container holds the capability
    /// that makes them safe, and `clone` may not create namespaces.
    public static let `default`: SeccompProfile = {
        var rules: [Rule] = [Rule(names: allowed, action: .allow)]
        // Only the execution domains programs commonly ask for.
        rules.append(Rule(names: ["personality"], action: .allow,
                          args: [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff].map { Argument(index: 0, value: $0, op: .equal) }))
        // Any socket family but vsock, which reaches the hypervisor.
        rules.append(Rule(names: ["socket"], action: .allow, args: [Argument(index: 0, value: 40, op: .notEqual)]))
        rules.append(Rule(names: ["arch_prctl"], action: .allow, includes: Filter(arches: ["amd64", "x32"])))
        rules.append(Rule(names: ["modify_ldt"], action: .allow, includes: Filter(arches: ["amd64", "x32", "x86"])))
        rules.append(Rule(names: ["sync_file_range2", "swapcontext"], action: .allow, includes: Filter(arches: ["ppc64le"])))
        rules.append(Rule(names: ["arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls"],
                          action: .allow, includes: Filter(arches: ["arm", "arm64"])))
        rules.append(Rule(names: ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"], action: .allow,
                          includes: Filter(arches: ["s390", "s390x"])))
        rules.append(Rule(names: ["riscv_flush_icache"], action: .allow, includes: Filter(arches: ["riscv64"])))
        // Tracing one's own children is safe since Linux 4.8.
        rules.append(Rule(names: ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
                          action: .allow, includes: Filter(minKernel: "4.8")))
        // clone without namespace flags (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET);
        // s390 swaps the first two arguments.
        let namespaceFlags: UInt64 = 0x7e02_0000
        rules.append(Rule(names: ["clone"], action: .allow, args: [Argument(index: 0, value: namespaceFlags, valueTwo: 0, op: .maskedEqual)],
                          excludes: Filter(caps: ["CAP_SYS_ADMIN"], arches: ["s390", "s390x"])))
        rules.append(Rule(names: ["clone"], action: .allow, args: [Argument(index: 1, value: namespaceFlags, valueTwo: 0, op: .maskedEqual)],
                          includes: Filter(arches: ["s390", "s390x"]), excludes: Filter(caps: ["CAP_SYS_ADMIN"])))
        // clone3 hides its flags in memory the filter cannot read: report it
        // missing so that libc falls back to clone.
        rules.append(Rule(names: ["clone3"], action: .errno, errnoRet: 38, excludes: Filter(caps: ["CAP_SYS_ADMIN"])))
        for (capability, names) in byCapability {
            rules.append(Rule(names: names, action: .allow, includes: Filter(caps: [capability])))
        }
        return SeccompProfile(
            defaultAction: .errno, defaultErrnoRet: 1,
            archMap: [
                // Docker also lists x32, whose copy of every rule doubles the
                // program and its load time at each start; without it, an
                // x32 call kills the process (x32 programs are all but extinct).
                ArchitectureMap(architecture: "SCMP_ARCH_X86_64", subArchitectures: ["SCMP_ARCH_X86"]),
                ArchitectureMap(architecture: "SCMP_ARCH_AARCH64", subArchitectures: ["SCMP_ARCH_ARM"]),
                ArchitectureMap(architecture: "SCMP_ARCH_PPC64LE", subArchitectures: ["SCMP_ARCH_PPC64", "SCMP_ARCH_PPC"]),
                ArchitectureMap(architecture: "SCMP_ARCH_S390X", subArchitectures: ["SCMP_ARCH_S390"]),
                ArchitectureMap(architecture: "SCMP_ARCH_RISCV64", subArchitectures: []),
            ],
            syscalls: rules)
    }()

    /// Calls a capability makes safe to allow.
    private static let byCapability: [(String, [String])] = [
        ("CAP_SYS_ADMIN", ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                           "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
                           "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
                           "syslog", "umount", "umount2", "unshare"]),
        ("CAP_SYS_BOOT", ["reboot"]),
        ("CAP_SYS_CHROOT", ["chroot"]),
        ("CAP_SYS_MODULE", ["delete_module", "init_module", "finit_module"]),
        ("CAP_SYS_PACCT", ["acct"]),
        ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
        ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
        ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
        ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
        ("CAP_SYS_NICE", ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
        ("CAP_SYSLOG", ["syslog"]),
        ("CAP_BPF", ["bpf"]),
        ("CAP_PERFMON", ["perf_event_open"]),
    ]

    /// Calls every container may make, whatever its arguments.
    private static let allowed: [String] = [
        // Files and descriptors.
        "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range", "creat", "dup", "dup2",
        "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
        "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
        "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
        "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr",
        "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "ioctl", "lchown", "lchown32",
        "lgetxattr", "link", "linkat", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat",
        "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pipe", "pipe2",
        "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
        "readv", "removexattr", "rename", "renameat", "renameat2", "rmdir", "sendfile", "sendfile64", "setxattr", "splice",
        "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee",
        "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
        "vmsplice", "write", "writev",
        // Asynchronous I/O and event notification.
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
        "epoll_wait_old", "eventfd", "eventfd2", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64", "io_setup", "io_submit", "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64",
        "select", "_newselect", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
        "timerfd_settime", "timerfd_settime64",
        // Memory.
        "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock",
        "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap",
        "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages",
        // Processes, threads and signals.
        "alarm", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex", "futex_requeue",
        "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "get_robust_list", "get_thread_area", "getcpu",
        "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
        "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32",
        "getrlimit", "getrusage", "getsid", "gettid", "getuid", "getuid32", "ioprio_get", "ioprio_set", "kill",
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "pause", "pidfd_open",
        "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "restart_syscall", "rseq", "rt_sigaction",
        "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min",
        "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
        "sched_yield", "seccomp", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32",
        "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
        "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
        "setrlimit", "setsid", "setuid", "setuid32", "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill",
        "ugetrlimit", "vfork", "wait4", "waitid", "waitpid",
        // Time.
        "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
        "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "gettimeofday", "nanosleep", "time",
        "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
        "timer_settime64", "times",
        // Sockets.
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recv", "recvfrom",
        "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
        "socketcall", "socketpair",
        // System V and POSIX IPC.
        "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
        "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop",
        "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
        // The system, read-only.
        "getrandom", "sysinfo", "uname",
    ]
}
