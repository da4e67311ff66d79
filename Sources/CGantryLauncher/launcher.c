// The launcher: clones a process into new namespaces and prepares it to run
// a container's program. After the clone the child runs raw system calls
// only (no allocation, no locks, no libc functions that keep state), since
// the parent is a multithreaded Swift process.
#define _GNU_SOURCE
#define _XOPEN_SOURCE 600
#include "CGantryLauncher.h"
#include "CGantrySystem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/// The child's stack when it shares the parent's memory.
#define CHILD_STACK_SIZE (256 * 1024)

/// Every namespace flag.
#define NAMESPACE_FLAGS (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

_Static_assert(sizeof(struct clone_args) >= 88, "struct clone_args lacks the cgroup field");
_Static_assert(GANTRY_CLONE_NEWNS == CLONE_NEWNS && GANTRY_CLONE_NEWCGROUP == CLONE_NEWCGROUP && GANTRY_CLONE_NEWUTS == CLONE_NEWUTS &&
               GANTRY_CLONE_NEWIPC == CLONE_NEWIPC && GANTRY_CLONE_NEWUSER == CLONE_NEWUSER && GANTRY_CLONE_NEWPID == CLONE_NEWPID &&
               GANTRY_CLONE_NEWNET == CLONE_NEWNET, "namespace flags");

const char *gantry_launch_stage_name(int stage) {
    static const char *const names[] = {
        "none", "pipe", "clone", "cgroup", "id maps", "sync", "signals", "session", "mount namespace", "root file system",
        "mounts", "pivot_root", "masked paths", "read-only paths", "sysctl", "read-only root", "hostname", "rlimits",
        "working directory", "stdio", "close descriptors", "capabilities", "user", "no_new_privs", "seccomp", "exec",
        "join namespaces", "init", "parent death signal", "loopback", "oom score", "network",
    };
    if (stage < 0 || stage >= (int)(sizeof(names) / sizeof(names[0]))) return "unknown";
    return names[stage];
}

// MARK: - Child helpers (async-signal-safe)

__attribute__((noreturn))
static void child_fail(int fd, int stage) {
    struct gantry_launch_failure failure = { .stage = stage, .error = errno };
    ssize_t ignored = write(fd, &failure, sizeof(failure));
    (void)ignored;
    _exit(127);
}

