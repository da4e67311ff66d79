#ifndef GANTRY_SYSTEM_H
#define GANTRY_SYSTEM_H

#include <stdint.h>
#include <sys/types.h>

/// Flags for `gantry_openat2`'s `resolve` argument (see openat2(2)).
#define GANTRY_RESOLVE_NO_XDEV       0x01
#define GANTRY_RESOLVE_NO_MAGICLINKS 0x02
#define GANTRY_RESOLVE_NO_SYMLINKS   0x04
#define GANTRY_RESOLVE_BENEATH       0x08
#define GANTRY_RESOLVE_IN_ROOT       0x10

/// Flags for `gantry_renameat2`.
#define GANTRY_RENAME_NOREPLACE 0x1
#define GANTRY_RENAME_EXCHANGE  0x2

/// openat2(2): open `path` relative to `dirfd` with path-resolution
/// restrictions. Returns the new descriptor, or -1 with errno set.
/// Retries EINTR and EAGAIN (the latter happens under concurrent renames).
int gantry_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

/// renameat2(2). Returns 0, or -1 with errno set.
int gantry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

/// The calling thread's errno.
int gantry_errno(void);

/// Whether `path` is on a file system kept in memory (tmpfs or ramfs):
/// 1 if it is, 0 if not, -1 with errno set when it cannot be told.
int gantry_is_in_memory(const char *path);



#include <sys/types.h>
/// makedev(3), which is a macro in glibc.
dev_t gantry_makedev(unsigned int major, unsigned int minor);

/// O_PATH, SEEK_DATA and SEEK_HOLE, which glibc declares only for _GNU_SOURCE.
extern const int GANTRY_O_PATH;
extern const int GANTRY_SEEK_DATA;
extern const int GANTRY_SEEK_HOLE;

/// fsetxattr(2). Returns 0, or -1 with errno set.
int gantry_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags);

/// flistxattr(2) and fgetxattr(2).
ssize_t gantry_flistxattr(int fd, char *list, size_t size);
ssize_t gantry_fgetxattr(int fd, const char *name, void *value, size_t size);

/// llistxattr(2) and lgetxattr(2), which do not follow symlinks.
ssize_t gantry_llistxattr(const char *path, char *list, size_t size);
ssize_t gantry_lgetxattr(const char *path, const char *name, void *value, size_t size);

/// copy_file_range(2) between explicit offsets, which it advances.
ssize_t gantry_copy_file_range_at(int from, int64_t *from_offset, int to, int64_t *to_offset, size_t length);

/// fremovexattr(2).
int gantry_fremovexattr(int fd, const char *name);

/// Makes a new namespace of `type` (CLONE_NEWNET, CLONE_NEWIPC or
/// CLONE_NEWUTS, whose host name becomes `hostname` when not NULL) and binds
/// it onto `path` (an existing file), so that it lives until unmounted. The
/// work happens on a thread of its own, so the caller's thread never changes
/// namespace. Returns 0, or -1 with errno set.
int gantry_namespace_create(const char *path, int type, const char *hostname);

/// Writes `value` to the file `path` (under /proc/sys/net) as seen from the
/// network namespace `netns_fd`, on a thread of its own. Returns 0, or -1
/// with errno set.
int gantry_write_in_netns(int netns_fd, const char *path, const char *value);

/// socket(2) in the network namespace `netns_fd` (a descriptor of a
/// namespace file), made on a thread of its own: the socket stays in that
/// namespace. Returns the descriptor (close-on-exec), or -1 with errno set.
int gantry_socket_in_netns(int netns_fd, int domain, int type, int protocol);

/// Enters the network namespace `fd` names (a namespace file, or a pidfd
/// for the process's) from a process that is not root: its owning user
/// namespace first, as root there. For a process of one thread only.
int gantry_enter_owned_network_namespace(int fd);

