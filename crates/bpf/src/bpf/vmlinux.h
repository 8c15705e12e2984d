/* Trimmed vmlinux.h: only the kernel types runq.bpf.c reads, each marked for CO-RE relocation, so
 * field offsets are fixed up against the running kernel's BTF at load time whatever kernel built
 * this. Regenerate or extend with scripts/gen-vmlinux.sh (bpftool btf dump ... format c). */
#ifndef __TIDAL_VMLINUX_H__
#define __TIDAL_VMLINUX_H__

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u8 u8;
typedef __s16 s16;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#if defined(__clang__)
#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)
#endif

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	struct cgroup_subsys_state *subsys[16];
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	unsigned int __state;
	pid_t pid;
	pid_t tgid;
	struct css_set *cgroups;
};

/* Before 5.14 the state field was `long state`. */
struct task_struct___old {
	long state;
};

/* x86-64 registers, for bpf_tracing.h's macros (unused by this program). */
struct pt_regs {
	long unsigned int r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	long unsigned int orig_ax, ip, cs, flags, sp, ss;
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

/* Its values differ between kernel configs: read through bpf_core_enum_value. */
enum cgroup_subsys_id {
	cpu_cgrp_id = 1,
};

#endif
