// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kidreaper's kernel side: count what each tracked child of a pre-fork manager
 * does to memory. Small and dumb on purpose: it counts and records, the loader
 * judges. Two fault sources, one of which the loader attaches:
 *  - tracepoints: the x86 page-fault raw tracepoints see every fault (no tracefs, no
 *    kprobes needed). On 6.2+ a tracked child's write fault is paired with the events it
 *    raises before it ends (counter changes, a page-cache fault) and a present-page write
 *    with its mapping (MAP_SHARED), which tell a copy of inherited memory from writes that
 *    copy nothing; optional kprobes count the exact copies where kprobes exist.
 *  - mm: no fault tracepoint at all. kprobes or fentry on the arch-neutral write-protect
 *    path (do_wp_page, wp_page_copy, finish_fault) see only the faults that can copy;
 *    first touch and growth come from the mm counters (rss_stat), as in both modes.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "kidreaper/abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_EXITING_FLAG 0x00000004 /* task->flags bit: the task is exiting */
#define VM_SHARED_FLAG 0x00000008  /* vma->vm_flags bit: a MAP_SHARED mapping */
#define PAGE_MAPPING_ANON_BIT 0x1  /* page->mapping low bit: an anonymous page */
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

/* Exited children whose pid was reused before the loader read them (see struct kr_child). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KR_MAX_EXITS);
	__type(key, struct kr_exit_key);
	__type(value, struct kr_child);
} exits SEC(".maps");

/* See enum kr_capacity_map in the ABI header. */
__u64 capacity_drops[KR_CAPACITY_MAPS];

/* Sites the hooks inserted into cow_sites (see struct kr_site_key). */
__u64 cow_site_inserts;

#define KR_EEXIST 17 /* what a map update returns when the key is there already */

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

/* See struct kr_pending_fault in the ABI header. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kr_pending_fault);
} pending_fault SEC(".maps");

/* See struct kr_mapping_cache in the ABI header. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kr_mapping_cache);
} mapping_cache SEC(".maps");

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

/* Linux 6.2+: per-CPU counters; `count` is the shared part (lags a batch per CPU). Both
 * layouts are local flavours, so the code does not depend on the kernel a vmlinux.h came
 * from (bpf/vmlinux/x86's is a 6.2+ one, arm64's a 6.1 one). */
