// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kidreaper's kernel side: count what each tracked child of a pre-fork manager
 * does to memory. Small and dumb on purpose: it counts and records, the loader
 * judges. Raw tracepoints only (no tracefs, no kprobes needed); one optional
 * kprobe for exact COW copies where the kernel has kprobes.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "kidreaper/abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_EXITING_FLAG 0x00000004 /* task->flags bit: the task is exiting */
#define PAGE_SHIFT_4K 12

/* Managers whose new children the fork hook adds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KR_MAX_MANAGERS);
	__type(key, __u32);
	__type(value, struct kr_manager);
} managers SEC(".maps");

/* Tracked children: identity, lifetime, resident memory by kind. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KR_MAX_CHILDREN);
	__type(key, __u32);
	__type(value, struct kr_child);
} children SEC(".maps");

/* Fault counters per child and CPU; presence of a key = tracked (hot-path filter). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, KR_MAX_CHILDREN);
	__type(key, __u32);
	__type(value, struct kr_faults);
} faults SEC(".maps");

/* See KR_TRACKED_BUCKETS in the ABI header. */
__u32 tracked_buckets[KR_TRACKED_BUCKETS];

static __always_inline bool maybe_tracked(__u32 tgid)
{
	return tracked_buckets[tgid & (KR_TRACKED_BUCKETS - 1)] != 0;
}

/* See KR_FAULT_SLOTS in the ABI header. */
__u32 slot_owner[KR_FAULT_SLOTS];

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KR_FAULT_SLOTS);
	__type(key, __u32);
	__type(value, struct kr_faults);
} slot_faults SEC(".maps");

/* Sampled sites of COW-class faults; filled only when record_cow_sites is set. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KR_MAX_SITES);
	__type(key, struct kr_site_key);
	__type(value, __u64);
} cow_sites SEC(".maps");

/* Set by the loader before load; the verifier prunes what they switch off. */
const volatile bool record_cow_sites = false;
const volatile __u32 cow_sample_mask = 7; /* record one COW-class fault in (mask + 1) per CPU */
/* Read one rss_stat event in (mask + 1): 0 where events are batched already (before 6.2). */
const volatile __u32 rss_sample_mask = 0;

/* Linux 5.5-6.1 kept the mm counters in an array of atomics (struct mm_rss_stat). */
struct mm_rss_stat___v5 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___v5 {
	struct mm_rss_stat___v5 rss_stat;
} __attribute__((preserve_access_index));

/*
 * Each layout is read in its own subprogram: the verifier only walks the one the
 * CO-RE guard selects, and the compiler cannot hoist the other's relocations.
 */
static __noinline __s64 mm_counter_pages_v5(struct mm_struct *mm, int member)
{
	struct mm_struct___v5 *old = (void *)mm;

	switch (member) {
	case 0: return BPF_CORE_READ(old, rss_stat.count[0].counter);
	case 1: return BPF_CORE_READ(old, rss_stat.count[1].counter);
	case 2: return BPF_CORE_READ(old, rss_stat.count[2].counter);
	case 3: return BPF_CORE_READ(old, rss_stat.count[3].counter);
	}
	return 0;
}

/* Linux 6.2+: per-CPU counters; `count` is the shared part (lags a batch per CPU). */
static __noinline __s64 mm_counter_pages_v6(struct mm_struct *mm, int member)
{
	switch (member) {
	case 0: return BPF_CORE_READ(mm, rss_stat[0].count);
	case 1: return BPF_CORE_READ(mm, rss_stat[1].count);
	case 2: return BPF_CORE_READ(mm, rss_stat[2].count);
	case 3: return BPF_CORE_READ(mm, rss_stat[3].count);
	}
	return 0;
}

/* Resident pages of one kind, as the mm's shared counter holds them. */
static __always_inline __s64 mm_counter_pages(struct mm_struct *mm, int member)
{
	if (bpf_core_type_exists(struct mm_rss_stat___v5))
		return mm_counter_pages_v5(mm, member);
	return mm_counter_pages_v6(mm, member);
}

