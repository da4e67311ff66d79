// User namespaces for a process that is not root: writing a new
// namespace's ID maps (through newuidmap/newgidmap, the only set-user-ID
// programs involved, or directly for a single mapping), and doing file
// work as the root of such a namespace, where files belong to the
// subordinate IDs that only a mapped root may give or take.
#define _GNU_SOURCE
#include "CGantrySystem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

extern char **environ;

static int write_whole(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t length = strlen(value);
    ssize_t written;
    do { written = write(fd, value, length); } while (written < 0 && errno == EINTR);
    int error = errno;
    close(fd);
    if (written == (ssize_t)length) return 0;
    errno = written < 0 ? error : EIO;
    return -1;
}

int gantry_run_program(char *const argv[], char *message, size_t message_size) {
    if (message && message_size) message[0] = 0;
    int result = -1, error = 0;
    int pipe_fds[2] = { -1, -1 };
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) return -1;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&attributes);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t child;
    error = posix_spawn(&child, argv[0], &actions, &attributes, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    close(pipe_fds[1]);
    if (error == 0) {
        // Waited for first, then read without blocking: a daemon the
        // program leaves may hold its standard error open for ever. (What
        // it writes before it exits fits in the pipe.)
        int status = 0;
        pid_t waited;
        do { waited = waitpid(child, &status, __WALL); } while (waited < 0 && errno == EINTR);
        // A host that reaps every child (SIGCHLD ignored) leaves no
        // status: the caller checks what the program was to do instead.
        if (waited < 0 && errno == ECHILD) result = 0;
        else if (waited == child && WIFEXITED(status) && WEXITSTATUS(status) == 0) result = 0;
        else error = WIFEXITED(status) ? EPERM : EINTR;
        fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
        size_t got = 0;
        while (message && got + 1 < message_size) {
            ssize_t n = read(pipe_fds[0], message + got, message_size - 1 - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (message && message_size) message[got] = 0;
    }
    close(pipe_fds[0]);
    if (result < 0) errno = error;
    return result;
}

/// Runs `helper PID inside outside count …` with the map's numbers, its
/// standard error going to `message`. Returns 0 when it exits with 0.
static int run_map_helper(const char *helper, pid_t pid, const char *map, char *message, size_t message_size) {
    char *copy = strdup(map);
    if (!copy) return -1;
    size_t capacity = 8;
    for (const char *p = map; *p; p++) capacity += (*p == ' ' || *p == '\n');
    char **argv = calloc(capacity, sizeof(char *));
    char pid_text[16];
    snprintf(pid_text, sizeof(pid_text), "%d", (int)pid);
    int result = -1;
    if (argv) {
        size_t argc = 0;
        argv[argc++] = (char *)helper;
        argv[argc++] = pid_text;
        for (char *token = strtok(copy, " \n"); token && argc + 1 < capacity; token = strtok(NULL, " \n")) argv[argc++] = token;
        argv[argc] = NULL;
        result = gantry_run_program(argv, message, message_size);
    } else {
        errno = ENOMEM;
    }
    int error = errno;
    free(argv);
    free(copy);
    errno = error;
    return result;
}

/// Whether the process's map file has any line.
static int map_written(pid_t pid, const char *name) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char byte;
    ssize_t got = read(fd, &byte, 1);
    close(fd);
    return got == 1;
}

int gantry_write_id_maps(pid_t pid, const struct gantry_id_maps *maps, char *message, size_t message_size) {
    if (message && message_size) message[0] = 0;
    char path[64];
    if (maps->uid_helper || maps->gid_helper) {
        if (maps->uid_map && maps->uid_helper && (run_map_helper(maps->uid_helper, pid, maps->uid_map, message, message_size) < 0 || !map_written(pid, "uid_map"))) {
            if (errno == 0) errno = EPERM;
            return -1;
        }
        if (maps->gid_map && maps->gid_helper && (run_map_helper(maps->gid_helper, pid, maps->gid_map, message, message_size) < 0 || !map_written(pid, "gid_map"))) {
            if (errno == 0) errno = EPERM;
            return -1;
        }
        return 0;
    }
    // Without the helpers, a process may map only its own IDs, and only
    // after giving up setgroups in the namespace.
    if (maps->deny_setgroups) {
        snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
        if (write_whole(path, "deny") < 0) return -1;
    }
    snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
    if (maps->uid_map && write_whole(path, maps->uid_map) < 0) return -1;
    snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
    if (maps->gid_map && write_whole(path, maps->gid_map) < 0) return -1;
    return 0;
}

int gantry_make_user_namespace(const struct gantry_id_maps *maps, char *message, size_t message_size) {
    int ready[2], done[2];
    if (pipe2(ready, O_CLOEXEC) < 0) return -1;
    if (pipe2(done, O_CLOEXEC) < 0) { int error = errno; close(ready[0]); close(ready[1]); errno = error; return -1; }
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = fork();
    if (pid == 0) {
        // First, nothing but its two pipes open: a copy of a descriptor the
        // caller's other threads write an executable through would make
        // executing that file fail (ETXTBSY) while this child lives.
        if (dup2(done[0], 0) < 0 || dup2(ready[1], 1) < 0) _exit(1);
        syscall(SYS_close_range, 3U, ~0U, 0U);
        // newuidmap maps only a process whose /proc entry its caller owns,
        // and the caller opens the namespace through it: both need this
        // copy dumpable. The caller may not be: a launch whose child shares
        // its memory (CLONE_VM) and takes a container user's IDs makes that
        // memory, and so the caller, not dumpable (which keeps container
        // processes from reading it), and a fork inherits that.
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        char byte = unshare(CLONE_NEWUSER) == 0 ? 1 : 0;
        ssize_t n;
        do { n = write(1, &byte, 1); } while (n < 0 && errno == EINTR);
        // Until the parent has taken hold of the namespace (or ended).
        do { n = read(0, &byte, 1); } while (n < 0 && errno == EINTR);
        _exit(0);
    }
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(ready[1]); close(done[0]);
    if (pid < 0) { close(ready[0]); close(done[1]); errno = fork_error; return -1; }
    char byte = 0;
    ssize_t n;
    do { n = read(ready[0], &byte, 1); } while (n < 0 && errno == EINTR);
    close(ready[0]);
    int fd = -1, error = EPERM;
    if (n == 1 && byte == 1) {
        if (gantry_write_id_maps(pid, maps, message, message_size) == 0) {
            char path[64];
            snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
            fd = open(path, O_RDONLY | O_CLOEXEC);
        }
        error = errno;
    }
    close(done[1]);
    int status;
    while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {}
    if (fd < 0) errno = error;
    return fd;
}

// MARK: - Work as the root of a user namespace

/// Opens `path` beneath `dirfd` without following any symlink (a trailing
/// one is opened as itself).
static int open_entry(int dirfd, const char *path) {
    struct open_how how = { .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC, .mode = 0,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV };
    long fd;
    do { fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how)); } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
    return (int)fd;
}