struct mm_struct___v6 {
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

static __noinline __s64 mm_counter_pages_v6(struct mm_struct *mm, int member)
{
	struct mm_struct___v6 *new = (void *)mm;

	switch (member) {
	case 0: return BPF_CORE_READ(new, rss_stat[0].count);
	case 1: return BPF_CORE_READ(new, rss_stat[1].count);
	case 2: return BPF_CORE_READ(new, rss_stat[2].count);
	case 3: return BPF_CORE_READ(new, rss_stat[3].count);
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

/*
 * Reclaim swaps a child's pages out from another context, which the rss_stat hook does
 * not follow: ANON and SWAP stay stale together, so their sum stays right. Reading the
 * two together at the child's own changes keeps the sum right afterwards too.
 */
static __always_inline void record_mem_change(struct kr_child *child, struct mm_struct *mm,
					      int member)
{
	if (member == KR_MEM_ANON || member == KR_MEM_SWAP) {
		record_mem(child, mm, KR_MEM_ANON);
		record_mem(child, mm, KR_MEM_SWAP);
		return;
	}
	record_mem(child, mm, member);
}

static __always_inline void count_drop(int map)
{
	__sync_fetch_and_add(&capacity_drops[map], 1);
}

/*
 * A new process has `tgid`, which `children` still holds: that child has gone. Its entry
 * moves to `exits` (never overwritten before the loader has read it); its hash counters are
 * dropped and its fast slot released, so that nothing of the new process counts for it.
 * Unless the caller overwrites it (keep_entry: the new process is a child to track), its
 * `children` entry is deleted.
 */
static __always_inline void displace_reused(__u32 tgid, struct kr_child *old, bool keep_entry)
{
	struct kr_exit_key key = {.tgid = tgid, .start_boottime_ns = old->start_boottime_ns};
	struct kr_child moved = *old;
	__u32 slot = tgid & (KR_FAULT_SLOTS - 1);
	__u32 *bucket = &tracked_buckets[tgid & (KR_TRACKED_BUCKETS - 1)];

	/* Its pid is free again: it has exited, whether or not the exit hook saw it. */
	moved.flags |= KR_CHILD_EXITED;
	if (bpf_map_update_elem(&exits, &key, &moved, BPF_ANY) != 0)
		count_drop(KR_CAPACITY_EXITS);
	if (slot_owner[slot] == tgid)
		slot_owner[slot] = 0; /* its counters stay in the slot for the loader */
	bpf_map_delete_elem(&faults, &tgid);
	if (!keep_entry && bpf_map_delete_elem(&children, &tgid) == 0 && *bucket > 0)
		__sync_fetch_and_add(bucket, -1);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 tgid = BPF_CORE_READ(child, tgid);
	struct kr_faults zero_faults = {};
	struct kr_child entry = {};
	struct kr_child *old = NULL;
	struct mm_struct *mm;
	bool track;
	long err;

	if (BPF_CORE_READ(child, pid) != tgid) /* a new thread, not a process */
		return 0;
	mm = BPF_CORE_READ(child, mm);
	/* A manager's child with its own mm (vfork / CLONE_VM: not a worker). */
	track =
	    bpf_map_lookup_elem(&managers, &parent_tgid) && mm && mm != BPF_CORE_READ(parent, mm);
	if (maybe_tracked(tgid))
		old = bpf_map_lookup_elem(&children, &tgid);
	if (old) /* a reused pid: whoever forked it */
		displace_reused(tgid, old, track);
	if (!track)
		return 0;

	entry.manager_tgid = parent_tgid;
	entry.flags = KR_CHILD_FROM_FORK;
	entry.fork_ns = bpf_ktime_get_ns();
	entry.start_boottime_ns = BPF_CORE_READ(child, start_boottime);
	for (int kind = 0; kind < KR_MEM_KINDS; kind++)
		record_mem(&entry, mm, kind);
	entry.anon_start_bytes = entry.mem_bytes[KR_MEM_ANON];
	entry.swap_start_bytes = entry.mem_bytes[KR_MEM_SWAP];

	/* Overwrite the displaced entry; insert (and count in the bucket) when there is none
	 * (or the loader deleted it meanwhile). */
	if (!old || bpf_map_update_elem(&children, &tgid, &entry, BPF_EXIST) != 0) {
		err = bpf_map_update_elem(&children, &tgid, &entry, BPF_NOEXIST);
		if (err == 0)
			__sync_fetch_and_add(&tracked_buckets[tgid & (KR_TRACKED_BUCKETS - 1)], 1);
		else if (err != -KR_EEXIST) {
			count_drop(KR_CAPACITY_CHILDREN);
			return 0;
		}
	}
	/* A reused pid starts from zero: drop any old per-CPU counters first. */
	bpf_map_delete_elem(&faults, &tgid);
	err = bpf_map_update_elem(&faults, &tgid, &zero_faults, BPF_NOEXIST);
	if (err != 0 && err != -KR_EEXIST)
		count_drop(KR_CAPACITY_FAULTS);
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

/* The child's fault counters on this CPU: its array slot, else its hash entry. */
static __always_inline struct kr_faults *fault_counters(__u32 tgid)
{
	__u32 slot = tgid & (KR_FAULT_SLOTS - 1);

	if (slot_owner[slot] == tgid)
		return bpf_map_lookup_elem(&slot_faults, &slot);
	return bpf_map_lookup_elem(&faults, &tgid);
}

/*
 * The write fault pending on this CPU, when it is the current thread's and has not
 * ended (the task's min_flt moves when it ends); NULL otherwise.
 */
static __always_inline struct kr_pending_fault *pending_of_current(__u64 pid_tgid)
{
	__u32 zero = 0;
	struct kr_pending_fault *pending = bpf_map_lookup_elem(&pending_fault, &zero);

	if (!pending || pending->pid_tgid != pid_tgid)
		return NULL;
	if (bpf_get_current_task_btf()->min_flt != pending->min_flt) {
		pending->pid_tgid = 0; /* that fault has ended */
		return NULL;
	}
	return pending;
}

/*
 * A counter change inside a pending write fault tells what it did: on a present page,
 * ANON rising alone is the zero page filled (fresh memory), FILE falling then ANON
 * rising is a private file page copied; on an absent page, ANON rising after a
 * page-cache fault is a private file page copied on first write. No change at all is a
 * copy of an inherited anonymous page (MAP_SHARED writes are told by their mapping).
 */
static __always_inline void pair_counter_change(__u64 pid_tgid, int member)
{
	struct kr_pending_fault *pending = pending_of_current(pid_tgid);
	struct kr_faults *counts;

	if (!pending)
		return;
	if (member == KR_MEM_FILE) {
		pending->flags |= KR_PENDING_FILE_DROPPED;
		return;
	}
	if (member != KR_MEM_ANON)
		return;
	counts = fault_counters(pid_tgid >> 32);
	if (counts) {
		if (!(pending->flags & KR_PENDING_PRESENT)) {
			if (pending->flags & KR_PENDING_FILEMAP)
				counts->paired_file_fills++;
		} else if (pending->flags & KR_PENDING_FILE_DROPPED) {
			counts->paired_file_copies++;
		} else {
			counts->paired_zero_fills++;
		}
	}
	pending->pid_tgid = 0;
}

/*
 * The hot hooks come in two builds of one body: plain, and pairing write faults with
 * the events they raise (6.2+). The loader loads one of each; the pairing build calls
 * helpers (bpf_get_current_task_btf, bpf_find_vma) that older kernels refuse to load
 * even where a read-only flag would switch them off.
 */
static __always_inline void follow_rss_stat(struct mm_struct *mm, int member, bool pair)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct task_struct *current;
	struct kr_child *child;

	/*
	 * Only changes made in a tracked child's own context are followed: the counts at fork
	 * are read by the fork hook, and one made by another process (reclaim) shows at the
	 * child's next own change of that kind. This keeps untracked processes cheap.
	 */
	if (!maybe_tracked(tgid))
		return;
	if (pair)
		pair_counter_change(pid_tgid, member);
	current = (void *)bpf_get_current_task();
	/* The value read is absolute: reading one event in (mask + 1) only delays it. */
	if (rss_sample_mask && (bpf_get_prandom_u32() & rss_sample_mask))
		return;
	if (BPF_CORE_READ(current, mm) != mm) /* not the child's own mm */
		return;
	/* Keep what the child had: ignore the teardown of an exiting mm. */
	if (BPF_CORE_READ(current, flags) & PF_EXITING_FLAG)
		return;
	child = bpf_map_lookup_elem(&children, &tgid);
	if (!child)
		return;
	record_mem_change(child, mm, member);
}

SEC("raw_tp/rss_stat")
int BPF_PROG(on_rss_stat, struct mm_struct *mm, int member)
{
	follow_rss_stat(mm, member, false);
	return 0;
}

SEC("raw_tp/rss_stat")
int BPF_PROG(on_rss_stat_pair, struct mm_struct *mm, int member)
{
	follow_rss_stat(mm, member, true);
	return 0;
}

static __always_inline void count_site(__u32 tgid, __u32 kind, __u64 address)
{
	struct kr_site_key key = {.tgid = tgid, .kind = kind, .address = address};
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(&cow_sites, &key);

	if (count)
		__sync_fetch_and_add(count, 1);
	else if (bpf_map_update_elem(&cow_sites, &key, &one, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&cow_site_inserts, 1);
}

static __always_inline void sample_cow_site(__u32 tgid, __u64 sequence, unsigned long address,
					    struct pt_regs *regs)
{
	if (!record_cow_sites || (sequence & cow_sample_mask) != 0)
		return;
	count_site(tgid, KR_SITE_DATA, (address >> KR_SITE_DATA_SHIFT) << KR_SITE_DATA_SHIFT);
	if (regs)
		count_site(tgid, KR_SITE_CODE, PT_REGS_IP_CORE(regs));
}

/*
 * The user registers saved at the top of the current task's kernel stack (task_pt_regs()
 * on x86-64 and arm64: the stack is KR_THREAD_SIZE, 16 KiB with 4 KiB pages and no KASAN):
 * the user code that faulted, or that made the system call that faulted in kernel mode.
 * struct pt_regs's size is the running kernel's (a CO-RE relocation: arm64's changed
 * between 5.10 and 6.1). Read with bpf_probe_read_kernel (PT_REGS_IP_CORE), so a wrong
 * guess reads a wrong address, never faults.
 */
#define KR_THREAD_SIZE 16384
static __always_inline struct pt_regs *user_regs_of_current(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	void *stack = BPF_CORE_READ(task, stack);

	if (!stack)
		return NULL;
	return (struct pt_regs *)(stack + KR_THREAD_SIZE - bpf_core_type_size(struct pt_regs));
}

/* The mmap lock sequence: a seqcount from 6.13, an int in 6.4-6.12 (per-VMA locks). */
struct mm_struct___seqcount {
	seqcount_t mm_lock_seq;
} __attribute__((preserve_access_index));

struct mm_struct___int_seq {
	int mm_lock_seq;
} __attribute__((preserve_access_index));

/* False where the kernel has no mm_lock_seq (before 6.4): nothing can be cached. */
static __always_inline bool mm_lock_sequence(struct mm_struct *mm, __u32 *sequence)
{
	if (bpf_core_field_exists(struct mm_struct___seqcount, mm_lock_seq)) {
		*sequence = ((struct mm_struct___seqcount *)mm)->mm_lock_seq.sequence;
		return true;
	}
	if (bpf_core_field_exists(struct mm_struct___int_seq, mm_lock_seq)) {
		*sequence = (__u32)((struct mm_struct___int_seq *)mm)->mm_lock_seq;
		return true;
	}
	return false;
}

static long read_mapping(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct kr_mapping_cache *entry = data;

	entry->start = vma->vm_start;
	entry->end = vma->vm_end;
	entry->shared = (vma->vm_flags & VM_SHARED_FLAG) ? 1 : 0;
	return 0;
}

/*
 * Whether a present-page write of a tracked child hits a MAP_SHARED mapping. The
 * mapping is looked up (bpf_find_vma: it defers its unlock to irq_work while interrupts
 * are off, as here, which costs microseconds) only when the per-CPU cache does not
 * hold it; a mapping that cannot be read is taken as private.
 */
static __always_inline bool write_hits_shared_mapping(__u32 tgid, unsigned long address)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kr_mapping_cache *cache;
	struct kr_mapping_cache found = {};
	struct mm_struct *mm = task->mm;
	__u32 zero = 0;
	__u32 sequence = 0;

	if (!mm || !mm_lock_sequence(mm, &sequence))
		return false;
	cache = bpf_map_lookup_elem(&mapping_cache, &zero);
	if (!cache)
		return false;
	if (cache->tgid == tgid && cache->lock_seq == sequence && cache->start <= address &&
	    address < cache->end)
		return cache->shared;
	if (bpf_find_vma(task, address, read_mapping, &found, 0) != 0)
		return false;
	found.tgid = tgid;
	found.lock_seq = sequence;
	*cache = found;
	return found.shared;
}

/* Leaves this write fault pending on this CPU for the events it raises. */
static __always_inline void start_pending_fault(__u64 pid_tgid, bool present)
{
	__u32 zero = 0;
	struct kr_pending_fault *pending = bpf_map_lookup_elem(&pending_fault, &zero);

	if (!pending)
		return;
	pending->pid_tgid = pid_tgid;
	pending->min_flt = bpf_get_current_task_btf()->min_flt;
	pending->flags = present ? KR_PENDING_PRESENT : 0;
}

static __always_inline void count_fault(unsigned long address, unsigned long error_code,
					struct pt_regs *regs, bool user_mode, bool pair)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct kr_faults *counts;
	bool present;

	if (!maybe_tracked(tgid))
		return;
	counts = fault_counters(tgid);
	if (!counts)
		return;
	if (!user_mode && (address >> 63)) /* kernel address: not the child's memory */
		return;
	if (!(error_code & KR_PF_WRITE)) {
		counts->other++;
		return;
	}
	present = error_code & KR_PF_PROT;
	if (present && user_mode) {
		counts->write_present_user++;
		sample_cow_site(tgid, counts->write_present_user, address, regs);
	} else if (present) {
		counts->write_present_kernel++;
		sample_cow_site(tgid, counts->write_present_kernel, address, NULL);
	} else {
		counts->write_absent++;
	}
	if (!pair)
		return;
	if (present && write_hits_shared_mapping(tgid, address)) {
		counts->paired_shared_writes++;
		return;
	}
	start_pending_fault(pid_tgid, present);
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(on_fault_user, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	count_fault(address, error_code, regs, true, false);
	return 0;
}

SEC("raw_tp/page_fault_kernel")
int BPF_PROG(on_fault_kernel, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	count_fault(address, error_code, regs, false, false);
	return 0;
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(on_fault_user_pair, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	count_fault(address, error_code, regs, true, true);
	return 0;
}

SEC("raw_tp/page_fault_kernel")
int BPF_PROG(on_fault_kernel_pair, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	count_fault(address, error_code, regs, false, true);
	return 0;
}

/* A page-cache fault inside a pending write to an absent page: a file mapping's page.
 * Loaded with pairing where the kernel has the tracepoint. */
SEC("raw_tp/mm_filemap_fault")
int BPF_PROG(on_filemap_fault)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kr_pending_fault *pending;

	if (!maybe_tracked(pid_tgid >> 32))
		return 0;
	pending = pending_of_current(pid_tgid);
	if (pending && !(pending->flags & KR_PENDING_PRESENT))
		pending->flags |= KR_PENDING_FILEMAP;
	return 0;
}

/*
 * The write-protect path, each hook in two attach kinds of one body: kprobe (any kernel
 * with kprobes; the loader gives the symbol, which may carry a suffix such as .isra.0)
 * and fentry (a BPF trampoline: cheaper; only where the loader's probe load succeeds).
 */

/* Each real copy on write: exact in both modes, where the kernel can probe it. */
static __always_inline void count_copy(struct vm_fault *vmf)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kr_faults *counts;
	struct page *old;

	if (!maybe_tracked(tgid))
		return;
	counts = fault_counters(tgid);
	if (!counts)
		return;
	old = BPF_CORE_READ(vmf, page);
	if (!old)
		counts->zero_page_copies++;
	else if ((unsigned long)BPF_CORE_READ(old, mapping) & PAGE_MAPPING_ANON_BIT)
		counts->cow_copies++;
	else
		counts->file_copies++;
}

/* A private file page copied on a write to a page not present (do_cow_fault sets
 * cow_page before finish_fault). */
static __always_inline void count_fill_copy(struct vm_fault *vmf)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kr_faults *counts;

	if (!maybe_tracked(tgid) || !BPF_CORE_READ(vmf, cow_page))
		return;
	counts = fault_counters(tgid);
	if (counts)
		counts->fill_copies++;
}

/* mm mode: a write fault on a write-protected present page (the COW class, whether or
 * not it copies), in user or kernel mode; its data address is sampled for diagnose. */
static __always_inline void count_wp_fault(struct vm_fault *vmf)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kr_faults *counts;

