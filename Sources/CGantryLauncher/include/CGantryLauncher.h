#ifndef GANTRY_LAUNCHER_H
#define GANTRY_LAUNCHER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// Namespace flags for `gantry_launch_plan.clone_flags` (as in <sched.h>).
#define GANTRY_CLONE_NEWNS     0x00020000ULL
#define GANTRY_CLONE_NEWCGROUP 0x02000000ULL
#define GANTRY_CLONE_NEWUTS    0x04000000ULL
#define GANTRY_CLONE_NEWIPC    0x08000000ULL
#define GANTRY_CLONE_NEWUSER   0x10000000ULL
#define GANTRY_CLONE_NEWPID    0x20000000ULL
#define GANTRY_CLONE_NEWNET    0x40000000ULL

/// Makes a network namespace with its loopback device up: the calling
/// thread unshares into it and returns to its own. Returns a descriptor of
/// it; -1 (errno set) if it could not be made; -2 if the thread could not
/// return to its own namespace (it is left in the new one, and must not be
/// used for anything else).
int gantry_make_network_namespace(void);

/// How one mount in the container is made. Paths are inside the new root,
/// resolved with openat2(RESOLVE_IN_ROOT) so that no symlink in the image
/// can point a mount outside it.
enum gantry_mount_kind {
    /// mount(source, target, fstype, flags, data) of a new file system.
    GANTRY_MOUNT_FILESYSTEM = 0,
    /// A bind mount of `source` (a host path, or a path in the new root when
    /// `source_in_root` is set) onto `target`, then remounted with `flags`.
    GANTRY_MOUNT_BIND = 1,
    /// A symlink `target` -> `source`.
    GANTRY_MOUNT_SYMLINK = 2,
};

struct gantry_mount {
    int kind;
    const char *source;
    const char *target;
    const char *fstype;
    const char *data;
    unsigned long flags;
    /// Whether `target` is a directory (1) or a file (0), for creating it.
    int directory;
};

struct gantry_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/// Everything the child needs, fully allocated before the clone: the child
/// reads it and calls the kernel, nothing else.
struct gantry_launch_plan {
    /// Candidate paths for the executable, tried in order (PATH search).
    const char *const *executables;
    size_t executable_count;
    char *const *argv;
    char *const *envp;
    const char *cwd;

    uint64_t clone_flags;
    /// For cgroup v2: a descriptor of the cgroup directory (CLONE_INTO_CGROUP), or -1.
    int cgroup_fd;
    /// For cgroup v1: descriptors of `tasks` files the child writes itself (0) to.
    const int *cgroup_tasks_fds;
    size_t cgroup_tasks_count;

    /// With CLONE_NEWUSER: the contents the parent writes to uid_map and
    /// gid_map before letting the child go on (setgroups stays allowed, for
    /// the child to drop the host's groups).
    const char *uid_map;
    const char *gid_map;
    /// newuidmap and newgidmap, to write the maps with (a parent that is
    /// not root mapping subordinate IDs), or NULL.
    const char *uid_map_helper;
    const char *gid_map_helper;
    /// A user namespace to start in, or -1: the child enters it and makes
    /// the other namespaces of `clone_flags` there (through a child of its
    /// own, which goes on as the launched process), instead of a new one
    /// with maps. (A launcher that is not root keeps one for all its
    /// containers, made once with newuidmap and newgidmap.)
    int user_namespace_fd;
    /// A program the parent runs once the maps are written, before the
    /// child goes on, with the child's pid appended to these arguments
    /// (NULL-terminated, the first a path): a user-mode network stack
    /// attaching to the child's namespaces. It must exit with 0, once ready.
    char *const *network_helper;
    /// The parent denies setgroups before writing the maps (required of a
    /// parent without CAP_SETGID writing a single mapping): the child
    /// keeps the groups it has, which the namespace does not map.
    int deny_setgroups;

    const char *hostname;
    /// Written by the parent to the child's oom_score_adj, or NULL. A value
    /// the kernel refuses (below the parent's own, without
    /// CAP_SYS_RESOURCE) leaves the inherited one.
    const char *oom_score_adj;

    /// The directory that becomes the root. With `overlay_options`, an
    /// overlay file system is mounted there first.
    const char *rootfs;
    const char *overlay_options;
    /// A detached mount (new mount API) to put at `rootfs` instead, or -1.
    int rootfs_mount_fd;
    const struct gantry_mount *mounts;
    size_t mount_count;
    const char *const *masked_paths;
    size_t masked_count;
    const char *const *readonly_paths;
    size_t readonly_count;
    int readonly_rootfs;

    /// "net.ipv4.ip_forward=1"-style pairs as /proc/sys paths and values.
    const char *const *sysctl_paths;
    const char *const *sysctl_values;
    size_t sysctl_count;

    const struct gantry_rlimit *rlimits;
    size_t rlimit_count;

    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t group_count;

    uint64_t cap_bounding;
    uint64_t cap_effective;
    uint64_t cap_permitted;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;
    int no_new_privs;

    /// A compiled seccomp BPF program (struct sock_filter[]), or NULL.
    const void *seccomp_filter;
    size_t seccomp_filter_length;

    /// Descriptors that become 0, 1 and 2 in the child.
    int stdin_fd;
    int stdout_fd;
    int stderr_fd;
    /// Make the child a session leader with stdin as its controlling terminal.
    int controlling_terminal;
    /// A socket to send a terminal's master over, or -1. The child opens a
    /// pseudo-terminal in its own /dev/pts (so that it is a terminal of the
    /// container, named there), sends the master through this socket, and
    /// makes the slave its stdio and controlling terminal.
    int console_socket;