static size_t child_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/// Writes "/proc/self/fd/<fd>" into `buffer` (at least 32 bytes).
static void proc_fd_path(char *buffer, int fd) {
    const char *prefix = "/proc/self/fd/";
    size_t n = 0;
    while (prefix[n]) { buffer[n] = prefix[n]; n++; }
    char digits[16];
    int d = 0;
    unsigned int value = (unsigned int)fd;
    do { digits[d++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (d) buffer[n++] = digits[--d];
    buffer[n] = 0;
}

static int open_in_root(int root_fd, const char *path, int flags) {
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .mode = 0, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    for (;;) {
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
        if (fd >= 0 || (errno != EINTR && errno != EAGAIN)) return (int)fd;
    }
}

/// Makes `path` (inside the root) exist, creating missing directories, and
/// the last component as a directory or an empty file. Returns a descriptor
/// of it (O_PATH, or write-only for a file it has just made), or -1.
static int ensure_in_root(int root_fd, const char *path, int directory) {
    // Most targets exist already (in the image or made by an earlier mount).
    int existing = open_in_root(root_fd, path, O_PATH);
    if (existing >= 0 || errno != ENOENT) return existing;
    char prefix[4096];
    size_t length = child_strlen(path);
    if (length >= sizeof(prefix)) { errno = ENAMETOOLONG; return -1; }
    // Next most often only the last component is missing (a node in a
    // fresh /dev): made in its parent, and opened there without following
    // a link. Anything else takes the walk below.
    while (length > 1 && path[length - 1] == '/') length--;
    size_t slash = length;
    while (slash > 0 && path[slash - 1] != '/') slash--;
    if (slash > 0 && slash < length && length - slash < 256) {
        for (size_t k = 0; k < slash; k++) prefix[k] = path[k];
        prefix[slash] = 0;
        int parent_fd = open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY);
        if (parent_fd >= 0) {
            char name[256];
            for (size_t k = slash; k < length; k++) name[k - slash] = path[k];
            name[length - slash] = 0;
            int fd;
            if (directory) {
                fd = mkdirat(parent_fd, name, 0755) == 0 ? openat(parent_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
            } else {
                // The new, empty file itself is the mount target.
                fd = openat(parent_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            }
            int saved = errno;
            close(parent_fd);
            if (fd >= 0) return fd;
            errno = saved;
        }
        length = child_strlen(path);
    }
    size_t i = 0;
    while (i < length) {
        while (i < length && path[i] == '/') i++;
        size_t start = i;
        while (i < length && path[i] != '/') i++;
        if (i == start) break;
        int last = (i >= length) || (i + 1 >= length && path[i] == '/');
        for (size_t k = 0; k < i; k++) prefix[k] = path[k];
        prefix[i] = 0;
        int fd = open_in_root(root_fd, prefix, O_PATH);
        if (fd >= 0) {
            if (last) return fd;
            close(fd);
            continue;
        }
        if (errno != ENOENT) return -1;
        // Create the component in its (resolved) parent.
        char parent[4096];
        size_t p = start;
        for (size_t k = 0; k < p; k++) parent[k] = path[k];
        parent[p] = 0;
        int parent_fd = p ? open_in_root(root_fd, parent, O_PATH | O_DIRECTORY) : open_in_root(root_fd, "/", O_PATH | O_DIRECTORY);
        if (parent_fd < 0) return -1;
        char name[256];
        size_t name_length = i - start;
        if (name_length >= sizeof(name)) { close(parent_fd); errno = ENAMETOOLONG; return -1; }
        for (size_t k = 0; k < name_length; k++) name[k] = path[start + k];
        name[name_length] = 0;
        int made;
        if (!last || directory) {
            made = mkdirat(parent_fd, name, 0755);
        } else {
            int file = openat(parent_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            made = file < 0 ? -1 : 0;
            if (file >= 0) close(file);
        }
        close(parent_fd);
        if (made < 0 && errno != EEXIST) return -1;
        fd = open_in_root(root_fd, prefix, O_PATH);
        if (fd < 0) return -1;
        if (last) return fd;
        close(fd);
    }
    return open_in_root(root_fd, "/", O_PATH);
}

static int mount_at_fd(const char *source, int target_fd, const char *fstype, unsigned long flags, const char *data) {
    char target[32];
    proc_fd_path(target, target_fd);
    return mount(source, target, fstype, flags, data);
}

/// mount_setattr(AT_RECURSIVE): makes a mount and every mount under it
/// read-only, nosuid, nodev or noexec as `flags` asks.
static int set_recursive_attributes(int fd, unsigned long flags) {
    struct { uint64_t set, clear, propagation, userns; } attributes = { 0, 0, 0, 0 };
    if (flags & MS_RDONLY) attributes.set |= 0x00000001;   // MOUNT_ATTR_RDONLY
    if (flags & MS_NOSUID) attributes.set |= 0x00000002;   // MOUNT_ATTR_NOSUID
    if (flags & MS_NODEV) attributes.set |= 0x00000004;    // MOUNT_ATTR_NODEV
    if (flags & MS_NOEXEC) attributes.set |= 0x00000008;   // MOUNT_ATTR_NOEXEC
    return (int)syscall(442 /* SYS_mount_setattr */, fd, "", AT_EMPTY_PATH | 0x8000 /* AT_RECURSIVE */, &attributes, sizeof(attributes));
}

static int apply_mount(int root_fd, const struct gantry_mount *m) {
    if (m->kind == GANTRY_MOUNT_SYMLINK) {
        // The parent is resolved inside the root: an image's /dev may be a
        // symlink to anywhere.
        char parent[4096];
        size_t length = child_strlen(m->target), slash = length;
        while (slash > 0 && m->target[slash - 1] != '/') slash--;
        if (slash >= sizeof(parent) || slash == length) { errno = EINVAL; return -1; }
        for (size_t k = 0; k < slash; k++) parent[k] = m->target[k];
        parent[slash] = 0;
        int parent_fd = ensure_in_root(root_fd, slash ? parent : "/", 1);
        if (parent_fd < 0) return -1;
        int made = symlinkat(m->source, parent_fd, m->target + slash);
        int saved = errno;
        close(parent_fd);
        errno = saved;
        return (made < 0 && errno != EEXIST) ? -1 : 0;
    }
    int target = ensure_in_root(root_fd, m->target, m->directory);
    if (target < 0) return -1;
    int result;
    if (m->kind == GANTRY_MOUNT_FILESYSTEM) {
        result = mount_at_fd(m->source, target, m->fstype, m->flags, m->data);
    } else {
        result = mount_at_fd(m->source, target, NULL, MS_BIND | MS_REC, NULL);
        unsigned long remount = m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
        unsigned long propagation = m->flags & (MS_PRIVATE | MS_SLAVE | MS_REC);
        if (result == 0 && (remount || propagation)) {
            // Reopen: the old descriptor refers to what lies under the new mount.
            close(target);
            target = open_in_root(root_fd, m->target, O_PATH);
            if (target < 0) return -1;
            // On every mount of the bound tree, not only its top.
            if (remount) result = set_recursive_attributes(target, remount);
            if (result == 0 && (propagation & (MS_PRIVATE | MS_SLAVE))) result = mount_at_fd(NULL, target, NULL, propagation, NULL);
        }
    }
    int saved = errno;
    close(target);
    errno = saved;
    return result;
}

static int mask_path(const char *path) {
    int fd = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    int result = fstat(fd, &st);
    if (result == 0) {
        if (S_ISDIR(st.st_mode)) {
            result = mount_at_fd("tmpfs", fd, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0k");
        } else {
            result = mount_at_fd("/dev/null", fd, NULL, MS_BIND, NULL);
        }
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

static int readonly_path(const char *path) {
    int fd = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    int result = mount_at_fd(path, fd, NULL, MS_BIND | MS_REC, NULL);
    if (result == 0) {
        // Reopen: the old descriptor refers to what lies under the new mount.
        close(fd);
        fd = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) return -1;
        result = mount_at_fd(NULL, fd, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

static int write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t length = child_strlen(value);
    ssize_t written = write(fd, value, length);
    int saved = errno;
    close(fd);
    errno = saved;
    return written == (ssize_t)length ? 0 : -1;
}

/// Enters the working directory, resolved inside the root and without magic
/// links (so that `/proc/self/fd/N` cannot lead out), creating it if missing.
static int make_working_directory(const char *cwd) {
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return -1;
    int fd = ensure_in_root(root, cwd, 1);
    close(root);
    if (fd < 0) return -1;
    struct stat st;
    int result = fstat(fd, &st);
    if (result == 0 && !S_ISDIR(st.st_mode)) { errno = ENOTDIR; result = -1; }
    if (result == 0) result = fchdir(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

/// The most descriptors a launch keeps open past the child's setup: the
/// error pipe, the init's exit record, and its relay's pipes and files.
#define KEPT_DESCRIPTORS_MAX (2 + GANTRY_RELAY_STREAMS_MAX * (1 + GANTRY_RELAY_FILES_MAX))

/// Closes every descriptor from `first` on but the `count` in `keep`
/// (negative ones are ignored).
static int close_descriptors_except(unsigned first, const int *keep, size_t count) {
    int sorted[KEPT_DESCRIPTORS_MAX];
    size_t kept = 0;
    for (size_t i = 0; i < count && kept < KEPT_DESCRIPTORS_MAX; i++) {
        if (keep[i] < (int)first) continue;
        size_t at = kept++;
        while (at > 0 && sorted[at - 1] > keep[i]) { sorted[at] = sorted[at - 1]; at--; }
        sorted[at] = keep[i];
    }
    for (size_t i = 0; i < kept; i++) {
        if ((unsigned)sorted[i] < first) continue;
        if ((unsigned)sorted[i] > first && syscall(SYS_close_range, first, (unsigned)sorted[i] - 1, 0) < 0) return -1;
        first = (unsigned)sorted[i] + 1;
    }
    return (int)syscall(SYS_close_range, first, ~0U, 0);
}

/// The descriptors the init keeps: its exit record and its relay's.
static size_t init_descriptors(const struct gantry_launch_plan *plan, int *into) {
    size_t count = 0;
    if (!plan->init) return 0;
    into[count++] = plan->exit_record_fd;
    for (size_t i = 0; i < plan->relay_count && i < GANTRY_RELAY_STREAMS_MAX; i++) {
        into[count++] = plan->relay_fds[i];
        for (size_t f = 0; f < plan->log_file_count && f < GANTRY_RELAY_FILES_MAX; f++) {
            into[count++] = plan->log_fds[i * plan->log_file_count + f];
        }
    }
    return count;
}

/// Closes every descriptor but stdio, `keep` and the init's, so that
/// nothing else of the host is reachable (as /proc/self/fd/N) while paths
/// of the container are looked up and executed. The init's are regular
/// files opened for writing only and the read ends of pipes, which no path
/// of the container can turn into a way out; the program's exec closes them.
static int close_host_descriptors(int keep, const struct gantry_launch_plan *plan) {
    int kept[KEPT_DESCRIPTORS_MAX];
    kept[0] = keep;
    size_t count = 1 + init_descriptors(plan, kept + 1);
    return close_descriptors_except(3, kept, count);
}

/// Refuses a program (or the interpreter its `#!` line names) that is a
/// magic link such as /proc/self/exe: executing it would run, inside the
/// container, a file of the host that the container could then rewrite.
/// (This process's root is the container's by now.)
static int check_executable(const char *path) {
    static char interpreter[256];
    static char head[256];
    const char *current = path;
    for (int depth = 0; depth < 2 && current; depth++) {
        struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_MAGICLINKS };
        int fd = (int)syscall(SYS_openat2, AT_FDCWD, current, &how, sizeof(how));
        if (fd < 0) {
            if (errno == ELOOP) errno = EACCES;
            return -1;
        }
        close(fd);
        if (depth == 1) break;
        struct open_how reading = { .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, .resolve = RESOLVE_NO_MAGICLINKS };
        int file = (int)syscall(SYS_openat2, AT_FDCWD, current, &reading, sizeof(reading));
        current = NULL;
        // Unreadable: the kernel cannot run it as a script either.
        if (file < 0) break;
        struct stat st;
        ssize_t n = 0;
        if (fstat(file, &st) == 0 && S_ISREG(st.st_mode)) n = read(file, head, sizeof(head) - 1);
        close(file);
        if (n > 2 && head[0] == '#' && head[1] == '!') {
            ssize_t i = 2;
            while (i < n && (head[i] == ' ' || head[i] == '\t')) i++;
            size_t j = 0;
            while (i < n && head[i] != ' ' && head[i] != '\t' && head[i] != '\n' && j < sizeof(interpreter) - 1) interpreter[j++] = head[i++];
            interpreter[j] = 0;
            if (j) current = interpreter;
        }
    }
    return 0;
}

static int set_capabilities(const struct gantry_launch_plan *plan) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2] = {
        { .effective = (uint32_t)plan->cap_effective, .permitted = (uint32_t)plan->cap_permitted, .inheritable = (uint32_t)plan->cap_inheritable },
        { .effective = (uint32_t)(plan->cap_effective >> 32), .permitted = (uint32_t)(plan->cap_permitted >> 32), .inheritable = (uint32_t)(plan->cap_inheritable >> 32) },
    };
    if (syscall(SYS_capset, &header, data) < 0) return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -1;
    for (int cap = 0; cap < 64; cap++) {
        if (!(plan->cap_ambient & (1ULL << cap))) continue;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0) return -1;
    }
    return 0;
}

static int install_seccomp(const struct gantry_launch_plan *plan) {
    if (!plan->seccomp_filter) return 0;
    struct sock_fprog program = { .len = (unsigned short)plan->seccomp_filter_length, .filter = (struct sock_filter *)plan->seccomp_filter };
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0);
}

/// Moves the three stdio descriptors to 0, 1 and 2, whatever numbers they
/// have now (they may themselves be 0–2).
static int setup_stdio(const struct gantry_launch_plan *plan, int terminal) {
    int sources[3] = { plan->stdin_fd, plan->stdout_fd, plan->stderr_fd };
    if (terminal >= 0) sources[0] = sources[1] = sources[2] = terminal;
    int high[3];
    for (int i = 0; i < 3; i++) {
        high[i] = fcntl(sources[i], F_DUPFD_CLOEXEC, 10);
        if (high[i] < 0) return -1;
    }
    for (int i = 0; i < 3; i++) {
        if (dup3(high[i], i, 0) < 0) return -1;
        close(high[i]);
    }
    return 0;
}

/// Opens a pseudo-terminal in the container's own devpts, sends its master
/// to the parent over `socket` (SCM_RIGHTS), and returns the slave.
static int open_console(int socket) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    int unlock = 0;
    int slave = -1;
    if (ioctl(master, TIOCSPTLCK, &unlock) == 0) slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) { int saved = errno; close(master); errno = saved; return -1; }
    char byte = 0;
    struct iovec data = { .iov_base = &byte, .iov_len = 1 };
    union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    memset(&control, 0, sizeof(control));
    struct msghdr message = { .msg_iov = &data, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof(control.buffer) };
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &master, sizeof(int));
    ssize_t sent;
    do { sent = sendmsg(socket, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    int saved = errno;
    close(master);
    if (sent != 1) { close(slave); errno = sent < 0 ? saved : EIO; return -1; }
    return slave;
}

/// The tiny init: forks; the child returns to exec the program, while this
/// process stays as its parent, reaping every process that ends and
/// forwarding every signal to the program, until the program ends.
/// Writes "exited N" or "signaled N" and a newline to the exit record.
static void record_exit(int fd, int status) {
    if (fd < 0) return;
    char text[32];
    const char *word = WIFEXITED(status) ? "exited " : "signaled ";
    int value = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
    size_t length = 0;
    while (*word) text[length++] = *word++;
    char digits[12];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value > 0);
    while (count > 0) text[length++] = digits[--count];
    text[length++] = '\n';
    // Short of a full disk this cannot fail; the reader treats anything
    // else as an unknown end.
    (void)!syscall(SYS_pwrite64, fd, text, length, 0);
}

/// Whether the program has a handler for `sig` (from SigCgt in its
/// /proc status); 1 when that cannot be read.
static int program_catches(long program, int sig) {
    char path[40] = "/proc/";
    size_t length = 6;
    char digits[20];
    int count = 0;
    do { digits[count++] = (char)('0' + program % 10); program /= 10; } while (program > 0);
    while (count > 0) path[length++] = digits[--count];
    memcpy(path + length, "/status", 8);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    char text[4096];
    size_t filled = 0;
    long got;
    while (filled < sizeof(text) - 1 && (got = syscall(SYS_read, fd, text + filled, sizeof(text) - 1 - filled)) > 0) filled += (size_t)got;
    syscall(SYS_close, fd);
    text[filled] = 0;
    const char *field = strstr(text, "SigCgt:");
    if (!field) return 1;
    field += 7;
    while (*field == ' ' || *field == '\t') field++;
    uint64_t mask = 0;
    for (; *field; field++) {
        char c = *field;
        int value = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (value < 0) break;
        mask = mask << 4 | (uint64_t)value;
    }
    return (int)((mask >> (sig - 1)) & 1);
}

/// Writes all of `data` at `offset`.
static void write_all_at(int fd, const char *data, size_t length, uint64_t offset) {
    while (length > 0) {
        long written = syscall(SYS_pwrite64, fd, data, length, offset);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) return;
        data += written;
        length -= (size_t)written;
        offset += (uint64_t)written;
    }
}

/// Makes `to` a copy of `from`.
static void copy_file(int from, int to) {
    syscall(SYS_ftruncate, to, 0);
    int64_t in = 0, out = 0;
    long copied;
    while ((copied = syscall(SYS_copy_file_range, from, &in, to, &out, 1 << 20, 0)) > 0) {}
    if (copied == 0) return;
    // Not supported between these files: read and write.
    char buffer[16384];
    long got;
    while ((got = syscall(SYS_pread64, from, buffer, sizeof(buffer), in)) > 0) {
        write_all_at(to, buffer, (size_t)got, (uint64_t)out);
        in += got;
        out += got;
    }
}

/// One output stream the init copies from the program to its log files.
struct relay_stream {
    int pipe;
    const int *files;
    uint64_t size;
};

/// Appends to a stream's current log file, first moving the files along
/// (the current one becomes `.1`, `.1` becomes `.2`, …, the oldest is
/// dropped) when the data would take the current one past `max_size`.
static void relay_append(struct relay_stream *stream, size_t file_count, uint64_t max_size, const char *data, size_t length) {
    if (max_size && stream->size > 0 && stream->size + length > max_size) {
        for (size_t i = file_count - 1; i >= 1; i--) copy_file(stream->files[i - 1], stream->files[i]);
        syscall(SYS_ftruncate, stream->files[0], 0);
        stream->size = 0;
    }
    write_all_at(stream->files[0], data, length, stream->size);
    stream->size += length;
}

/// Copies what a stream's pipe holds now to its log; returns 0 at the
/// pipe's end (every writer gone).
static int relay_drain(struct relay_stream *stream, size_t file_count, uint64_t max_size) {
    char buffer[16384];
    for (;;) {
        long got = syscall(SYS_read, stream->pipe, buffer, sizeof(buffer));
        if (got > 0) {
            relay_append(stream, file_count, max_size, buffer, (size_t)got);
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        return got == 0 ? 0 : 1;
    }
}

/// The init (`plan->init`): 1 forwards every signal to the program, as
/// tini does; 2 forwards only those the program has a handler for, so that
/// a program that would have been its namespace's first process keeps the
/// kernel's protection of one (a signal it does not handle is ignored).
/// With relay pipes, it copies the program's output to rotated log files
/// as it comes, so that no output path grows without bound.
static void run_init(int error_fd, const struct gantry_launch_plan *plan) {
    // What the init needs of the plan, which is the host's memory.
    int forward_all = plan->init == 1;
    int exit_record_fd = plan->exit_record_fd;
    size_t file_count = plan->log_file_count;
    uint64_t max_size = plan->log_max_size;
    struct relay_stream streams[GANTRY_RELAY_STREAMS_MAX];
    size_t stream_count = 0;
    if (file_count >= 1 && file_count <= GANTRY_RELAY_FILES_MAX) {
        for (size_t i = 0; i < plan->relay_count && i < GANTRY_RELAY_STREAMS_MAX; i++) {
            streams[stream_count].pipe = plan->relay_fds[i];
            streams[stream_count].files = plan->log_fds + i * file_count;
            streams[stream_count].size = 0;
            stream_count++;
        }
    }
    int kept[KEPT_DESCRIPTORS_MAX];
    size_t kept_count = init_descriptors(plan, kept);
    int log_fds[GANTRY_RELAY_STREAMS_MAX * GANTRY_RELAY_FILES_MAX];
    for (size_t i = 0; i < stream_count; i++) {
        for (size_t f = 0; f < file_count; f++) log_fds[i * file_count + f] = streams[i].files[f];
        streams[i].files = log_fds + i * file_count;
    }

    sigset_t all;
    sigfillset(&all);
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, _NSIG / 8) < 0) child_fail(error_fd, GANTRY_STAGE_INIT);
    long program = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (program < 0) child_fail(error_fd, GANTRY_STAGE_INIT);
    if (program == 0) {
        sigset_t empty;
        sigemptyset(&empty);
        if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, _NSIG / 8) < 0) child_fail(error_fd, GANTRY_STAGE_INIT);
        return;
    }
    // The init is a copy of the host process that never executes: nothing
    // in the container may read its memory.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) _exit(127);
    // The program reports its own exec failure; stdio stays with it. Every
    // other descriptor goes too: the init never executes, so close-on-exec
    // would never close what it inherited (such as pipes of launches other
    // threads were making), and readers would wait for their end forever.
    close(error_fd);
    if (close_descriptors_except(0, kept, kept_count) < 0) {
        for (int fd = 0; fd < 1024; fd++) {
            int keep = 0;
            for (size_t i = 0; i < kept_count; i++) keep |= kept[i] == fd;
            if (!keep) close(fd);
        }
    }
    for (size_t i = 0; i < stream_count; i++) {
        long flags = syscall(SYS_fcntl, streams[i].pipe, F_GETFL);
        if (flags >= 0) syscall(SYS_fcntl, streams[i].pipe, F_SETFL, flags | O_NONBLOCK);
    }
    // Signals arrive as reads; where signalfd is refused (a seccomp
    // profile), they are polled for every 50 ms.
    int signals = (int)syscall(SYS_signalfd4, -1, &all, _NSIG / 8, SFD_CLOEXEC | SFD_NONBLOCK);
    int open_streams[GANTRY_RELAY_STREAMS_MAX];
    for (size_t i = 0; i < stream_count; i++) open_streams[i] = 1;
    for (;;) {
        struct pollfd watched[1 + GANTRY_RELAY_STREAMS_MAX];
        size_t watched_count = 0;
        if (signals >= 0) watched[watched_count++] = (struct pollfd){ .fd = signals, .events = POLLIN };
        for (size_t i = 0; i < stream_count; i++) {
            if (open_streams[i]) watched[watched_count++] = (struct pollfd){ .fd = streams[i].pipe, .events = POLLIN };
        }
        struct timespec interval = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
        syscall(SYS_ppoll, watched, watched_count, signals >= 0 ? NULL : &interval, NULL, 0);
        for (size_t i = 0; i < stream_count; i++) {
            if (open_streams[i] && !relay_drain(&streams[i], file_count, max_size)) open_streams[i] = 0;
        }
        for (;;) {
            long sig;
            if (signals >= 0) {
                struct signalfd_siginfo info;
                if (syscall(SYS_read, signals, &info, sizeof(info)) != sizeof(info)) break;
                sig = (long)info.ssi_signo;
            } else {
                siginfo_t info;
                struct timespec now = { 0, 0 };
                sig = syscall(SYS_rt_sigtimedwait, &all, &info, &now, _NSIG / 8);
                if (sig < 0) break;
            }
            if (sig != SIGCHLD) {
                if (forward_all || program_catches(program, (int)sig)) syscall(SYS_kill, program, sig);
                continue;
            }
            int status;
            long reaped;
            while ((reaped = syscall(SYS_wait4, -1, &status, WNOHANG, NULL)) > 0) {
                if (reaped != program) continue;
                // What the program wrote last, then its end.
                for (size_t i = 0; i < stream_count; i++) {
                    if (open_streams[i]) relay_drain(&streams[i], file_count, max_size);
                }
                record_exit(exit_record_fd, status);
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            }
        }
    }
}