static int set_owner(int dirfd, const struct gantry_owner_entry *entry) {
    int fd = open_entry(dirfd, entry->path);
    // A file the layer made and then replaced by another name's entry.
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    int result = fchownat(fd, "", entry->uid, entry->gid, AT_EMPTY_PATH);
    struct stat st;
    if (result == 0 && (entry->mode >= 0 || entry->capability) && fstat(fd, &st) == 0 && !S_ISLNK(st.st_mode)) {
        // Changing the owner cleared the set-ID bits and file capabilities.
        char through[64];
        snprintf(through, sizeof(through), "/proc/self/fd/%d", fd);
        if (entry->mode >= 0) result = chmod(through, (mode_t)entry->mode);
        if (result == 0 && entry->capability && S_ISREG(st.st_mode)) {
            result = setxattr(through, "security.capability", entry->capability, entry->capability_size, 0);
        }
    }
    int error = errno;
    close(fd);
    errno = error;
    return result;
}

/// Removes `name` in `dirfd` and everything below it, without following
/// symlinks. Directories are opened up first: the namespace's root may
/// override their modes only for IDs it maps.
static int remove_tree(int dirfd, const char *name) {
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) return -1;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    DIR *directory = fdopendir(fd);
    if (!directory) { int error = errno; close(fd); errno = error; return -1; }
    int result = 0;
    struct dirent *entry;
    while (result == 0 && (errno = 0, entry = readdir(directory))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        result = remove_tree(fd, entry->d_name);
    }
    if (result == 0 && errno != 0) result = -1;
    int error = errno;
    closedir(directory);
    if (result < 0) { errno = error; return -1; }
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) return -1;
    return 0;
}

/// Copies the extended attributes a layer carries (user.*, and a file
/// capability) from one open file to another.
static int copy_attributes(int from, int to) {
    char names[4096];
    ssize_t length = flistxattr(from, names, sizeof(names));
    if (length <= 0) return 0;
    char value[4096];
    for (char *name = names; name < names + length; name += strlen(name) + 1) {
        int carried = (!strncmp(name, "user.", 5) && strncmp(name, "user.overlay.", 13)) || !strcmp(name, "security.capability");
        if (!carried) continue;
        ssize_t size = fgetxattr(from, name, value, sizeof(value));
        if (size < 0) continue;
        if (fsetxattr(to, name, value, (size_t)size, 0) < 0 && errno != ENOTSUP) return -1;
    }
    return 0;
}

