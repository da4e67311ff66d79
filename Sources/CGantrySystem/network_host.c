// An ordinary user's network host: a network namespace (with a mount
// namespace beside it) that the user's own user namespace owns, where the
// bridges of its networks live. A process of the host's namespaces cannot
// enter it (setns into a network namespace needs CAP_SYS_ADMIN where the
// caller is), so work there is done by short-lived children that join the
// namespace's user namespace first.
#define _GNU_SOURCE
#include "CGantrySystem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static void write_all(int fd, const void *bytes, size_t length) {
    const char *p = bytes;
    while (length > 0) {
        ssize_t n = write(fd, p, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        length -= (size_t)n;
    }
}

/// Becomes root of the user namespace just entered (where it maps 0).
static void become_root(void) {
    if (syscall(SYS_setresgid, 0, 0, 0) == 0) syscall(SYS_setresuid, 0, 0, 0);
}

int gantry_enter_owned_network_namespace(int fd) {
    // A pidfd enters the process's user and network namespaces at once.
    if (setns(fd, CLONE_NEWUSER | CLONE_NEWNET) == 0) { become_root(); return 0; }
    if (errno != EINVAL) return -1;
    int user = ioctl(fd, NS_GET_USERNS);
    if (user < 0) return -1;
    int entered = setns(user, CLONE_NEWUSER);
    int error = errno;
    close(user);
    if (entered < 0) { errno = error; return -1; }
    become_root();
    return setns(fd, CLONE_NEWNET);
}

/// Forks with every signal blocked in the parent's thread (the child
/// unblocks them); the child runs `body` and ends with its result.
static pid_t fork_quietly(sigset_t *previous) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, previous);
    pid_t pid = fork();
    if (pid != 0) {
        int error = errno;
        pthread_sigmask(SIG_SETMASK, previous, NULL);
        errno = error;
    }
    return pid;
}

static int wait_child(pid_t pid) {
    int status = 0;
    pid_t waited;
    do { waited = waitpid(pid, &status, __WALL); } while (waited < 0 && errno == EINTR);
    return waited == pid ? status : -1;
}

/// Runs `make` in a child process, which hands the descriptor it returns
/// back (SCM_RIGHTS); returns it, or -1 with the child's errno.
static int descriptor_from_child(int (*make)(const void *), const void *argument) {
    int channel[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, channel) < 0) return -1;
    sigset_t previous;
    pid_t pid = fork_quietly(&previous);
    if (pid == 0) {
        close(channel[0]);
        int error = 0;
        int fd = make(argument);
        if (fd < 0) error = errno ? errno : EIO;
        char control[CMSG_SPACE(sizeof(int))];
        memset(control, 0, sizeof(control));
        struct iovec part = { .iov_base = &error, .iov_len = sizeof(error) };
        struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1 };
        if (fd >= 0) {
            message.msg_control = control;
            message.msg_controllen = sizeof(control);
            struct cmsghdr *header = CMSG_FIRSTHDR(&message);
            header->cmsg_level = SOL_SOCKET;
            header->cmsg_type = SCM_RIGHTS;
            header->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(header), &fd, sizeof(int));
        }
        while (sendmsg(channel[1], &message, 0) < 0 && errno == EINTR) {}
        _exit(0);
    }
    int fork_error = errno;
    close(channel[1]);
    if (pid < 0) { close(channel[0]); errno = fork_error; return -1; }
    int error = ECHILD, fd = -1;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec part = { .iov_base = &error, .iov_len = sizeof(error) };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control) };
    ssize_t got;
    do { got = recvmsg(channel[0], &message, MSG_CMSG_CLOEXEC); } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof(error)) {
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        if (header && header->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(header), sizeof(int));
    } else {
        error = ECHILD;
    }
    close(channel[0]);
    wait_child(pid);
    if (fd < 0) errno = error ? error : EIO;
    return fd;
}

struct socket_job { int netns_fd, domain, type, protocol; };