/// socket(2) made by a child process in the network namespace `netns_fd`
/// and its owning user namespace. Returns the descriptor or -1 with errno.
int gantry_socket_in_owned_netns(int netns_fd, int domain, int type, int protocol);

/// A new network namespace (loopback up) owned by the user namespace
/// `userns_fd`, made by a child process that shares this one's memory and
/// descriptors and joins that namespace as its root; its descriptor
/// (close-on-exec), or -1 with errno.
int gantry_make_network_namespace_in(int userns_fd);

/// Writes `value` to `path` (a /proc/sys/net setting) from a child process
/// in the network namespace `netns_fd` and its owner. Returns 0 or -1.
int gantry_write_in_owned_netns(int netns_fd, const char *path, const char *value);

/// Starts the holder of an ordinary user's network host: a process (not a
/// child of the caller's) in the user namespace `userns_fd` and new network
/// and mount namespaces, which makes `marker` on a private tmpfs at /tmp,
/// turns forwarding on and IPv6 off, brings loopback up and executes
/// `program` (sleep) for ever. Returns its pid, or -1 with errno and
/// `message` naming the step that failed.
pid_t gantry_spawn_network_host(int userns_fd, const char *program, const char *marker, char *message, size_t message_size);

/// In the user namespace `userns_fd` and mount namespace `mntns_fd` of a
/// network host: with `type` 0, unmounts and removes the namespace file
/// `path`; otherwise makes a namespace of `type` (CLONE_NEWNET, _NEWIPC,
/// _NEWUTS with `hostname`) and binds it at `path`. Returns 0 or -1.
int gantry_network_host_namespace(int userns_fd, int mntns_fd, int type, const char *path, const char *hostname);

/// An overlay file system for a container that root gives a user namespace:
/// made detached (new mount API) by the caller, root of the host, with
/// `layers` (top first) ID-mapped through `userns_fd` and the upper and
/// work directories as they are. Returns the mount's descriptor, or -1.
int gantry_idmapped_overlay(const char *const layers[], size_t count, const char *upper, const char *work, int userns_fd,
                            int volatile_upper);

/// An overlay file system (lower directories colon-separated, top first,
/// with `userxattr`) made detached by a child process as the root of the
/// user namespace `userns_fd`, for a process that is not root to reach a
/// stopped container's files. Returns the mount's descriptor, or -1.
int gantry_overlay_in_user_namespace(int userns_fd, const char *lower, const char *upper, const char *work, int readonly);

/// Gives an overlay file system context (from fsopen) its lower layers, a
/// colon-separated list, top-most first: one "lowerdir+" each, as kernels
/// from 6.8 take them, since fsconfig reads at most 256 bytes of one value;
/// where "lowerdir+" is unknown, the list in one "lowerdir". 0, or -1 with errno.
int gantry_overlay_set_lower(int fs, const char *lower);

/// Mounts an overlay file system at `target` with `options` as mount(2)
/// takes them ("lowerdir=A:B,upperdir=…,workdir=…,volatile") and `flags`
/// (MS_RDONLY, MS_NOSUID, MS_NODEV). mount(2) reads at most a page of
/// options, which the lower directories of an image of some forty layers
/// exceed: longer options go through fsopen, one "lowerdir+" per layer
/// (kernels from 6.8), or, before, through mount(2) with the layers named
/// relative to their common parent, made the working directory meanwhile
/// (about sixty fit; E2BIG beyond). Allocates nothing, so that a child
/// sharing its parent's memory (but not its working directory) may call
/// it. 0, or -1 with errno.
int gantry_mount_overlay(const char *options, const char *target, unsigned long flags);

/// Runs `argv` (argv[0] a path) in the network namespace `netns_fd` and
/// its owner, with `input` on its standard input; its output and error
/// come back in the buffers. Returns its exit status, or -1 with errno.
int gantry_run_in_owned_netns(int netns_fd, char *const argv[], const char *input, char *output, size_t output_size,
                              char *message, size_t message_size);

