#define _GNU_SOURCE
#include "CGantrySystem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <signal.h>
#include <termios.h>
#include <stdlib.h>
#include <unistd.h>

_Static_assert(sizeof(struct open_how) == 24, "struct open_how changed size");
_Static_assert(RESOLVE_NO_XDEV == GANTRY_RESOLVE_NO_XDEV, "RESOLVE_NO_XDEV");
_Static_assert(RESOLVE_NO_MAGICLINKS == GANTRY_RESOLVE_NO_MAGICLINKS, "RESOLVE_NO_MAGICLINKS");
_Static_assert(RESOLVE_NO_SYMLINKS == GANTRY_RESOLVE_NO_SYMLINKS, "RESOLVE_NO_SYMLINKS");
_Static_assert(RESOLVE_BENEATH == GANTRY_RESOLVE_BENEATH, "RESOLVE_BENEATH");
_Static_assert(RESOLVE_IN_ROOT == GANTRY_RESOLVE_IN_ROOT, "RESOLVE_IN_ROOT");
_Static_assert(RENAME_NOREPLACE == GANTRY_RENAME_NOREPLACE, "RENAME_NOREPLACE");
_Static_assert(RENAME_EXCHANGE == GANTRY_RENAME_EXCHANGE, "RENAME_EXCHANGE");

int gantry_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    for (;;) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        if (fd >= 0) return (int)fd;
        if (errno != EINTR && errno != EAGAIN) return -1;
    }
}

int gantry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int gantry_errno(void) { return errno; }

#include <sys/sysmacros.h>
dev_t gantry_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }

#include <sys/xattr.h>

const int GANTRY_O_PATH = O_PATH;
const int GANTRY_SEEK_DATA = SEEK_DATA;
const int GANTRY_SEEK_HOLE = SEEK_HOLE;

int gantry_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags) {
    return fsetxattr(fd, name, value, size, flags);
}

ssize_t gantry_flistxattr(int fd, char *list, size_t size) { return flistxattr(fd, list, size); }

ssize_t gantry_fgetxattr(int fd, const char *name, void *value, size_t size) { return fgetxattr(fd, name, value, size); }


ssize_t gantry_llistxattr(const char *path, char *list, size_t size) { return llistxattr(path, list, size); }

ssize_t gantry_lgetxattr(const char *path, const char *name, void *value, size_t size) { return lgetxattr(path, name, value, size); }

ssize_t gantry_copy_file_range_at(int from, int64_t *from_offset, int to, int64_t *to_offset, size_t length) {
    loff_t in = *from_offset, out = *to_offset;
    ssize_t copied = copy_file_range(from, &in, to, &out, length, 0);
    *from_offset = in;
    *to_offset = out;
    return copied;
}

int gantry_fremovexattr(int fd, const char *name) { return fremovexattr(fd, name); }

// Namespace work runs on a short-lived thread: setns and unshare of a
// network namespace change only the calling thread, which then ends.
struct netns_job {
    const char *path;
    const char *value;
    int namespace_type;
    const char *hostname;
    int netns_fd;
    int domain, type, protocol;
    int result;
    int error;
};

static void *namespace_create_thread(void *argument) {
    struct netns_job *job = argument;
    job->result = -1;
    const char *file;
    switch (job->namespace_type) {
    case CLONE_NEWNET: file = "/proc/thread-self/ns/net"; break;
    case CLONE_NEWIPC: file = "/proc/thread-self/ns/ipc"; break;
    case CLONE_NEWUTS: file = "/proc/thread-self/ns/uts"; break;
    default: job->error = EINVAL; return NULL;
    }
    if (unshare(job->namespace_type) < 0) { job->error = errno; return NULL; }
    if (job->hostname && sethostname(job->hostname, strlen(job->hostname)) < 0) { job->error = errno; return NULL; }
    if (mount(file, job->path, NULL, MS_BIND, NULL) < 0) { job->error = errno; return NULL; }
    job->result = 0;
    return NULL;
}

static void *netns_socket_thread(void *argument) {
    struct netns_job *job = argument;
    job->result = -1;
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) { job->error = errno; return NULL; }
    job->result = socket(job->domain, job->type | SOCK_CLOEXEC, job->protocol);
    if (job->result < 0) job->error = errno;
    return NULL;
}

static void *netns_write_thread(void *argument) {
    struct netns_job *job = argument;
    job->result = -1;
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) { job->error = errno; return NULL; }
    // /proc/sys/net shows the namespace of the thread that opens it.
    int fd = open(job->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { job->error = errno; return NULL; }
    size_t length = strlen(job->value);
    ssize_t written = write(fd, job->value, length);
    if (written != (ssize_t)length) job->error = written < 0 ? errno : EIO;
    else job->result = 0;
    close(fd);
    return NULL;
}

static int run_netns_job(void *(*body)(void *), struct netns_job *job) {
    pthread_t thread;
    int error = pthread_create(&thread, NULL, body, job);
    if (error != 0) { errno = error; return -1; }
    pthread_join(thread, NULL);
    if (job->result < 0) errno = job->error;
    return job->result;
}