	if (!maybe_tracked(tgid))
		return;
	counts = fault_counters(tgid);
	if (!counts)
		return;
	counts->write_present_user++;
	if (record_cow_sites && (counts->write_present_user & cow_sample_mask) == 0)
		sample_cow_site(tgid, 0, BPF_CORE_READ(vmf, address), user_regs_of_current());
}

SEC("kprobe/wp_page_copy")
int BPF_KPROBE(on_wp_page_copy, struct vm_fault *vmf)
{
	count_copy(vmf);
	return 0;
}

SEC("kprobe/finish_fault")
int BPF_KPROBE(on_finish_fault, struct vm_fault *vmf)
{
	count_fill_copy(vmf);
	return 0;
}

SEC("kprobe/do_wp_page")
int BPF_KPROBE(on_do_wp_page, struct vm_fault *vmf)
{
	count_wp_fault(vmf);
	return 0;
}

SEC("fentry/wp_page_copy")
int BPF_PROG(on_wp_page_copy_fentry, struct vm_fault *vmf)
{
	count_copy(vmf);
	return 0;
}

SEC("fentry/finish_fault")
int BPF_PROG(on_finish_fault_fentry, struct vm_fault *vmf)
{
	count_fill_copy(vmf);
	return 0;
}

SEC("fentry/do_wp_page")
int BPF_PROG(on_do_wp_page_fentry, struct vm_fault *vmf)
{
	count_wp_fault(vmf);
	return 0;
}