/// Gives the calling thread a mount namespace of its own, with every mount
/// private, so that what it mounts is seen by no one else and goes with the
/// thread. Returns 0, or -1 with errno set.
int gantry_unshare_mounts(void);

/// Gives the calling thread a descriptor table of its own, holding only
/// standard input, output and error: what it opens then gets the lowest
/// numbers, however many descriptors the rest of the process has, and
/// nothing of the process's stays open through it. Returns 0, or -1 with
/// errno set.
int gantry_unshare_descriptors(void);

/// Adds to `actions` (a `posix_spawn_file_actions_t`) the closing of every
/// descriptor from `from` up in the child (glibc's
/// posix_spawn_file_actions_addclosefrom_np). Returns 0 or an error number.
int gantry_spawn_close_from(void *actions, int from);

/// pipe2(O_CLOEXEC).
int gantry_pipe(int fds[2]);

/// Puts a terminal into raw mode, saving its settings in `saved` (a buffer of
/// at least 64 bytes) for gantry_terminal_restore. Returns 0, or -1 with errno.
int gantry_terminal_raw(int fd, void *saved, size_t size);
int gantry_terminal_restore(int fd, const void *saved);
/// The size of a terminal, or 0s.
void gantry_terminal_size(int fd, unsigned short *rows, unsigned short *columns);

/// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC).
int gantry_socketpair(int fds[2]);
/// Receives one descriptor sent with SCM_RIGHTS (close-on-exec), without
/// waiting; returns it, or -1 with errno set.
int gantry_receive_fd(int socket);

/// A monotonic timerfd (close-on-exec, non-blocking) that fires once after
/// `nanoseconds` (at least 1).
int gantry_timer(uint64_t nanoseconds);
/// Re-arms a timer to fire once after `nanoseconds` (at least 1).
int gantry_timer_set(int fd, uint64_t nanoseconds);

/// memfd_create(name, MFD_CLOEXEC).
int gantry_memfd(const char *name);

/// waitid(P_PIDFD) for one child: returns 0 with the exit status decoded
/// (`code` for an exit, `signal` for a signal), or -1 with errno set.
/// With `nohang`, returns 1 when the child has not exited.
int gantry_wait_pidfd(int pidfd, int nohang, int *exited_code, int *signal);

/// pidfd_open(2), close-on-exec.
int gantry_pidfd_open(pid_t pid);

/// pidfd_send_signal(2).
int gantry_pidfd_signal(int pidfd, int signal);

/// epoll, with the packed struct kept on the C side.
int gantry_epoll_create(void);
/// Watches `fd` for readability once (EPOLLONESHOT).
int gantry_epoll_add_oneshot(int epoll, int fd);
/// Watches `fd` for readability once more (after EPOLLONESHOT fired).
int gantry_epoll_rearm(int epoll, int fd);
int gantry_epoll_delete(int epoll, int fd);
/// Waits for events; fills `fds` with the ready descriptors. Returns their
/// number, or -1 with errno set.
int gantry_epoll_wait(int epoll, int *fds, int capacity, int timeout_ms);

/// One entry of a device allow list. `type` is 'a' (any), 'b' (block) or
/// 'c' (character); `major` and `minor` are -1 for any; `access` is a mask
/// of 1 (mknod), 2 (read) and 4 (write), as the kernel's device cgroup
/// context spells them.
struct gantry_device_rule {
    char type;
    int64_t major;
    int64_t minor;
    unsigned access;
};

/// Loads a BPF_CGROUP_DEVICE program that allows an access when one of
/// `rules` covers it (its type, numbers and every access asked for) and
/// denies any other, and attaches it to the cgroup2 directory `cgroup_fd`
/// beside the programs above it (BPF_F_ALLOW_MULTI: all must allow).
/// Returns 0, or -1 with errno set; the kernel verifier's complaint, if
/// any, is left in `log`.
int gantry_device_filter_attach(int cgroup_fd, const struct gantry_device_rule *rules, size_t count, char *log, size_t log_size);

