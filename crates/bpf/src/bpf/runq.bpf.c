// SPDX-License-Identifier: GPL-2.0
/* Run-queue latency per cgroup: how long a task waits to run after it becomes runnable. On
 * sched_wakeup / sched_wakeup_new the woken task (the wakee, not the waker) is stamped; on
 * sched_switch the task switched in records its wait into a per-CPU log2 histogram keyed by its
 * cgroup: by its v2 cgroup id and, where the cpu controller is on a v1 hierarchy, by its v1
 * cpu-controller cgroup id too (hybrid hosts put pods only in v1; watched, by that one alone); a
 * preempted task that is still runnable is stamped again. A cgroup id is the inode number of the
 * cgroup's directory in its own hierarchy, so ids of two hierarchies are told apart by kind, never
 * compared. tp_btf programs are preferred: they keep the stamp in task-local storage and read task
 * fields directly, about a third of the cost of a hash map and probe reads (`tidal bench
 * bpf-cost`); the raw_tp twins (a pid-keyed hash, CO-RE probe reads) are the fallback where tp_btf
 * or task storage in tracing programs (5.12+) is not there. With sampling (`sample_mask`) 1 in N
 * runnable transitions is stamped. Only the cgroups in `watch` get histograms (the agent puts its
 * online workloads' keys there), unless `record_all`. */
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

/* The tp_btf programs' stamps: one u64 per task, freed with the task. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} tstart SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct key);
	__type(value, struct hist);
} hists SEC(".maps");

/* The cgroups whose waits are recorded (the agent's online workloads), keyed as hists; the value
 * is unused. A wait of any other cgroup costs two failed lookups and nothing more, unless
 * record_all. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct key);
	__type(value, u8);
} watch SEC(".maps");

/* Set before load: record every cgroup's waits, watched or not (tests, the bench, doctor). */
const volatile bool record_all = false;

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

/* Set before load: stamp 1 in (sample_mask + 1) wakeups, chosen at random (0: every one). */
const volatile u32 sample_mask = 0;

static __always_inline bool sampled(void)
{
	return !sample_mask || !(bpf_get_prandom_u32() & sample_mask);
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
		/* Made only for a watched cgroup: a watched one costs what it did before the watch map.
		 * The agent deletes a histogram when its cgroup leaves the watch, and any made in the
		 * race with that when it next reads the map. */
		if (!record_all && !bpf_map_lookup_elem(&watch, k))
			return;
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

/* Adds one wait under the task's v2 id and, where it has one (id1 not 0), its v1 cpu-controller
 * id; watched (not record_all), under the one the agent reads: the v1 id where there is one. */
static __always_inline void record(u64 delta, u64 id2, u64 id1)
{
	u32 slot = log2_slot(delta);
	struct key k = {};
	k.kind = KIND_V2;
	k.id = id2;
	if (id2 && (record_all || !id1))
		add(&k, delta, slot);
	if (id1) {
		k.kind = KIND_V1_CPU;
		k.id = id1;
		add(&k, delta, slot);
	}
}

/* -1 on a kernel without the cpu controller: only v2 ids are recorded then. */
static __always_inline int cpu_subsys(void)
{
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, cpu_cgrp_id))
		return -1;
	return bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
}

/* raw_tp: pid-keyed stamps, every field through CO-RE probe reads. A task switched out still
 * runnable (preempted) waits from now; any other has its stamp dropped, so a stamp consumed at
 * switch-in is always newer than the task's last switch-out (a wakeup of a task still on its CPU
 * would otherwise leave one behind, and sampling would let it survive). */
static __always_inline void on_switch(bool preempt, struct task_struct *prev,
				      struct task_struct *next)
{
	u32 prev_pid = BPF_CORE_READ(prev, pid);
	if ((preempt || task_state(prev) == TASK_RUNNING) && sampled())
		stamp(prev_pid);
	else if (prev_pid)
		bpf_map_delete_elem(&start, &prev_pid);
	u32 pid = BPF_CORE_READ(next, pid);
	if (pid == 0)
		return;
	u64 *ts = bpf_map_lookup_elem(&start, &pid);
	if (!ts)
		return;
	u64 delta = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&start, &pid);
	u64 id2 = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
	u64 id1 = 0;
	int cpu = cpu_subsys();
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cs = BPF_CORE_READ(next, cgroups);
	if (cs && cpu >= 0 && cpu < (int)(sizeof(cs->subsys) / sizeof(cs->subsys[0])))
		bpf_core_read(&css, sizeof(css), &cs->subsys[cpu]);
	/* Hierarchy 0 is v2's: a cpu controller there is not a v1 id. */
	if (css && BPF_CORE_READ(css, cgroup, root, hierarchy_id) != 0)
		id1 = BPF_CORE_READ(css, cgroup, kn, id);
	record(delta, id2, id1);
}

/* tp_btf: stamps in task-local storage, fields read directly (BTF-typed pointers). */
static __always_inline void stamp_task(struct task_struct *p)
{
	if (p->pid == 0)
		return;
	u64 *ts = bpf_task_storage_get(&tstart, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = bpf_ktime_get_ns();
}

static __always_inline long task_state_btf(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___old *)t)->state;
}

static __always_inline void on_switch_btf(bool preempt, struct task_struct *prev,
					  struct task_struct *next)
{
	if ((preempt || task_state_btf(prev) == TASK_RUNNING) && sampled()) {
		stamp_task(prev);
	} else {
		u64 *old = bpf_task_storage_get(&tstart, prev, 0, 0);
		if (old)
			*old = 0;
	}
	if (next->pid == 0)
		return;
	u64 *ts = bpf_task_storage_get(&tstart, next, 0, 0);
	if (!ts || *ts == 0)
		return;
	u64 delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	struct css_set *cs = next->cgroups;
	if (!cs)
		return;
	u64 id2 = cs->dfl_cgrp->kn->id;
	u64 id1 = 0;
	int cpu = cpu_subsys();
	if (cpu >= 0 && cpu < (int)(sizeof(cs->subsys) / sizeof(cs->subsys[0]))) {
		struct cgroup_subsys_state *css = cs->subsys[cpu];
		/* Hierarchy 0 is v2's: a cpu controller there is not a v1 id. */
		if (css && css->cgroup->root->hierarchy_id != 0)
			id1 = css->cgroup->kn->id;
	}
	record(delta, id2, id1);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *p)
{
	if (sampled())
		stamp_task(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *p)
{
	if (sampled())
		stamp_task(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch_btf(preempt, prev, next);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(wakeup_raw, struct task_struct *p)
{
	if (sampled())
		stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(wakeup_new_raw, struct task_struct *p)
{
	if (sampled())
		stamp(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(preempt, prev, next);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