static int copy_data(int from, int to) {
    for (;;) {
        ssize_t copied = copy_file_range(from, NULL, to, NULL, 1 << 30, 0);
        if (copied == 0) return 0;
        if (copied > 0) continue;
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return -1;
        break;
    }
    char buffer[65536];
    for (;;) {
        ssize_t got = read(from, buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) return 0;
        for (ssize_t done = 0; done < got;) {
            ssize_t written = write(to, buffer + done, (size_t)(got - done));
            if (written < 0 && errno == EINTR) continue;
            if (written < 0) return -1;
            done += written;
        }
    }
}

/// Gives `to` the owner, mode and times of `st` (the owner first: it
/// clears set-ID bits).
static int copy_metadata(int to, const struct stat *st) {
    if (fchown(to, st->st_uid, st->st_gid) < 0) return -1;
    if (fchmod(to, st->st_mode & 07777) < 0) return -1;
    struct timespec times[2] = { st->st_atim, st->st_mtim };
    return futimens(to, times);
}

/// Copies what the directory `from` holds into the directory `to`, with
/// owners, modes, times and carried attributes; symlinks as they are,
/// never followed; device nodes (which no user namespace may make) and
/// sockets are left out.
static int copy_tree(int from, int to) {
    int listing = dup(from);
    if (listing < 0) return -1;
    DIR *directory = fdopendir(listing);
    if (!directory) { close(listing); return -1; }
    rewinddir(directory);
    int result = 0;
    struct dirent *entry;
    while (result == 0 && (errno = 0, entry = readdir(directory))) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        struct stat st;
        if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) < 0) { result = -1; break; }
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(to, name, 0700) < 0 && errno != EEXIST) { result = -1; break; }
            int source = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int target = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (source < 0 || target < 0) result = -1;
            if (result == 0) result = copy_tree(source, target);
            if (result == 0) result = copy_attributes(source, target);
            if (result == 0) result = copy_metadata(target, &st);
            int error = errno;
            if (source >= 0) close(source);
            if (target >= 0) close(target);
            errno = error;
        } else if (S_ISREG(st.st_mode)) {
            int source = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            int target = openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (source < 0 || target < 0) result = -1;
            if (result == 0) result = copy_data(source, target);
            if (result == 0) result = copy_metadata(target, &st);
            // After the owner: changing it would clear a file capability.
            if (result == 0) result = copy_attributes(source, target);
            int error = errno;
            if (source >= 0) close(source);
            if (target >= 0) close(target);
            errno = error;
        } else if (S_ISLNK(st.st_mode)) {
            char link[4096];
            ssize_t length = readlinkat(from, name, link, sizeof(link) - 1);
            if (length < 0) { result = -1; break; }
            link[length] = 0;
            struct timespec times[2] = { st.st_atim, st.st_mtim };
            if (symlinkat(link, to, name) < 0 || fchownat(to, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
                utimensat(to, name, times, AT_SYMLINK_NOFOLLOW) < 0) result = -1;
        } else if (S_ISFIFO(st.st_mode)) {
            struct timespec times[2] = { st.st_atim, st.st_mtim };
            if (mknodat(to, name, S_IFIFO | 0600, 0) < 0 || fchownat(to, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
                fchmodat(to, name, st.st_mode & 07777, 0) < 0 || utimensat(to, name, times, AT_SYMLINK_NOFOLLOW) < 0) result = -1;
        }
    }
    if (result == 0 && errno != 0) result = -1;
    int error = errno;
    closedir(directory);
    errno = error;
    return result;
}

