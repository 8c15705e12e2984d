// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency per cgroup: how long a task waits to run after it becomes runnable. On
 * sched_wakeup / sched_wakeup_new the woken task (the wakee, not the waker) is stamped; on
 * sched_switch the task switched in records its wait into a per-CPU log2 histogram keyed by its
 * cgroup, once by its v2 cgroup id and once by its v1 cpu-controller cgroup id (hybrid hosts put
 * pods only in v1); a preempted task that is still runnable is stamped again. A cgroup id is the
 * inode number of the cgroup's directory in its own hierarchy. tp_btf programs are preferred;
 * the raw_tp twins are the fallback on kernels where tp_btf does not attach. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define SLOTS 32
#define TASK_RUNNING 0
#define KIND_V2 1
#define KIND_V1_CPU 2

struct key {
	u64 id;
	u32 kind;
	u32 pad;
};

/* slots[i] counts waits in [2^i, 2^(i+1)) ns (slot 0 also holds 0 and 1 ns). */
struct hist {
	u64 slots[SLOTS];
	u64 count;
	u64 sum_ns;
	u64 max_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct key);
	__type(value, struct hist);
} hists SEC(".maps");

static __always_inline u32 log2_slot(u64 v)
{
	u32 r = 0;
#pragma unroll
	for (int s = 32; s > 0; s >>= 1) {
		if (v >= (1ULL << s)) {
			v >>= s;
			r += s;
		}
	}
	return r < SLOTS ? r : SLOTS - 1;
}

static __always_inline void stamp(u32 pid)
{
	if (pid == 0)
		return;
	u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &pid, &now, BPF_ANY);
}

static __always_inline void add(struct key *k, u64 delta, u32 slot)
{
	struct hist *h = bpf_map_lookup_elem(&hists, k);
	if (!h) {
		struct hist zero = {};
		bpf_map_update_elem(&hists, k, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, k);
		if (!h)
			return;
	}
	h->slots[slot & (SLOTS - 1)] += 1;
	h->count += 1;
	h->sum_ns += delta;
	if (delta > h->max_ns)
		h->max_ns = delta;
}

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	struct task_struct___old *o = (void *)t;
	return BPF_CORE_READ(o, state);
}

static __always_inline void on_switch(struct task_struct *prev, struct task_struct *next)
{
	if (task_state(prev) == TASK_RUNNING)
		stamp(BPF_CORE_READ(prev, pid));
	u32 pid = BPF_CORE_READ(next, pid);
	if (pid == 0)
		return;
	u64 *ts = bpf_map_lookup_elem(&start, &pid);
	if (!ts)
		return;
	u64 delta = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&start, &pid);
	u32 slot = log2_slot(delta);
	struct key k = {};
	k.id = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
	k.kind = KIND_V2;
	if (k.id)
		add(&k, delta, slot);
	int cpu = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cs = BPF_CORE_READ(next, cgroups);
	if (cs && cpu >= 0 && cpu < 16)
		bpf_core_read(&css, sizeof(css), &cs->subsys[cpu]);
	if (css) {
		struct key k1 = {};
		k1.id = BPF_CORE_READ(css, cgroup, kn, id);
		k1.kind = KIND_V1_CPU;
		if (k1.id && k1.id != k.id)
			add(&k1, delta, slot);
	}
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *p)
{
	stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *p)
{
	stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(wakeup_raw, struct task_struct *p)
{
	stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(wakeup_new_raw, struct task_struct *p)
{
	stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