int gantry_namespace_create(const char *path, int type, const char *hostname) {
    struct netns_job job = { .path = path, .namespace_type = type, .hostname = type == CLONE_NEWUTS ? hostname : NULL, .netns_fd = -1 };
    return run_netns_job(namespace_create_thread, &job);
}

// A process that is not root may not enter a network namespace from the
// host's user namespace; a child that joins the namespace's owner first may.
int gantry_write_in_netns(int netns_fd, const char *path, const char *value) {
    struct netns_job job = { .netns_fd = netns_fd, .path = path, .value = value };
    int result = run_netns_job(netns_write_thread, &job);
    if (result < 0 && errno == EPERM && geteuid() != 0) return gantry_write_in_owned_netns(netns_fd, path, value);
    return result;
}

int gantry_socket_in_netns(int netns_fd, int domain, int type, int protocol) {
    struct netns_job job = { .netns_fd = netns_fd, .domain = domain, .type = type, .protocol = protocol };
    int result = run_netns_job(netns_socket_thread, &job);
    if (result < 0 && errno == EPERM && geteuid() != 0) return gantry_socket_in_owned_netns(netns_fd, domain, type, protocol);
    return result;
}

int gantry_unshare_mounts(void) {
    if (unshare(CLONE_NEWNS) < 0) return -1;
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

int gantry_unshare_descriptors(void) {
    if (unshare(CLONE_FILES) < 0) return -1;
    // The copy holds every descriptor the process had: none may stay
    // open through it (a pipe's writer kept here would never let its
    // reader see the end).
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return 0;
    long maximum = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < maximum; fd++) close((int)fd);
    return 0;
}

int gantry_spawn_close_from(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}

// MARK: - Descriptors, terminals, timers, pidfds and epoll

int gantry_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int gantry_terminal_raw(int fd, void *saved, size_t size) {
    if (size < sizeof(struct termios)) { errno = EINVAL; return -1; }
    struct termios settings;
    if (tcgetattr(fd, &settings) < 0) return -1;
    memcpy(saved, &settings, sizeof(settings));
    cfmakeraw(&settings);
    return tcsetattr(fd, TCSANOW, &settings);
}

int gantry_terminal_restore(int fd, const void *saved) {
    return tcsetattr(fd, TCSANOW, (const struct termios *)saved);
}

void gantry_terminal_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size = { 0 };
    ioctl(fd, TIOCGWINSZ, &size);
    *rows = size.ws_row;
    *columns = size.ws_col;
}

int gantry_timer_set(int fd, uint64_t nanoseconds) {
    if (nanoseconds == 0) nanoseconds = 1;
    struct itimerspec when;
    memset(&when, 0, sizeof(when));
    when.it_value.tv_sec = (time_t)(nanoseconds / 1000000000ULL);
    when.it_value.tv_nsec = (long)(nanoseconds % 1000000000ULL);
    return timerfd_settime(fd, 0, &when, NULL);
}

int gantry_timer(uint64_t nanoseconds) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (fd < 0) return -1;
    if (gantry_timer_set(fd, nanoseconds) < 0) { int saved = errno; close(fd); errno = saved; return -1; }
    return fd;
}

int gantry_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int gantry_receive_fd(int socket) {
    char byte;
    struct iovec data = { .iov_base = &byte, .iov_len = 1 };
    union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr message = { .msg_iov = &data, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof(control.buffer) };
    ssize_t got;
    do { got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); } while (got < 0 && errno == EINTR);
    if (got != 1) { if (got >= 0) errno = EIO; return -1; }
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (!header || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS || header->cmsg_len != CMSG_LEN(sizeof(int))) {
        errno = EBADMSG;
        return -1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(header), sizeof(int));
    return fd;
}

int gantry_socketpair(int fds[2]) { return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds); }

int gantry_wait_pidfd(int pidfd, int nohang, int *exited_code, int *signal) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    for (;;) {
        if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | __WALL | (nohang ? WNOHANG : 0)) == 0) break;
        if (errno != EINTR) return -1;
    }
    if (info.si_pid == 0) return 1;
    *exited_code = -1;
    *signal = 0;
    if (info.si_code == CLD_EXITED) {
        *exited_code = info.si_status;
    } else {
        *signal = info.si_status;
    }
    return 0;
}

int gantry_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

int gantry_pidfd_signal(int pidfd, int signal) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}

int gantry_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int gantry_epoll_add_oneshot(int epoll, int fd) {
    struct epoll_event event = { .events = EPOLLIN | EPOLLONESHOT, .data.fd = fd };
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int gantry_epoll_rearm(int epoll, int fd) {
    struct epoll_event event = { .events = EPOLLIN | EPOLLONESHOT, .data.fd = fd };
    return epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event);
}

int gantry_epoll_delete(int epoll, int fd) { return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL); }

int gantry_epoll_wait(int epoll, int *fds, int capacity, int timeout_ms) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epoll, events, capacity, timeout_ms);
    for (int i = 0; i < count; i++) fds[i] = events[i].data.fd;
    return count;
}

int gantry_is_in_memory(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return info.f_type == TMPFS_MAGIC || info.f_type == RAMFS_MAGIC;
}