static int make_socket(const void *argument) {
    const struct socket_job *job = argument;
    if (gantry_enter_owned_network_namespace(job->netns_fd) < 0) return -1;
    return socket(job->domain, job->type | SOCK_CLOEXEC, job->protocol);
}

int gantry_socket_in_owned_netns(int netns_fd, int domain, int type, int protocol) {
    struct socket_job job = { netns_fd, domain, type, protocol };
    return descriptor_from_child(make_socket, &job);
}

/// Runs `work` in a child process; returns 0, or -1 with the child's errno.
static int in_child(int (*work)(const void *), const void *argument) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -1;
    sigset_t previous;
    pid_t pid = fork_quietly(&previous);
    if (pid == 0) {
        close(report[0]);
        int error = 0;
        if (work(argument) < 0) error = errno ? errno : EIO;
        write_all(report[1], &error, sizeof(error));
        _exit(0);
    }
    int fork_error = errno;
    close(report[1]);
    if (pid < 0) { close(report[0]); errno = fork_error; return -1; }
    int error = ECHILD;
    ssize_t got;
    do { got = read(report[0], &error, sizeof(error)); } while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(error)) error = ECHILD;
    close(report[0]);
    wait_child(pid);
    if (error) { errno = error; return -1; }
    return 0;
}

struct write_job { const char *path; const char *value; };

static int write_value(const void *argument) {
    const struct write_job *job = argument;
    int fd = open(job->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t length = strlen(job->value);
    ssize_t written;
    do { written = write(fd, job->value, length); } while (written < 0 && errno == EINTR);
    int error = written < 0 ? errno : EIO;
    close(fd);
    if (written == (ssize_t)length) return 0;
    errno = error;
    return -1;
}

struct owned_write_job { int netns_fd; struct write_job write; };

static int owned_write(const void *argument) {
    const struct owned_write_job *job = argument;
    if (gantry_enter_owned_network_namespace(job->netns_fd) < 0) return -1;
    return write_value(&job->write);
}

int gantry_write_in_owned_netns(int netns_fd, const char *path, const char *value) {
    struct owned_write_job job = { netns_fd, { path, value } };
    return in_child(owned_write, &job);
}

/// Brings the loopback device of the calling thread's network namespace up.
static int loopback_up(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strcpy(request.ifr_name, "lo");
    int result = ioctl(fd, SIOCGIFFLAGS, &request);
    if (result == 0) {
        request.ifr_flags |= IFF_UP;
        result = ioctl(fd, SIOCSIFFLAGS, &request);
    }
    int error = errno;
    close(fd);
    errno = error;
    return result;
}

static int write_setting(const char *path, const char *value) {
    struct write_job job = { path, value };
    return write_value(&job);
}

pid_t gantry_spawn_network_host(int userns_fd, const char *program, const char *marker, char *message, size_t message_size) {
    if (message && message_size) message[0] = 0;
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -1;
    sigset_t previous;
    pid_t pid = fork_quietly(&previous);
    if (pid == 0) {
        close(report[0]);
        // The holder is no child of the caller's (who may end first, or
        // never reap it): this child ends once the grandchild is made.
        pid_t holder = fork();
        if (holder != 0) {
            write_all(report[1], &holder, sizeof(holder));
            _exit(holder < 0 ? 1 : 0);
        }
        const char *stage = "user namespace";
        if (setns(userns_fd, CLONE_NEWUSER) < 0) goto failed;
        become_root();
        stage = "namespaces";
        if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) goto failed;
        stage = "mounts";
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) goto failed;
        // Where the namespace files of the user's containers and pods are
        // bound: a file system of this mount namespace only.
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=1m") < 0) goto failed;
        int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) goto failed;
        close(fd);
        stage = "settings";
        if (write_setting("/proc/sys/net/ipv4/ip_forward", "1") < 0) goto failed;
        // IPv4 only: no router advertisement from a container is obeyed.
        if (write_setting("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") < 0 && errno != ENOENT) goto failed;
        if (write_setting("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1") < 0 && errno != ENOENT) goto failed;
        stage = "loopback";
        if (loopback_up() < 0) goto failed;
        stage = "session";
        if (setsid() < 0 || chdir("/") < 0) goto failed;
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) goto failed;
        // Nothing of the caller's stays open in the holder.
        syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
        struct sigaction standard;
        memset(&standard, 0, sizeof(standard));
        standard.sa_handler = SIG_DFL;
        for (int signal = 1; signal < NSIG; signal++) sigaction(signal, &standard, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        stage = "program";
        char *const argv[] = { (char *)program, "2147483647", NULL };
        char *const environment[] = { NULL };
        execve(program, argv, environment);
    failed:;
        int error = errno;
        pid_t none_made = 0;
        write_all(report[1], &none_made, sizeof(none_made));
        write_all(report[1], &error, sizeof(error));
        write_all(report[1], stage, strlen(stage));
        _exit(1);
    }
    int fork_error = errno;
    close(report[1]);
    if (pid < 0) { close(report[0]); errno = fork_error; return -1; }
    wait_child(pid);
    pid_t holder = -1;
    ssize_t got;
    do { got = read(report[0], &holder, sizeof(holder)); } while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(holder) || holder <= 0) {
        close(report[0]);
        errno = ECHILD;
        return -1;
    }
    // The holder's report: nothing (it executed), or why it failed.
    pid_t none_made = -1;
    int error = 0;
    do { got = read(report[0], &none_made, sizeof(none_made)); } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof(none_made)) {
        do { got = read(report[0], &error, sizeof(error)); } while (got < 0 && errno == EINTR);
        size_t length = 0;
        while (message && length + 1 < message_size) {
            ssize_t n = read(report[0], message + length, message_size - 1 - length);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            length += (size_t)n;
        }
        if (message && message_size) message[length] = 0;
        close(report[0]);
        errno = error ? error : EIO;
        return -1;
    }
    close(report[0]);
    return holder;
}