    /// A signal the process gets when the thread that launched it ends (0: none).
    int parent_death_signal;
    /// Run a tiny init as the process: it forks the program, reaps every
    /// zombie, forwards signals to the program and exits as it does. 1:
    /// every signal is forwarded; 2: only those the program handles, so
    /// that it behaves as its namespace's first process would (the kernel
    /// keeps a first process from signals it does not handle).
    int init;
    /// With `init`: a descriptor of a file (close-on-exec: the program
    /// never has it) that the init writes the program's end to before it
    /// exits, as `exited N` or `signaled N`, for whoever opens the state
    /// root next. -1: none.
    int exit_record_fd;
    /// With `init`: pipes (their read ends; the program's stdout and stderr
    /// are the write ends) whose data the init copies to log files as it
    /// comes, at most GANTRY_RELAY_STREAMS_MAX. `log_fds` holds
    /// `log_file_count` files per pipe (at most GANTRY_RELAY_FILES_MAX),
    /// the pipe's together, the current one first and then the older ones.
    /// When writing would take the current file past `log_max_size` bytes
    /// (0: never), the files move along first: the current one's content
    /// goes to the second, the second's to the third, and so on, the
    /// oldest's is dropped, and the current one starts empty.
    const int *relay_fds;
    size_t relay_count;
    const int *log_fds;
    size_t log_file_count;
    uint64_t log_max_size;

    /// To start a process inside a running container: a pidfd of a process
    /// in it, and the namespaces (CLONE_NEW* flags) to join through it.
    /// The process is also made non-dumpable before it joins. -1: none.
    int join_pidfd;
    uint64_t join_namespaces;

    /// Namespaces to start in rather than new ones: descriptors of
    /// namespace files (a pod's network namespace, say) and their CLONE_NEW*
    /// types. The launching thread enters them for the clone and returns.
    /// Only namespaces a thread may enter alone: network, IPC, UTS, cgroup.
    const int *namespace_fds;
    const uint64_t *namespace_types;
    size_t namespace_count;
};

/// The most output streams an init relays, and log files per stream.
#define GANTRY_RELAY_STREAMS_MAX 2
#define GANTRY_RELAY_FILES_MAX 16

/// Where a launch failed: the step and the errno.
struct gantry_launch_failure {
    int stage;
    int error;
    /// What newuidmap, newgidmap or the network helper said when they
    /// failed, NUL-terminated.
    char message[256];
};

/// The steps of a launch, as reported in `gantry_launch_failure.stage`.
enum gantry_launch_stage {
    GANTRY_STAGE_NONE = 0,
    GANTRY_STAGE_PIPE, GANTRY_STAGE_CLONE, GANTRY_STAGE_CGROUP, GANTRY_STAGE_ID_MAPS, GANTRY_STAGE_SYNC,
    GANTRY_STAGE_SIGNALS, GANTRY_STAGE_SESSION, GANTRY_STAGE_MOUNT_PRIVATE, GANTRY_STAGE_ROOTFS, GANTRY_STAGE_MOUNTS,
    GANTRY_STAGE_PIVOT_ROOT, GANTRY_STAGE_MASKED_PATHS, GANTRY_STAGE_READONLY_PATHS, GANTRY_STAGE_SYSCTL,
    GANTRY_STAGE_READONLY_ROOTFS, GANTRY_STAGE_HOSTNAME, GANTRY_STAGE_RLIMITS, GANTRY_STAGE_CWD, GANTRY_STAGE_STDIO,
    GANTRY_STAGE_CLOSE_FDS, GANTRY_STAGE_CAPABILITIES, GANTRY_STAGE_USER, GANTRY_STAGE_NO_NEW_PRIVS,
    GANTRY_STAGE_SECCOMP, GANTRY_STAGE_EXEC, GANTRY_STAGE_JOIN, GANTRY_STAGE_INIT, GANTRY_STAGE_PARENT_DEATH,
    GANTRY_STAGE_LOOPBACK, GANTRY_STAGE_OOM_SCORE, GANTRY_STAGE_NETWORK,
};

/// A human-readable name for a stage.
const char *gantry_launch_stage_name(int stage);

/// Launches the process the plan describes. On success returns 0 and
/// fills the child's pid and a pidfd (close-on-exec); the child has
/// executed the program. When the clone made a mount namespace and
/// `mount_namespace` is not NULL, it receives a descriptor of that
/// namespace (close-on-exec), taken right after the clone, or -1 (when the
/// child had ended already): a caller holding it keeps the container's
/// mounts until it closes it, so that their teardown happens where it
/// closes it rather than in the exiting process. On failure returns -1 and fills `failure`; any child
/// has been reaped.
///
/// Thread-safe; all signals are blocked in the calling thread around the
/// clone. The child is created with no exit signal, so a host's SIGCHLD
/// handler or `waitpid(-1)` never sees it; reap it with
/// `waitid(P_PIDFD, pidfd, …, WEXITED | __WALL)`.
int gantry_launch(const struct gantry_launch_plan *plan, pid_t *pid, int *pidfd, int *mount_namespace,
                  struct gantry_launch_failure *failure);

/// Blocks every signal in the calling thread (for threads that only launch:
/// no handler then runs on them and no call of theirs is interrupted).
void gantry_block_signals(void);

#endif
