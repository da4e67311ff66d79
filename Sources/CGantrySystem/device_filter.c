// The device allow list of a cgroup v2 container: a BPF_CGROUP_DEVICE
// program emitted instruction by instruction (no compiler, no libbpf).
#include "CGantrySystem.h"

#include <errno.h>
#include <stdlib.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// Each rule is at most 8 instructions; the program has 6 more.
#define GANTRY_DEVICE_RULES_MAX 512
#define GANTRY_DEVICE_INSNS_MAX (GANTRY_DEVICE_RULES_MAX * 8 + 8)

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    struct bpf_insn i;
    memset(&i, 0, sizeof i);
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

// The context: struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }.
// Registers: r2 the access asked for, r3 the device type, r4 major, r5 minor.
enum { ACCESS = 2, TYPE = 3, MAJOR = 4, MINOR = 5, SCRATCH = 6 };

struct check {
    uint8_t reg;
    int32_t value;
    int is_mask;
};

static size_t emit_rule(struct bpf_insn *out, const struct gantry_device_rule *rule) {
    // Conditions first, as jumps past the rule's end when one fails; their
    // offsets are known once the rule's length is.
    struct check checks[4];
    size_t n = 0;
    if (rule->type == 'b' || rule->type == 'c') {
        checks[n++] = (struct check){TYPE, rule->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, 0};
    }
    unsigned all = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;
    if ((rule->access & all) != all) checks[n++] = (struct check){SCRATCH, (int32_t)(~rule->access & all), 1};
    if (rule->major >= 0) checks[n++] = (struct check){MAJOR, (int32_t)rule->major, 0};
    if (rule->minor >= 0) checks[n++] = (struct check){MINOR, (int32_t)rule->minor, 0};
    size_t length = 2;  // allow: r0 = 1; exit
    for (size_t i = 0; i < n; i++) length += checks[i].is_mask ? 3 : 1;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (checks[i].is_mask) {
            // Any access asked for that the rule does not give: not this rule.
            out[at++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, SCRATCH, ACCESS, 0, 0);
            out[at++] = insn(BPF_ALU64 | BPF_AND | BPF_K, SCRATCH, 0, 0, checks[i].value);
            out[at] = insn(BPF_JMP | BPF_JNE | BPF_K, SCRATCH, 0, (int16_t)(length - at - 1), 0);
            at++;
        } else {
            out[at] = insn(BPF_JMP | BPF_JNE | BPF_K, checks[i].reg, 0, (int16_t)(length - at - 1), checks[i].value);
            at++;
        }
    }
    out[at++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
    out[at++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return at;
}

int gantry_device_filter_attach(int cgroup_fd, const struct gantry_device_rule *rules, size_t count, char *log, size_t log_size) {
    if (count > GANTRY_DEVICE_RULES_MAX) {
        errno = E2BIG;
        return -1;
    }
    struct bpf_insn *program = calloc(GANTRY_DEVICE_INSNS_MAX, sizeof *program);
    if (program == NULL) return -1;
    size_t at = 0;
    // r2 = access_type >> 16, r3 = access_type & 0xffff, r4 = major, r5 = minor.
    program[at++] = insn(BPF_LDX | BPF_W | BPF_MEM, ACCESS, BPF_REG_1, 0, 0);
    program[at++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, TYPE, ACCESS, 0, 0);
    program[at++] = insn(BPF_ALU64 | BPF_AND | BPF_K, TYPE, 0, 0, 0xffff);
    program[at++] = insn(BPF_ALU64 | BPF_RSH | BPF_K, ACCESS, 0, 0, 16);
    program[at++] = insn(BPF_LDX | BPF_W | BPF_MEM, MAJOR, BPF_REG_1, 4, 0);
    program[at++] = insn(BPF_LDX | BPF_W | BPF_MEM, MINOR, BPF_REG_1, 8, 0);
    for (size_t i = 0; i < count; i++) {
        if (rules[i].type != 'a' && rules[i].type != 'b' && rules[i].type != 'c') {
            free(program);
            errno = EINVAL;
            return -1;
        }
        at += emit_rule(program + at, &rules[i]);
    }
    // Nothing allowed it.
    program[at++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
    program[at++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    load.insns = (uint64_t)(uintptr_t)program;
    load.insn_cnt = (uint32_t)at;
    load.license = (uint64_t)(uintptr_t)"Apache-2.0";
    if (log != NULL && log_size > 0) {
        log[0] = 0;
        load.log_buf = (uint64_t)(uintptr_t)log;
        load.log_size = (uint32_t)log_size;
        load.log_level = 1;
    }
    int program_fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
    if (program_fd < 0 && errno == ENOSPC && log != NULL) {
        // The log was too small to hold the verifier's words: load without it.
        load.log_buf = 0;
        load.log_size = 0;
        load.log_level = 0;
        program_fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
    }
    int load_error = errno;
    free(program);
    if (program_fd < 0) {
        errno = load_error;
        return -1;
    }
    union bpf_attr attach;
    memset(&attach, 0, sizeof attach);
    attach.target_fd = (uint32_t)cgroup_fd;
    attach.attach_bpf_fd = (uint32_t)program_fd;
    attach.attach_type = BPF_CGROUP_DEVICE;
    attach.attach_flags = BPF_F_ALLOW_MULTI;
    int result = (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach);
    int saved = errno;
    close(program_fd);
    errno = saved;
    return result < 0 ? -1 : 0;
}