struct namespace_job { int userns_fd; int mntns_fd; int type; const char *path; const char *hostname; };

static int namespace_work(const void *argument) {
    const struct namespace_job *job = argument;
    if (setns(job->userns_fd, CLONE_NEWUSER) < 0) return -1;
    become_root();
    if (setns(job->mntns_fd, CLONE_NEWNS) < 0) return -1;
    if (job->type == 0) {
        if (umount2(job->path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT) return -1;
        if (unlink(job->path) < 0 && errno != ENOENT) return -1;
        return 0;
    }
    const char *file;
    switch (job->type) {
    case CLONE_NEWNET: file = "/proc/self/ns/net"; break;
    case CLONE_NEWIPC: file = "/proc/self/ns/ipc"; break;
    case CLONE_NEWUTS: file = "/proc/self/ns/uts"; break;
    default: errno = EINVAL; return -1;
    }
    int fd = open(job->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    close(fd);
    if (unshare(job->type) < 0) goto undo;
    if (job->type == CLONE_NEWUTS && job->hostname && sethostname(job->hostname, strlen(job->hostname)) < 0) goto undo;
    if (mount(file, job->path, NULL, MS_BIND, NULL) < 0) goto undo;
    return 0;
undo:;
    int error = errno;
    unlink(job->path);
    errno = error;
    return -1;
}

int gantry_network_host_namespace(int userns_fd, int mntns_fd, int type, const char *path, const char *hostname) {
    struct namespace_job job = { userns_fd, mntns_fd, type, path, hostname };
    return in_child(namespace_work, &job);
}

/// Reads what a memory file holds into `buffer` (NUL-terminated).
static void read_back(int fd, char *buffer, size_t size) {
    if (!buffer || size == 0) return;
    size_t length = 0;
    lseek(fd, 0, SEEK_SET);
    while (length + 1 < size) {
        ssize_t n = read(fd, buffer + length, size - 1 - length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        length += (size_t)n;
    }
    buffer[length] = 0;
}

int gantry_run_in_owned_netns(int netns_fd, char *const argv[], const char *input, char *output, size_t output_size,
                              char *message, size_t message_size) {
    if (output && output_size) output[0] = 0;
    if (message && message_size) message[0] = 0;
    int in = memfd_create("gantry-input", MFD_CLOEXEC);
    int out = memfd_create("gantry-output", MFD_CLOEXEC);
    int err = memfd_create("gantry-error", MFD_CLOEXEC);
    if (in < 0 || out < 0 || err < 0) {
        int error = errno;
        if (in >= 0) close(in);
        if (out >= 0) close(out);
        if (err >= 0) close(err);
        errno = error;
        return -1;
    }
    if (input) write_all(in, input, strlen(input));
    lseek(in, 0, SEEK_SET);
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) { int error = errno; close(in); close(out); close(err); errno = error; return -1; }
    sigset_t previous;
    pid_t pid = fork_quietly(&previous);
    if (pid == 0) {
        close(report[0]);
        if (gantry_enter_owned_network_namespace(netns_fd) == 0 && dup2(in, 0) >= 0 && dup2(out, 1) >= 0 && dup2(err, 2) >= 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            extern char **environ;
            execve(argv[0], argv, environ);
        }
        int error = errno;
        write_all(report[1], &error, sizeof(error));
        _exit(127);
    }
    int fork_error = errno;
    close(report[1]);
    if (pid < 0) { close(report[0]); close(in); close(out); close(err); errno = fork_error; return -1; }
    int error = 0;
    ssize_t got;
    do { got = read(report[0], &error, sizeof(error)); } while (got < 0 && errno == EINTR);
    close(report[0]);
    int status = wait_child(pid);
    read_back(out, output, output_size);
    read_back(err, message, message_size);
    close(in); close(out); close(err);
    if (got == (ssize_t)sizeof(error)) { errno = error; return -1; }
    if (status < 0) { errno = ECHILD; return -1; }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// MARK: - Root's user-namespaced containers

int gantry_idmapped_overlay(const char *const layers[], size_t count, const char *upper, const char *work, int userns_fd,
                            int volatile_upper) {
    if (count == 0 || count > 500) { errno = EINVAL; return -1; }
    int *trees = calloc(count, sizeof(int));
    size_t lower_size = count * 24 + 1;
    char *lower = calloc(lower_size, 1);
    int result = -1, error = 0, fs = -1;
    if (!trees || !lower) { error = ENOMEM; goto done; }
    for (size_t i = 0; i < count; i++) trees[i] = -1;
    // Each layer, seen through the namespace's mapping: files of host root
    // are its root's, and what the container makes is stored as the IDs it
    // maps to.
    struct mount_attr idmap;
    memset(&idmap, 0, sizeof(idmap));
    idmap.attr_set = MOUNT_ATTR_IDMAP;
    idmap.userns_fd = (uint64_t)userns_fd;
    size_t length = 0;
    for (size_t i = 0; i < count; i++) {
        trees[i] = (int)syscall(SYS_open_tree, AT_FDCWD, layers[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (trees[i] < 0 || syscall(SYS_mount_setattr, trees[i], "", AT_EMPTY_PATH, &idmap, sizeof(idmap)) < 0) { error = errno; goto done; }
        length += (size_t)snprintf(lower + length, lower_size - length, "%s/proc/self/fd/%d", i ? ":" : "", trees[i]);
    }
    fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0 ||
        gantry_overlay_set_lower(fs, lower) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0 ||
        (volatile_upper && syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0) ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        error = errno;
        goto done;
    }
    result = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
    if (result < 0) error = errno;
done:
    if (fs >= 0) close(fs);
    for (size_t i = 0; trees && i < count; i++) if (trees[i] >= 0) close(trees[i]);
    free(trees);
    free(lower);
    if (result < 0) errno = error;
    return result;
}

int gantry_overlay_set_lower(int fs, const char *lower) {
    char *list = strdup(lower);
    if (!list) { errno = ENOMEM; return -1; }
    int result = 0;
    int first = 1;
    char *saved = NULL;
    for (char *layer = strtok_r(list, ":", &saved); layer; layer = strtok_r(NULL, ":", &saved)) {
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", layer, 0) == 0) { first = 0; continue; }
        int error = errno;
        if (first && error == EINVAL) {
            // A kernel before 6.8: the whole list as one value.
            result = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir", lower, 0);
        } else {
            errno = error;
            result = -1;
        }
        break;
    }
    free(list);
    return result;
}

/// For kernels before 6.8: mount(2) with the lower directories named
/// relative to their common parent, made the working directory meanwhile
/// (as Docker's overlay driver does), so that some sixty layers fit in the
/// page. E2BIG when they do not, or have no common parent.
static int mount_overlay_relative(const char *options, const char *target, unsigned long flags) {
    const char *lower = strstr(options, "lowerdir=");
    if (!lower || (lower != options && lower[-1] != ',')) { errno = E2BIG; return -1; }
    lower += strlen("lowerdir=");
    const char *lower_end = strchr(lower, ',');
    if (!lower_end) lower_end = lower + strlen(lower);
    const char *slash = NULL;
    for (const char *c = lower; c < lower_end && *c != ':'; c++) if (*c == '/') slash = c;
    if (!slash || slash == lower) { errno = E2BIG; return -1; }
    size_t parent_length = (size_t)(slash - lower);
    char parent[4096], rewritten[4096];
    if (parent_length >= sizeof(parent)) { errno = E2BIG; return -1; }
    memcpy(parent, lower, parent_length);
    parent[parent_length] = 0;
    size_t used = 0;
    #define APPEND(text, size) do { if (used + (size) >= sizeof(rewritten)) { errno = E2BIG; return -1; } \
        memcpy(rewritten + used, (text), (size)); used += (size); } while (0)
    APPEND(options, (size_t)(lower - options));
    for (const char *layer = lower; layer < lower_end;) {
        const char *colon = memchr(layer, ':', (size_t)(lower_end - layer));
        if (!colon) colon = lower_end;
        // Each layer a name directly in the parent.
        if ((size_t)(colon - layer) <= parent_length + 1 || memcmp(layer, parent, parent_length) || layer[parent_length] != '/'
            || memchr(layer + parent_length + 1, '/', (size_t)(colon - layer) - parent_length - 1)) { errno = E2BIG; return -1; }
        if (layer != lower) APPEND(":", 1);
        APPEND(layer + parent_length + 1, (size_t)(colon - layer) - parent_length - 1);
        layer = colon + (colon < lower_end);
    }
    APPEND(lower_end, strlen(lower_end));
    #undef APPEND
    rewritten[used] = 0;
    int previous = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (previous < 0) return -1;
    int result = chdir(parent);
    if (result == 0) result = mount("overlay", target, "overlay", flags, rewritten);
    int error = errno;
    if (fchdir(previous) < 0 && result == 0) { error = errno; result = -1; }
    close(previous);
    if (result < 0) errno = error;
    return result;
}

int gantry_mount_overlay(const char *options, const char *target, unsigned long flags) {
    size_t length = strlen(options);
    if (length < 4000) return mount("overlay", target, "overlay", flags, options);
    int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0) return -1;
    char key[64], value[4096];
    int result = 0;
    for (const char *option = options; *option && result == 0;) {
        const char *end = strchr(option, ',');
        if (!end) end = option + strlen(option);
        const char *equals = memchr(option, '=', (size_t)(end - option));
        size_t key_length = (size_t)((equals ? equals : end) - option);
        if (key_length >= sizeof(key)) { errno = EINVAL; result = -1; break; }
        memcpy(key, option, key_length);
        key[key_length] = 0;
        if (!equals) {
            result = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, key, NULL, 0);
        } else if (!strcmp(key, "lowerdir")) {
            for (const char *layer = equals + 1; layer < end && result == 0;) {
                const char *colon = memchr(layer, ':', (size_t)(end - layer));
                if (!colon) colon = end;
                size_t size = (size_t)(colon - layer);
                if (size >= sizeof(value)) { errno = ENAMETOOLONG; result = -1; break; }
                memcpy(value, layer, size);
                value[size] = 0;
                result = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", value, 0);
                // A kernel before 6.8 knows no "lowerdir+", and the list is too long for one value.
                if (result < 0 && errno == EINVAL && layer == equals + 1) errno = E2BIG;
                layer = colon + (colon < end);
            }
        } else {
            size_t size = (size_t)(end - equals - 1);
            if (size >= sizeof(value)) { errno = ENAMETOOLONG; result = -1; break; }
            memcpy(value, equals + 1, size);
            value[size] = 0;
            result = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, value, 0);
        }
        option = end + (*end == ',');
    }
    if (result == 0) result = (int)syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    int mounted = -1;
    if (result == 0) {
        unsigned int attributes = ((flags & MS_RDONLY) ? MOUNT_ATTR_RDONLY : 0) | ((flags & MS_NOSUID) ? MOUNT_ATTR_NOSUID : 0)
            | ((flags & MS_NODEV) ? MOUNT_ATTR_NODEV : 0);
        mounted = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attributes);
        if (mounted < 0) result = -1;
    }
    if (result == 0) result = (int)syscall(SYS_move_mount, mounted, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    int error = errno;
    if (mounted >= 0) close(mounted);
    close(fs);
    if (result < 0 && error == E2BIG) return mount_overlay_relative(options, target, flags);
    if (result < 0) errno = error;
    return result;
}