/// Seeds a volume: mounts the layers (read-only, in a mount namespace of
/// this process's own) and copies what they have at the path into the
/// destination, which takes the owner and mode of the path's directory.
/// Nothing there is no error.
static int seed(const struct gantry_user_namespace_task *task) {
    if (task->overlay_options) {
        if (unshare(CLONE_NEWNS) < 0) return -1;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
        if (gantry_mount_overlay(task->overlay_options, task->mount_point, MS_RDONLY | MS_NODEV | MS_NOSUID) < 0) return -1;
    }
    int root = open(task->mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return -1;
    struct open_how how = { .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC, .mode = 0, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    long source;
    do { source = syscall(SYS_openat2, root, task->name, &how, sizeof(how)); } while (source < 0 && (errno == EINTR || errno == EAGAIN));
    close(root);
    if (source < 0) return (errno == ENOENT || errno == ENOTDIR) ? 0 : -1;
    struct stat st;
    int result = fstat((int)source, &st);
    if (result == 0) result = copy_tree((int)source, task->directory);
    if (result == 0) result = copy_metadata(task->directory, &st);
    int error = errno;
    close((int)source);
    errno = error;
    return result;
}

struct task_report {
    int error;
    int failed_index;
};

int gantry_in_user_namespace(const struct gantry_id_maps *maps, const struct gantry_user_namespace_task *task,
                             struct gantry_user_namespace_result *result) {
    memset(result, 0, sizeof(*result));
    result->failed_index = -1;
    int ready[2], go[2], report[2];
    if (pipe2(ready, O_CLOEXEC) < 0) { result->error = errno; return -1; }
    if (pipe2(go, O_CLOEXEC) < 0) { result->error = errno; close(ready[0]); close(ready[1]); return -1; }
    if (pipe2(report, O_CLOEXEC) < 0) {
        result->error = errno;
        close(ready[0]); close(ready[1]); close(go[0]); close(go[1]);
        return -1;
    }
    // fork(), not a raw clone: the child may then allocate (glibc resets
    // its allocator's locks in the child), and it unshares alone, as a
    // process of one thread must to enter a new user namespace.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]); close(go[1]); close(report[0]);
        struct task_report outcome = { 0, -1 };
        char byte = 0;
        if (unshare(CLONE_NEWUSER) < 0) {
            outcome.error = errno;
        } else {
            ssize_t n;
            do { n = write(ready[1], &byte, 1); } while (n < 0 && errno == EINTR);
            do { n = read(go[0], &byte, 1); } while (n < 0 && errno == EINTR);
            if (n != 1) {
                outcome.error = ECANCELED;
            } else if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
                outcome.error = errno;
            } else if (task->operation == GANTRY_USER_NAMESPACE_CHOWN) {
                for (size_t i = 0; i < task->entry_count; i++) {
                    if (set_owner(task->directory, &task->entries[i]) < 0) {
                        outcome.error = errno;
                        outcome.failed_index = (int)i;
                        break;
                    }
                }
            } else if (task->operation == GANTRY_USER_NAMESPACE_REMOVE) {
                if (remove_tree(task->directory, task->name) < 0) outcome.error = errno;
            } else if (task->operation == GANTRY_USER_NAMESPACE_SEED) {
                if (seed(task) < 0) outcome.error = errno;
            } else {
                outcome.error = EINVAL;
            }
        }
        ssize_t n;
        do { n = write(report[1], &outcome, sizeof(outcome)); } while (n < 0 && errno == EINTR);
        _exit(outcome.error ? 1 : 0);
    }
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(ready[1]); close(go[0]); close(report[1]);
    if (pid < 0) {
        result->error = fork_error;
        close(ready[0]); close(go[1]); close(report[0]);
        return -1;
    }
    char byte;
    ssize_t n;
    do { n = read(ready[0], &byte, 1); } while (n < 0 && errno == EINTR);
    close(ready[0]);
    int status = 0;
    if (n != 1) {
        result->stage = GANTRY_USER_NAMESPACE_STAGE_UNSHARE;
    } else {
        if (gantry_write_id_maps(pid, maps, result->message, sizeof(result->message)) < 0) {
            result->error = errno;
            result->stage = GANTRY_USER_NAMESPACE_STAGE_MAPS;
        } else {
            do { n = write(go[1], "", 1); } while (n < 0 && errno == EINTR);
        }
    }
    close(go[1]);
    struct task_report outcome = { ECHILD, -1 };
    do { n = read(report[0], &outcome, sizeof(outcome)); } while (n < 0 && errno == EINTR);
    close(report[0]);
    pid_t waited;
    do { waited = waitpid(pid, &status, __WALL); } while (waited < 0 && errno == EINTR);
    if (result->stage == GANTRY_USER_NAMESPACE_STAGE_MAPS) return -1;
    if (n != (ssize_t)sizeof(outcome)) {
        result->error = ECHILD;
        result->stage = GANTRY_USER_NAMESPACE_STAGE_TASK;
        return -1;
    }
    if (outcome.error) {
        result->error = outcome.error;
        result->failed_index = outcome.failed_index;
        if (!result->stage) result->stage = GANTRY_USER_NAMESPACE_STAGE_TASK;
        return -1;
    }
    return 0;
}