/// Brings the loopback device of this process's network namespace up.
static int loopback_up(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    memcpy(request.ifr_name, "lo", 3);
    int result = ioctl(fd, SIOCGIFFLAGS, &request);
    if (result == 0 && !(request.ifr_flags & IFF_UP)) {
        request.ifr_flags |= IFF_UP;
        result = ioctl(fd, SIOCSIFFLAGS, &request);
    }
    close(fd);
    return result;
}

/// Whether the parent writes anything for the child between the clone and
/// the child's setup: id maps of a new user namespace, an OOM score.
static int parent_writes(const struct gantry_launch_plan *plan) {
    return ((plan->clone_flags & CLONE_NEWUSER) && plan->user_namespace_fd < 0) || plan->oom_score_adj || plan->network_helper;
}

/// After a clone with CLONE_PARENT: the parent of the clone reports the
/// new process's pid to the launcher and ends, the new process goes on
/// (without the report's pipe); a failed clone fails at `stage`.
static void hand_over(long grandchild, int error_fd, int stage, int pid_report) {
    if (grandchild < 0) child_fail(error_fd, stage);
    if (grandchild > 0) {
        pid_t reported = (pid_t)grandchild;
        ssize_t written;
        do { written = write(pid_report, &reported, sizeof(reported)); } while (written < 0 && errno == EINTR);
        _exit(0);
    }
    close(pid_report);
}

