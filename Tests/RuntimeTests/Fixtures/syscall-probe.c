// Calls system calls a container must not make and prints, for each, "ok"
// or the errno's name; used to check the seccomp filter.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct { const char *name; long number; long a, b, c, d, e; } calls[] = {
        { "unshare", SYS_unshare, CLONE_NEWUTS, 0, 0, 0, 0 },
        { "mount", SYS_mount, (long)"none", (long)"/tmp", (long)"tmpfs", 0, 0 },
        { "keyctl", SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0, 0, 0 },
        { "kexec_load", SYS_kexec_load, 0, 0, 0, 0, 0 },
        { "bpf", SYS_bpf, 0, 0, 0, 0, 0 },
        { "getpid", SYS_getpid, 0, 0, 0, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        long result = syscall(calls[i].number, calls[i].a, calls[i].b, calls[i].c, calls[i].d, calls[i].e);
        printf("%s %s\n", calls[i].name, result >= 0 ? "ok" : errno == EPERM ? "EPERM" : strerrorname_np(errno));
    }
    return 0;
}