static __always_inline void record_mem(struct kr_child *child, struct mm_struct *mm, int member)
{
	__u32 kind = (__u32)member;
	__s64 pages;

	if (kind >= KR_MEM_KINDS)
		return;
	pages = mm_counter_pages(mm, kind);
	kind &= KR_MEM_KINDS - 1; /* keeps the verifier sure of the bound */
	child->mem_bytes[kind] = pages > 0 ? (__u64)pages << PAGE_SHIFT_4K : 0;
	child->flags |= KR_CHILD_MEM_SEEN;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 tgid = BPF_CORE_READ(child, tgid);
	struct kr_faults zero_faults = {};
	struct kr_child entry = {};
	struct mm_struct *mm;

	if (BPF_CORE_READ(child, pid) != tgid) /* a new thread, not a process */
		return 0;
	if (!bpf_map_lookup_elem(&managers, &parent_tgid))
		return 0;
	mm = BPF_CORE_READ(child, mm);
	if (!mm || mm == BPF_CORE_READ(parent, mm)) /* vfork / CLONE_VM: not a worker */
		return 0;

	entry.manager_tgid = parent_tgid;
	entry.flags = KR_CHILD_FROM_FORK;
	entry.fork_ns = bpf_ktime_get_ns();
	for (int kind = 0; kind < KR_MEM_KINDS; kind++)
		record_mem(&entry, mm, kind);
	entry.anon_start_bytes = entry.mem_bytes[KR_MEM_ANON];

	if (!bpf_map_lookup_elem(&children, &tgid))
		__sync_fetch_and_add(&tracked_buckets[tgid & (KR_TRACKED_BUCKETS - 1)], 1);
	/* A reused pid starts from zero: drop the old per-CPU counters first. */
	bpf_map_delete_elem(&faults, &tgid);
	bpf_map_update_elem(&faults, &tgid, &zero_faults, BPF_ANY);
	bpf_map_update_elem(&children, &tgid, &entry, BPF_ANY);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct kr_child *child = bpf_map_lookup_elem(&children, &tgid);

	if (!child)
		return 0;
	if (BPF_CORE_READ(task, signal, live.counter) != 0) /* other threads remain */
		return 0;
	child->exit_ns = bpf_ktime_get_ns();
	child->flags |= KR_CHILD_EXITED;
	return 0;
}

SEC("raw_tp/rss_stat")
int BPF_PROG(on_rss_stat, struct mm_struct *mm, int member)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *current;
	struct kr_child *child;

	/*
	 * Only changes made in a tracked child's own context are followed: the counts at fork
	 * are read by the fork hook, and one made by another process (reclaim) shows at the
	 * child's next own change of that kind. This keeps untracked processes cheap.
	 */
	if (!maybe_tracked(tgid))
		return 0;
	/* The value read is absolute: reading one event in (mask + 1) only delays it. */
	if (rss_sample_mask && (bpf_get_prandom_u32() & rss_sample_mask))
		return 0;
	current = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(current, mm) != mm) /* not the child's own mm */
		return 0;
	/* Keep what the child had: ignore the teardown of an exiting mm. */
	if (BPF_CORE_READ(current, flags) & PF_EXITING_FLAG)
		return 0;
	child = bpf_map_lookup_elem(&children, &tgid);
	if (!child)
		return 0;
	record_mem(child, mm, member);
	return 0;
}

/* The child's fault counters on this CPU: its array slot, else its hash entry. */
static __always_inline struct kr_faults *fault_counters(__u32 tgid)
{
	__u32 slot = tgid & (KR_FAULT_SLOTS - 1);

	if (slot_owner[slot] == tgid)
		return bpf_map_lookup_elem(&slot_faults, &slot);
	return bpf_map_lookup_elem(&faults, &tgid);
}

static __always_inline void count_site(__u32 tgid, __u32 kind, __u64 address)
{
	struct kr_site_key key = {.tgid = tgid, .kind = kind, .address = address};
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(&cow_sites, &key);

	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&cow_sites, &key, &one, BPF_NOEXIST);
}

static __always_inline void sample_cow_site(__u32 tgid, __u64 sequence, unsigned long address,
					    struct pt_regs *regs)
{
	if (!record_cow_sites || (sequence & cow_sample_mask) != 0)
		return;
	count_site(tgid, KR_SITE_DATA, (address >> KR_SITE_DATA_SHIFT) << KR_SITE_DATA_SHIFT);
	if (regs)
		count_site(tgid, KR_SITE_CODE, BPF_CORE_READ(regs, ip));
}

static __always_inline void count_fault(unsigned long address, unsigned long error_code,
					struct pt_regs *regs, bool user_mode)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kr_faults *counts;

	if (!maybe_tracked(tgid))
		return;
	counts = fault_counters(tgid);
	if (!counts)
		return;
	if (!user_mode && (address >> 63)) /* kernel address: not the child's memory */
		return;
	if ((error_code & (KR_PF_WRITE | KR_PF_PROT)) == (KR_PF_WRITE | KR_PF_PROT)) {
		if (user_mode) {
			counts->write_present_user++;
			sample_cow_site(tgid, counts->write_present_user, address, regs);
		} else {
			counts->write_present_kernel++;
			sample_cow_site(tgid, counts->write_present_kernel, address, NULL);
		}
	} else if (error_code & KR_PF_WRITE) {
		counts->write_absent++;
	} else {
		counts->other++;
	}
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(on_fault_user, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	count_fault(address, error_code, regs, true);
	return 0;
}

SEC("raw_tp/page_fault_kernel")
int BPF_PROG(on_fault_kernel, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	count_fault(address, error_code, regs, false);
	return 0;
}

/* Optional precision: each real copy on write. Loaded only where kprobes exist. */
SEC("kprobe/wp_page_copy")
int BPF_KPROBE(on_wp_page_copy, struct vm_fault *vmf)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kr_faults *counts;

	if (!maybe_tracked(tgid))
		return 0;
	counts = fault_counters(tgid);
	if (!counts)
		return 0;
	if (BPF_CORE_READ(vmf, page))
		counts->cow_copies++;
	else
		counts->zero_page_copies++;
	return 0;
}