struct child_arguments;
static void child_setup(const struct gantry_launch_plan *plan, int error_fd, int sync_read, int pid_report) __attribute__((noreturn));
static int child_setup_entry(void *argument);
#if defined(__x86_64__)
static long clone3_on_stack(struct clone_args *args, int (*entry)(void *), void *argument);
#endif

__attribute__((noreturn))
static void child(const struct gantry_launch_plan *plan, int error_fd, int sync_read, int sync_write, int pid_report,
                  void *second_stack, const struct child_arguments *arguments) {
    // Signals: default dispositions, nothing blocked.
    close(sync_write);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, _NSIG / 8);
    }
    sigset_t empty;
    sigemptyset(&empty);
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, _NSIG / 8) < 0) child_fail(error_fd, GANTRY_STAGE_SIGNALS);

    // v1 cgroups: this thread moves itself, first of all. A thread moving
    // itself through `tasks` needs only the cgroup mutex; writing a pid to
    // `cgroup.procs` takes the kernel's global threadgroup lock for
    // writing, which waits for an RCU grace period. (This process has one
    // thread, so moving the thread moves the process.)
    for (size_t i = 0; i < plan->cgroup_tasks_count; i++) {
        ssize_t written;
        do { written = write(plan->cgroup_tasks_fds[i], "0", 1); } while (written < 0 && errno == EINTR);
        if (written != 1) child_fail(error_fd, GANTRY_STAGE_CGROUP);
    }

    // Joining a user namespace (one a launcher that is not root keeps for
    // all its containers): its namespaces are made by a child of this
    // process, in it, which goes on (a child of the launcher's, as
    // CLONE_PARENT gives) once this one has reported its pid and ended.
    if (plan->user_namespace_fd >= 0) {
        // Namespace files: root's are entered from the host's user
        // namespace; those of a network host an ordinary user owns, only
        // from inside their user namespace (which is the one joined).
        int joined[8] = { 0 };
        for (size_t i = 0; i < plan->namespace_count && i < 8; i++) {
            joined[i] = setns(plan->namespace_fds[i], (int)plan->namespace_types[i]) == 0;
        }
        if (setns(plan->user_namespace_fd, CLONE_NEWUSER) < 0) child_fail(error_fd, GANTRY_STAGE_USER);
        for (size_t i = 0; i < plan->namespace_count && i < 8; i++) {
            if (!joined[i] && setns(plan->namespace_fds[i], (int)plan->namespace_types[i]) < 0) child_fail(error_fd, GANTRY_STAGE_JOIN);
        }
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        args.flags = CLONE_PARENT | (plan->clone_flags & NAMESPACE_FLAGS & ~(uint64_t)CLONE_NEWUSER);
        if (plan->cgroup_tasks_count > 0) args.flags &= ~(uint64_t)CLONE_NEWCGROUP;
        long grandchild;
#if defined(__x86_64__)
        if (second_stack) {
            // Sharing the launcher's memory too, on a stack of its own.
            args.flags |= CLONE_VM;
            args.stack = (uint64_t)(uintptr_t)second_stack;
            args.stack_size = CHILD_STACK_SIZE;
            grandchild = clone3_on_stack(&args, child_setup_entry, (void *)arguments);
            if (grandchild < 0) { errno = (int)-grandchild; grandchild = -1; }
        } else
#endif
        {
            (void)arguments;
            grandchild = syscall(SYS_clone3, &args, sizeof(args));
        }
        hand_over(grandchild, error_fd, GANTRY_STAGE_CLONE, pid_report);
    }
    child_setup(plan, error_fd, sync_read, pid_report);
}