// MARK: - An ordinary user's overlays

struct overlay_job { int userns_fd; const char *lower, *upper, *work; int readonly; };

static int make_overlay(const void *argument) {
    const struct overlay_job *job = argument;
    if (setns(job->userns_fd, CLONE_NEWUSER) < 0) return -1;
    become_root();
    // A mount namespace the user namespace owns, where overlayfs may be made.
    if (unshare(CLONE_NEWNS) < 0) return -1;
    int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0) return -1;
    int result = -1;
    if (gantry_overlay_set_lower(fs, job->lower) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", job->upper, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", job->work, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0) {
        result = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (job->readonly ? MOUNT_ATTR_RDONLY : 0));
    }
    int error = errno;
    close(fs);
    errno = error;
    return result;
}

int gantry_overlay_in_user_namespace(int userns_fd, const char *lower, const char *upper, const char *work, int readonly) {
    struct overlay_job job = { userns_fd, lower, upper, work, readonly };
    return descriptor_from_child(make_overlay, &job);
}

// MARK: - Network namespaces made ahead of need

struct namespace_maker { int userns_fd; int made; int error; };

/// In a child sharing the caller's memory and descriptors (the caller's
/// thread waits, CLONE_VFORK): enters the user namespace (a process
/// sharing memory but not a thread group may) and makes the namespace.
static int make_namespace_shared(void *argument) {
    struct namespace_maker *maker = argument;
    if (setns(maker->userns_fd, CLONE_NEWUSER) < 0 || (become_root(), unshare(CLONE_NEWNET)) < 0 || loopback_up() < 0) {
        maker->error = errno;
        return 1;
    }
    maker->made = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (maker->made < 0) maker->error = errno;
    return 0;
}

int gantry_make_network_namespace_in(int userns_fd) {
    // No copy of the caller's memory (a fork would copy its page tables
    // and leave its pages to be copied on the next write).
    size_t size = 64 << 10;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    struct namespace_maker maker = { userns_fd, -1, 0 };
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = clone(make_namespace_shared, stack + size, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &maker);
    int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (pid < 0) {
        munmap(stack, size);
        errno = clone_error;
        return -1;
    }
    wait_child(pid);
    munmap(stack, size);
    if (maker.made < 0) errno = maker.error ? maker.error : EIO;
    return maker.made;
}