// MARK: - User namespaces

/// How a new user namespace's IDs map to the host's.
struct gantry_id_maps {
    /// `inside outside count` lines, for uid_map and gid_map.
    const char *uid_map;
    const char *gid_map;
    /// newuidmap and newgidmap, which write maps of subordinate IDs the
    /// caller may use; NULL: the maps are written directly, which the
    /// kernel allows a process that is not root only for its own IDs.
    const char *uid_helper;
    const char *gid_helper;
    /// Written directly: deny setgroups first (required for a gid_map
    /// written by a process without CAP_SETGID).
    int deny_setgroups;
};

/// Runs `argv[0]` (a path) with `argv` (NULL-terminated), its standard
/// input and output /dev/null, its standard error left in `message`
/// (NUL-terminated), and waits for it. Returns 0 when it exited with 0;
/// otherwise -1 with errno set.
int gantry_run_program(char *const argv[], char *message, size_t message_size);

/// Writes the ID maps of the user namespace that the process `pid` has
/// just made. Returns 0, or -1 with errno set; a helper's complaint is left
/// in `message` (NUL-terminated; empty when there is none).
int gantry_write_id_maps(pid_t pid, const struct gantry_id_maps *maps, char *message, size_t message_size);

/// Makes a user namespace with `maps` (a child process makes it and ends)
/// and returns a descriptor that keeps it, to start processes in; -1 with
/// errno set (and a helper's complaint in `message`) when it cannot.
int gantry_make_user_namespace(const struct gantry_id_maps *maps, char *message, size_t message_size);

/// An owner to give a file, by its path beneath a directory.
struct gantry_owner_entry {
    const char *path;
    uint32_t uid;
    uint32_t gid;
    /// Permission bits to set once the owner is set (which clears set-ID
    /// bits), or -1.
    int32_t mode;
    /// A `security.capability` value to set once the owner is set, or NULL.
    const void *capability;
    size_t capability_size;
};

#define GANTRY_USER_NAMESPACE_CHOWN 1
#define GANTRY_USER_NAMESPACE_REMOVE 2
#define GANTRY_USER_NAMESPACE_SEED 3

/// Work done as the root of a new user namespace.
struct gantry_user_namespace_task {
    int operation;
    /// The directory the paths are beneath.
    int directory;
    /// GANTRY_USER_NAMESPACE_CHOWN: owners to give, in order.
    const struct gantry_owner_entry *entries;
    size_t entry_count;
    /// GANTRY_USER_NAMESPACE_REMOVE: the name in `directory` to remove
    /// with everything below it. GANTRY_USER_NAMESPACE_SEED: the path in
    /// the layers whose content is copied into `directory`.
    const char *name;
    /// GANTRY_USER_NAMESPACE_SEED: an overlay's options (its lower
    /// directories) and a directory to mount it on, in a mount namespace
    /// of the child's own; without options, the directory is the root.
    const char *overlay_options;
    const char *mount_point;
};

#define GANTRY_USER_NAMESPACE_STAGE_UNSHARE 1
#define GANTRY_USER_NAMESPACE_STAGE_MAPS 2
#define GANTRY_USER_NAMESPACE_STAGE_TASK 3

struct gantry_user_namespace_result {
    /// Where it failed (a GANTRY_USER_NAMESPACE_STAGE_*), and the errno.
    int stage;
    int error;
    /// With CHOWN: the entry that failed, or -1.
    int failed_index;
    /// A map helper's complaint.
    char message[512];
};

/// Does `task` in a child process that makes a new user namespace with
/// `maps` and becomes its root: paths are resolved beneath the directory
/// and no symlink is followed. Returns 0, or -1 with `result` saying why.
int gantry_in_user_namespace(const struct gantry_id_maps *maps, const struct gantry_user_namespace_task *task,
                             struct gantry_user_namespace_result *result);

#endif