/// The rest of the child's work: in its namespaces, from the parent's
/// go-ahead to the exec.
__attribute__((noreturn))
static void child_setup(const struct gantry_launch_plan *plan, int error_fd, int sync_read, int pid_report) {
    // Wait until the parent has written id maps and the OOM score, if it
    // has any to write. It writes a byte: end-of-file cannot be the signal,
    // since a child that another thread clones at the same moment holds a
    // copy of the write end until it executes.
    if (parent_writes(plan)) {
        char byte;
        ssize_t got;
        do { got = read(sync_read, &byte, 1); } while (got < 0 && errno == EINTR);
        if (got != 1) {
            if (got == 0) errno = ECANCELED;
            child_fail(error_fd, GANTRY_STAGE_SYNC);
        }
    }
    close(sync_read);

    if (plan->cgroup_tasks_count > 0 && (plan->clone_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0) {
        child_fail(error_fd, GANTRY_STAGE_CGROUP);
    }

    // In a new user namespace this process still has the host's IDs, which
    // the namespace does not map: become its root before creating anything.
    if ((plan->clone_flags & CLONE_NEWUSER) || plan->user_namespace_fd >= 0) {
        if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0) child_fail(error_fd, GANTRY_STAGE_USER);
    }

    if (plan->join_pidfd >= 0) {
        // No one may ptrace or read the memory of a process entering a container.
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) child_fail(error_fd, GANTRY_STAGE_JOIN);
        if (plan->join_namespaces & CLONE_NEWUSER) {
            // A launcher that is not root on the host may enter the
            // container's PID namespace only from inside its user namespace,
            // and only for its children: this process joins them all, makes
            // the process that goes on (in the PID namespace, a child of the
            // launcher's, as CLONE_PARENT gives), reports its pid and ends.
            if (setns(plan->join_pidfd, (int)plan->join_namespaces) < 0) child_fail(error_fd, GANTRY_STAGE_JOIN);
            struct clone_args args;
            memset(&args, 0, sizeof(args));
            args.flags = CLONE_PARENT;
            long grandchild = syscall(SYS_clone3, &args, sizeof(args));
            hand_over(grandchild, error_fd, GANTRY_STAGE_JOIN, pid_report);
        } else {
            uint64_t flags = plan->join_namespaces & ~(uint64_t)CLONE_NEWPID;
            if (flags && setns(plan->join_pidfd, (int)flags) < 0) child_fail(error_fd, GANTRY_STAGE_JOIN);
        }
    }

    if (setsid() < 0) child_fail(error_fd, GANTRY_STAGE_SESSION);

    // A new network namespace has only a loopback device, and it is down.
    if ((plan->clone_flags & CLONE_NEWNET) && loopback_up() < 0) child_fail(error_fd, GANTRY_STAGE_LOOPBACK);

    if (plan->clone_flags & CLONE_NEWNS) {
        // Slave, as runc does: nothing the container mounts reaches the
        // host, and binds asked to be slaves still see the host's new mounts.
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) child_fail(error_fd, GANTRY_STAGE_MOUNT_PRIVATE);
        if (plan->rootfs_mount_fd >= 0) {
            // Made by the launcher's caller (an overlay over ID-mapped layers).
            if (syscall(SYS_move_mount, plan->rootfs_mount_fd, "", AT_FDCWD, plan->rootfs, 0x4 /* MOVE_MOUNT_F_EMPTY_PATH */) < 0) {
                child_fail(error_fd, GANTRY_STAGE_ROOTFS);
            }
        } else if (plan->overlay_options) {
            // nodev: a device node the container makes (it holds CAP_MKNOD)
            // must not open the host's disks.
            if (gantry_mount_overlay(plan->overlay_options, plan->rootfs, MS_NODEV) < 0) child_fail(error_fd, GANTRY_STAGE_ROOTFS);
        } else if (mount(plan->rootfs, plan->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) {
            child_fail(error_fd, GANTRY_STAGE_ROOTFS);
        } else {
            int root = open(plan->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (root < 0 || set_recursive_attributes(root, MS_NODEV) < 0) child_fail(error_fd, GANTRY_STAGE_ROOTFS);
            close(root);
        }
        int root_fd = open(plan->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0) child_fail(error_fd, GANTRY_STAGE_ROOTFS);
        for (size_t i = 0; i < plan->mount_count; i++) {
            if (apply_mount(root_fd, &plan->mounts[i]) < 0) child_fail(error_fd, GANTRY_STAGE_MOUNTS);
        }
        if (fchdir(root_fd) < 0) child_fail(error_fd, GANTRY_STAGE_PIVOT_ROOT);
        close(root_fd);
        if (syscall(SYS_pivot_root, ".", ".") < 0) child_fail(error_fd, GANTRY_STAGE_PIVOT_ROOT);
        if (umount2(".", MNT_DETACH) < 0) child_fail(error_fd, GANTRY_STAGE_PIVOT_ROOT);
        if (chdir("/") < 0) child_fail(error_fd, GANTRY_STAGE_PIVOT_ROOT);

        for (size_t i = 0; i < plan->sysctl_count; i++) {
            if (write_file(plan->sysctl_paths[i], plan->sysctl_values[i]) < 0) child_fail(error_fd, GANTRY_STAGE_SYSCTL);
        }
        for (size_t i = 0; i < plan->masked_count; i++) {
            if (mask_path(plan->masked_paths[i]) < 0) child_fail(error_fd, GANTRY_STAGE_MASKED_PATHS);
        }
        for (size_t i = 0; i < plan->readonly_count; i++) {
            if (readonly_path(plan->readonly_paths[i]) < 0) child_fail(error_fd, GANTRY_STAGE_READONLY_PATHS);
        }
        if (plan->readonly_rootfs && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
            child_fail(error_fd, GANTRY_STAGE_READONLY_ROOTFS);
        }
    }

    if (plan->hostname && (plan->clone_flags & CLONE_NEWUTS)) {
        if (sethostname(plan->hostname, child_strlen(plan->hostname)) < 0) child_fail(error_fd, GANTRY_STAGE_HOSTNAME);
    }
    for (size_t i = 0; i < plan->rlimit_count; i++) {
        struct rlimit limit = { .rlim_cur = plan->rlimits[i].soft, .rlim_max = plan->rlimits[i].hard };
        if (syscall(SYS_prlimit64, 0, plan->rlimits[i].resource, &limit, NULL) < 0) child_fail(error_fd, GANTRY_STAGE_RLIMITS);
    }
    int terminal = -1;
    if (plan->console_socket >= 0 && (terminal = open_console(plan->console_socket)) < 0) child_fail(error_fd, GANTRY_STAGE_STDIO);
    if (setup_stdio(plan, terminal) < 0) child_fail(error_fd, GANTRY_STAGE_STDIO);
    if (terminal >= 0) close(terminal);
    if ((plan->controlling_terminal || terminal >= 0) && ioctl(0, TIOCSCTTY, 0) < 0) child_fail(error_fd, GANTRY_STAGE_STDIO);
    // Nothing of the host stays open but the error pipe (close-on-exec)
    // before any path the container controls is looked up.
    if (close_host_descriptors(error_fd, plan) < 0) child_fail(error_fd, GANTRY_STAGE_CLOSE_FDS);
    if (plan->cwd && make_working_directory(plan->cwd) < 0) child_fail(error_fd, GANTRY_STAGE_CWD);

    // Without no_new_privs the filter needs CAP_SYS_ADMIN: install it while we have it.
    if (!plan->no_new_privs && install_seccomp(plan) < 0) child_fail(error_fd, GANTRY_STAGE_SECCOMP);

    for (int cap = 0; cap < 64; cap++) {
        if (plan->cap_bounding & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            // EINVAL: past the kernel's last capability, as are all after it.
            if (errno == EINVAL) break;
            child_fail(error_fd, GANTRY_STAGE_CAPABILITIES);
        }
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) child_fail(error_fd, GANTRY_STAGE_CAPABILITIES);
    // Raw system calls: glibc's wrappers would try to synchronise threads
    // that no longer exist in this child.
    // Also in a user namespace: the parent (root) leaves setgroups allowed,
    // so that none of the host's groups stays.
    if (!plan->deny_setgroups && syscall(SYS_setgroups, plan->group_count, plan->groups) < 0) child_fail(error_fd, GANTRY_STAGE_USER);
    if (syscall(SYS_setresgid, plan->gid, plan->gid, plan->gid) < 0) child_fail(error_fd, GANTRY_STAGE_USER);
    if (syscall(SYS_setresuid, plan->uid, plan->uid, plan->uid) < 0) child_fail(error_fd, GANTRY_STAGE_USER);
    if (set_capabilities(plan) < 0) child_fail(error_fd, GANTRY_STAGE_CAPABILITIES);

    if (plan->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(error_fd, GANTRY_STAGE_NO_NEW_PRIVS);
    // Set late: changing credentials clears it.
    if (plan->parent_death_signal && prctl(PR_SET_PDEATHSIG, plan->parent_death_signal, 0, 0, 0) < 0) {
        child_fail(error_fd, GANTRY_STAGE_PARENT_DEATH);
    }
    if (plan->no_new_privs && install_seccomp(plan) < 0) child_fail(error_fd, GANTRY_STAGE_SECCOMP);
    if (plan->init) run_init(error_fd, plan);

    // A PATH search over the candidates, as execvp does.
    int error = ENOENT;
    for (size_t i = 0; i < plan->executable_count; i++) {
        if (check_executable(plan->executables[i]) == 0) execve(plan->executables[i], plan->argv, plan->envp);
        if (errno != ENOENT && errno != ENOTDIR) error = errno;
    }
    errno = error;
    child_fail(error_fd, GANTRY_STAGE_EXEC);
}

// MARK: - Parent

/// What the child needs, passed through the trampoline.
struct child_arguments {
    const struct gantry_launch_plan *plan;
    int error_fd, sync_read, sync_write, pid_report;
    /// With a user namespace to join and shared memory: the stack of the
    /// child's child.
    void *second_stack;
};

static int child_entry(void *argument) {
    const struct child_arguments *a = argument;
    child(a->plan, a->error_fd, a->sync_read, a->sync_write, a->pid_report, a->second_stack, a);
}

static int child_setup_entry(void *argument) {
    const struct child_arguments *a = argument;
    child_setup(a->plan, a->error_fd, a->sync_read, a->pid_report);
}

#if defined(__x86_64__)
#define GANTRY_SHARED_MEMORY_CLONE 1
/// clone3 onto a stack of its own: the child calls `entry(argument)` there
/// and exits with its result (it never returns into the caller's frames).
/// Returns the child's pid, or -errno.
static long clone3_on_stack(struct clone_args *args, int (*entry)(void *), void *argument) {
    long result;
    register long function __asm__("r12") = (long)entry;
    register long parameter __asm__("r13") = (long)argument;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(result)
        : "a"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), "r"(function), "r"(parameter)
        : "rcx", "r11", "memory");
    return result;
}
#endif


/// Writes "/proc/<pid>/<name>" into `buffer` (at least 64 bytes; `name` short).
static void proc_pid_path(char *buffer, pid_t pid, const char *name) {
    char number[16];
    int n = 0;
    unsigned int v = (unsigned int)pid;
    do { number[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    size_t p = 0;
    const char *prefix = "/proc/";
    while (prefix[p]) { buffer[p] = prefix[p]; p++; }
    while (n) buffer[p++] = number[--n];
    buffer[p++] = '/';
    for (size_t i = 0; name[i]; i++) buffer[p++] = name[i];
    buffer[p] = 0;
}

static int write_proc_file(pid_t pid, const char *name, const char *value) {
    char path[64];
    proc_pid_path(path, pid, name);
    return write_file(path, value);
}

/// Runs the network helper with the child's pid as its last argument.
static int run_network_helper(char *const *helper, pid_t pid, char *message, size_t size) {
    size_t count = 0;
    while (helper[count]) count++;
    char **argv = calloc(count + 2, sizeof(char *));
    if (!argv) return -1;
    char pid_text[16];
    snprintf(pid_text, sizeof(pid_text), "%d", (int)pid);
    for (size_t i = 0; i < count; i++) argv[i] = helper[i];
    argv[count] = pid_text;
    argv[count + 1] = NULL;
    int result = gantry_run_program(argv, message, size);
    int error = errno;
    free(argv);
    errno = error;
    return result;
}

/// A descriptor of the calling thread's own namespace of `type`.
static int open_own_namespace(uint64_t type) {
    const char *path;
    switch (type) {
    case CLONE_NEWNET: path = "/proc/thread-self/ns/net"; break;
    case CLONE_NEWIPC: path = "/proc/thread-self/ns/ipc"; break;
    case CLONE_NEWUTS: path = "/proc/thread-self/ns/uts"; break;
    case CLONE_NEWCGROUP: path = "/proc/thread-self/ns/cgroup"; break;
    default: errno = EINVAL; return -1;
    }
    return open(path, O_RDONLY | O_CLOEXEC);
}

/// A descriptor of the mount namespace of the process `pidfd` names:
/// through the pidfd (Linux 6.11 and later), else through /proc.
static int open_mount_namespace(int pidfd, pid_t pid) {
    int fd = ioctl(pidfd, _IO(0xFF, 3) /* PIDFD_GET_MNT_NAMESPACE */, 0);
    if (fd >= 0) return fd;
    char path[64];
    proc_pid_path(path, pid, "ns/mnt");
    return open(path, O_RDONLY | O_CLOEXEC);
}

int gantry_make_network_namespace(void) {
    int own = open_own_namespace(CLONE_NEWNET);
    if (own < 0) return -1;
    if (unshare(CLONE_NEWNET) < 0) {
        int error = errno;
        close(own);
        errno = error;
        return -1;
    }
    int made = loopback_up() == 0 ? open_own_namespace(CLONE_NEWNET) : -1;
    int error = errno;
    int back = setns(own, CLONE_NEWNET);
    close(own);
    if (back < 0) {
        if (made >= 0) close(made);
        return -2;
    }
    errno = error;
    return made;
}

/// Returns the calling thread to the namespaces it left (the first `count`).
static void leave_namespaces(const struct gantry_launch_plan *plan, const int *own, size_t count) {
    for (size_t i = 0; i < count; i++) {
        // Returning cannot fail for root; if it did, later children of this
        // thread would start in a container's namespace.
        if (setns(own[i], (int)plan->namespace_types[i]) < 0) abort();
        close(own[i]);
    }
}

int gantry_launch(const struct gantry_launch_plan *plan, pid_t *pid_out, int *pidfd_out, int *mount_namespace_out,
                  struct gantry_launch_failure *failure) {
    if (mount_namespace_out) *mount_namespace_out = -1;
    failure->stage = GANTRY_STAGE_NONE;
    failure->error = 0;
    failure->message[0] = 0;
    int error_pipe[2], sync_pipe[2];
    if (pipe2(error_pipe, O_CLOEXEC) < 0) { failure->stage = GANTRY_STAGE_PIPE; failure->error = errno; return -1; }
    if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
        failure->stage = GANTRY_STAGE_PIPE; failure->error = errno;
        close(error_pipe[0]); close(error_pipe[1]);
        return -1;
    }

    int pidfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = CLONE_PIDFD | plan->clone_flags;
    // With v1 cgroups the child joins them only after the clone: the cgroup
    // namespace is made then (by the child), rooted at the container's cgroup.
    if (plan->cgroup_tasks_count > 0) args.flags &= ~(uint64_t)CLONE_NEWCGROUP;
    // Joining a user namespace: the child makes the namespaces, in it.
    if (plan->user_namespace_fd >= 0) args.flags &= ~(uint64_t)NAMESPACE_FLAGS;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = 0;
    if (plan->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)plan->cgroup_fd;
    }

    // Namespace files (a pod's network namespace): this thread enters
    // them, so that the child starts there, and returns after the clone.
    int own_namespaces[8];
    size_t entered = 0;
    if (plan->namespace_count > 8) {
        failure->stage = GANTRY_STAGE_JOIN; failure->error = E2BIG;
        close(error_pipe[0]); close(error_pipe[1]); close(sync_pipe[0]); close(sync_pipe[1]);
        return -1;
    }
    // (With a user namespace to join, the child enters them, after it.)
    for (; plan->user_namespace_fd < 0 && entered < plan->namespace_count; entered++) {
        own_namespaces[entered] = open_own_namespace(plan->namespace_types[entered]);
        if (own_namespaces[entered] < 0 || setns(plan->namespace_fds[entered], (int)plan->namespace_types[entered]) < 0) {
            failure->stage = GANTRY_STAGE_JOIN; failure->error = errno;
            if (own_namespaces[entered] >= 0) close(own_namespaces[entered]);
            leave_namespaces(plan, own_namespaces, entered);
            close(error_pipe[0]); close(error_pipe[1]); close(sync_pipe[0]); close(sync_pipe[1]);
            return -1;
        }
    }

    // Entering a PID namespace affects only the children of this thread:
    // switch to it for the clone and back.
    int own_pid_namespace = -1;
    int pid_report[2] = { -1, -1 };
    int through_child = (plan->join_pidfd >= 0 && (plan->join_namespaces & CLONE_NEWUSER)) || plan->user_namespace_fd >= 0;
    if (through_child && pipe2(pid_report, O_CLOEXEC) < 0) {
        failure->stage = GANTRY_STAGE_PIPE; failure->error = errno;
        leave_namespaces(plan, own_namespaces, entered);
        close(error_pipe[0]); close(error_pipe[1]); close(sync_pipe[0]); close(sync_pipe[1]);
        return -1;
    }
    if (plan->join_pidfd >= 0 && (plan->join_namespaces & CLONE_NEWPID) && !(plan->join_namespaces & CLONE_NEWUSER)) {
        own_pid_namespace = open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (own_pid_namespace < 0 || setns(plan->join_pidfd, CLONE_NEWPID) < 0) {
            failure->stage = GANTRY_STAGE_JOIN; failure->error = errno;
            if (own_pid_namespace >= 0) close(own_pid_namespace);
            leave_namespaces(plan, own_namespaces, entered);
            close(error_pipe[0]); close(error_pipe[1]); close(sync_pipe[0]); close(sync_pipe[1]);
            return -1;
        }
    }

    // The child shares this process's memory until it executes (CLONE_VM,
    // on a stack of its own): copying the page tables of a large process
    // and tearing them down at exec would cost more than the rest of the
    // launch. An init never executes, so it gets a copy instead.
    void *stack = MAP_FAILED;
#ifdef GANTRY_SHARED_MEMORY_CLONE
    // Nor does a process joining a running container: it appears there
    // before it executes, and must not be this process's memory then. Nor
    // one given an OOM score: the kernel sets the score of every process
    // sharing the memory, so this process would take the container's.
    // Joining a user namespace, two processes share it: the child, and
    // the child's child that goes on (each on a stack of its own).
    size_t stacks = plan->user_namespace_fd >= 0 ? 2 : 1;
    if (!plan->init && plan->join_pidfd < 0 && !plan->oom_score_adj) {
        stack = mmap(NULL, stacks * CHILD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack != MAP_FAILED) {
            mprotect(stack, 4096, PROT_NONE);
            if (stacks == 2) mprotect((char *)stack + CHILD_STACK_SIZE, 4096, PROT_NONE);
            args.flags |= CLONE_VM;
            args.stack = (uint64_t)(uintptr_t)stack;
            args.stack_size = CHILD_STACK_SIZE;
        }
    }
#endif
    struct child_arguments entry = { plan, error_pipe[1], sync_pipe[0], sync_pipe[1], pid_report[1],
                                     (stack != MAP_FAILED && stacks == 2) ? (char *)stack + CHILD_STACK_SIZE : NULL };
    (void)child_entry;

    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    long pid;
#ifdef GANTRY_SHARED_MEMORY_CLONE
    if (stack != MAP_FAILED) {
        pid = clone3_on_stack(&args, child_entry, &entry);
        if (pid < 0) { errno = (int)-pid; pid = -1; }
    } else
#endif
    {
        pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0) child(entry.plan, entry.error_fd, entry.sync_read, entry.sync_write, entry.pid_report, NULL, &entry);
    }
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (own_pid_namespace >= 0) {
        // Returning to one's own namespace cannot fail for root; if it did,
        // later children of this thread would start in the container.
        if (setns(own_pid_namespace, CLONE_NEWPID) < 0) abort();
        close(own_pid_namespace);
    }
    leave_namespaces(plan, own_namespaces, entered);
    close(error_pipe[1]);
    close(sync_pipe[0]);
    if (pid_report[1] >= 0) close(pid_report[1]);
    if (pid < 0) {
        close(error_pipe[0]); close(sync_pipe[1]);
        if (pid_report[0] >= 0) close(pid_report[0]);
        failure->stage = GANTRY_STAGE_CLONE; failure->error = clone_errno;
        if (stack != MAP_FAILED) munmap(stack, stacks * CHILD_STACK_SIZE);
        return -1;
    }

    // Through a child: the process that goes on is its child's, which it
    // reports before it ends (nothing when it failed first).
    pid_t grandchild = 0;
    int stage = GANTRY_STAGE_NONE;
    int parent_errno = 0;
    if (pid_report[0] >= 0) {
        ssize_t read_pid;
        do { read_pid = read(pid_report[0], &grandchild, sizeof(grandchild)); } while (read_pid < 0 && errno == EINTR);
        if (read_pid != (ssize_t)sizeof(grandchild)) grandchild = 0;
        close(pid_report[0]);
        siginfo_t reaped;
        while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &reaped, WEXITED | __WALL) < 0 && errno == EINTR) {}
        close(pidfd);
        pidfd = -1;
        if (grandchild > 0) {
            pid = grandchild;
            pidfd = (int)syscall(SYS_pidfd_open, grandchild, 0);
            if (pidfd < 0) {
                stage = GANTRY_STAGE_JOIN;
                parent_errno = errno;
                kill(grandchild, SIGKILL);
            }
        }
    }
    int child_failed = pid_report[1] >= 0 && grandchild == 0;

    // Taken at once: the child's setup takes far longer than this call.
    // (A child that did end first, or failed, leaves -1 here, and the
    // kernel tears its namespace down at its exit, as without it.)
    int namespace_flags = plan->user_namespace_fd >= 0 ? (int)plan->clone_flags : (int)args.flags;
    int mount_namespace = (mount_namespace_out && !stage && !child_failed && (namespace_flags & CLONE_NEWNS))
        ? open_mount_namespace(pidfd, (pid_t)pid) : -1;

    if (!stage && !child_failed && (plan->clone_flags & CLONE_NEWUSER) && plan->user_namespace_fd < 0) {
        struct gantry_id_maps maps = { plan->uid_map, plan->gid_map, plan->uid_map_helper, plan->gid_map_helper, plan->deny_setgroups };
        if (gantry_write_id_maps((pid_t)pid, &maps, failure->message, sizeof(failure->message)) < 0) stage = GANTRY_STAGE_ID_MAPS;
    }
    if (child_failed) {
        // Its failure is in the error pipe.
    } else if (!stage && plan->network_helper && run_network_helper(plan->network_helper, (pid_t)pid, failure->message, sizeof(failure->message)) < 0) {
        stage = GANTRY_STAGE_NETWORK;
    }
    if (!stage && !child_failed && plan->oom_score_adj && write_proc_file((pid_t)pid, "oom_score_adj", plan->oom_score_adj) < 0 &&
        errno != EACCES) {
        stage = GANTRY_STAGE_OOM_SCORE;
    }
    if (stage && !parent_errno) parent_errno = errno;
    if (stage && pidfd >= 0) {
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    }
    // A byte lets the child go on; after SIGKILL, closing is enough.
    if (!stage && !child_failed && parent_writes(plan)) {
        ssize_t sent;
        do { sent = write(sync_pipe[1], "", 1); } while (sent < 0 && errno == EINTR);
    }
    close(sync_pipe[1]);

    struct gantry_launch_failure reported;
    ssize_t got;
    do { got = read(error_pipe[0], &reported, sizeof(reported)); } while (got < 0 && errno == EINTR);
    close(error_pipe[0]);
    if (stage || got != 0) {
        siginfo_t info;
        if (pidfd >= 0) {
            while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | __WALL) < 0 && errno == EINTR) {}
            close(pidfd);
        } else if (grandchild > 0) {
            while (waitid(P_PID, (id_t)grandchild, &info, WEXITED | __WALL) < 0 && errno == EINTR) {}
        }
        if (mount_namespace >= 0) close(mount_namespace);
        if (stage) {
            failure->stage = stage; failure->error = parent_errno;
        } else if (got == (ssize_t)sizeof(reported)) {
            *failure = reported;
        } else {
            failure->stage = GANTRY_STAGE_EXEC; failure->error = EIO;
        }
        if (stack != MAP_FAILED) munmap(stack, stacks * CHILD_STACK_SIZE);
        return -1;
    }
    // The child has executed: it no longer uses this memory.
    if (stack != MAP_FAILED) munmap(stack, stacks * CHILD_STACK_SIZE);
    *pid_out = (pid_t)pid;
    *pidfd_out = pidfd;
    if (mount_namespace_out) *mount_namespace_out = mount_namespace;
    return 0;
}

void gantry_block_signals(void) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
}
