/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ABI between kidreaper's BPF programs (bpf/) and its loader (userspace/).
 * Fixed-width types only; included by both sides. The C++ side checks sizes and
 * offsets with static_asserts (userspace/abi_checks.cpp), so a change here that
 * forgets one side fails to build.
 */
#ifndef KIDREAPER_ABI_H
#define KIDREAPER_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Capacity of the maps; the loader may raise it before load. */
#define KR_MAX_MANAGERS 64
#define KR_MAX_CHILDREN 16384
/*
 * Capacity of the `exits` map: exited children whose pid a new process took before the
 * loader read their exit. A pid comes back only after the kernel has handed out the other
 * free pids (pid_max is 32768 at the least), so between two reads of the loader (about a
 * second) only a fork storm reuses many: 4096 pending exits is far more than that.
 */
#define KR_MAX_EXITS 4096

/*
 * The hot-path pre-filter: the global array tracked_buckets[KR_TRACKED_BUCKETS] (in the
 * program's .bss) counts the tracked tgids that hash to each bucket (tgid & mask). A
 * fault of a process whose bucket is zero costs one array load, no hash lookup. The fork
 * hook and the loader increment a bucket when they add a child; the loader decrements it
 * when it forgets one, and the fork hook when a process that is not tracked reuses a
 * tracked child's pid (its entry goes); a stale non-zero bucket only costs a lookup.
 */
#define KR_TRACKED_BUCKETS 16384

/*
 * Fast counters: a tracked child may own the slot (tgid & (KR_FAULT_SLOTS - 1)) of the
 * per-CPU array `slot_faults`; the global array slot_owner[KR_FAULT_SLOTS] (in .bss)
 * holds the owning tgid, 0 when free. An array slot costs the hot path no hash lookup.
 * Only the loader claims a slot (zeroing its counters first); the loader releases it, and
 * so does the fork hook when a new process reuses the owner's tgid (the new child starts
 * in its fresh hash entry, and the old one's slot counters stay for the loader to read
 * until it claims the slot again). A child without a slot counts in the `faults` hash.
 * The loader adds both up.
 */
#define KR_FAULT_SLOTS 2048

/* Indexes of kr_child.mem_bytes, in the kernel's own order (MM_FILEPAGES...). */
enum kr_mem_kind {
	KR_MEM_FILE = 0,  /* file-backed resident pages */
	KR_MEM_ANON = 1,  /* anonymous resident pages */
	KR_MEM_SWAP = 2,  /* swap entries */
	KR_MEM_SHMEM = 3, /* shared memory resident pages */
	KR_MEM_KINDS = 4,
};

/* kr_child.flags */
enum kr_child_flags {
	KR_CHILD_FROM_USERSPACE = 1, /* registered by the loader (existed at start) */
	KR_CHILD_FROM_FORK = 2,	     /* added by the fork hook in the kernel */
	KR_CHILD_EXITED = 4,	     /* the whole thread group has exited */
	KR_CHILD_MEM_SEEN = 8,	     /* mem_bytes holds at least one reading */
};

/*
 * Value of the `managers` map, keyed by the manager's tgid (__u32).
 * Children the manager forks after registration are added by the kernel.
 */
struct kr_manager {
	__u64 registered_ns; /* bpf_ktime_get_ns()-clock time of registration, set by the loader */
};

/*
 * Value of the `children` map, keyed by the child's tgid (__u32): one entry per
 * tracked child. Written by the fork, exit and rss hooks; read and deleted by the
 * loader (an exited child stays until the loader has read it).
 *
 * A pid can be reused before the loader has read an exit. An exited child's last reading
 * is never overwritten before the loader has read it: the fork hook that sees a new
 * process (any process) with a tgid that `children` holds moves the old entry into the
 * `exits` map, keyed by tgid and start time, before it writes the new child (if the new
 * process is a manager's child) or deletes the entry (if not). The old child's memory and
 * exit time survive. Its fault counters survive where it owned its fast slot (the fork
 * hook only releases the slot; the loader kept the rest when it claimed the slot); the
 * per-CPU `faults` hash entry cannot be read from another CPU on older kernels, so the
 * faults a child counted there since the loader last read it are lost with the entry.
 * The loader deletes an entry only when its start time is the one it read (see
 * start_boottime_ns), so it never forgets a newer child with the same pid.
 */
struct kr_child {
	__u32 manager_tgid;	       /* the parent it was forked from */
	__u32 flags;		       /* enum kr_child_flags */
	__u64 fork_ns;		       /* fork time (ktime ns); 0 when it existed before tracking */
	__u64 exit_ns;		       /* exit time (ktime ns); 0 while alive */
	__u64 mem_bytes[KR_MEM_KINDS]; /* last resident size by enum kr_mem_kind, in bytes */
	__u64 anon_start_bytes; /* mem_bytes[KR_MEM_ANON] when tracking began (fork or registration)
				 */
	__u64 swap_start_bytes; /* mem_bytes[KR_MEM_SWAP] when tracking began */
	/*
	 * The child's identity against pid reuse: task->start_boottime (ns since boot,
	 * CLOCK_BOOTTIME), read by the fork hook. /proc/PID/stat field 22 is the same time in
	 * clock ticks (ns / (1e9 / USER_HZ)); for a child it registers, the loader fills it in
	 * from those ticks (then it is a whole number of ticks).
	 */
	__u64 start_boottime_ns;
};

/*
 * Key of the `exits` map (value: struct kr_child, flagged KR_CHILD_EXITED): an exited
 * child moved out of `children` when its pid was reused. The start time keeps two
 * exits of one pid apart. The loader deletes an entry once it has read it.
 */
struct kr_exit_key {
	__u32 tgid;
	__u32 pad; /* zero */
	__u64 start_boottime_ns;
};

/*
 * Indexes of the program's .bss array capacity_drops[KR_CAPACITY_MAPS]: what the hooks
 * could not record because a map was full, counted per map.
 */
enum kr_capacity_map {
	KR_CAPACITY_CHILDREN = 0, /* forked children not tracked: `children` full */
	KR_CAPACITY_FAULTS = 1,	  /* tracked children without fault counters: `faults` full */
	KR_CAPACITY_EXITS = 2,	  /* exits of reused pids lost: `exits` full */
	KR_CAPACITY_MAPS = 3,
};

/*
 * Value of the per-CPU `faults` map, keyed by the child's tgid (__u32). Each
 * counter counts page faults taken by the child's threads on user addresses;
 * the loader sums the CPUs. The entry's existence is what marks a tgid tracked
 * on the hot path.
 *
 * The first four classify every fault by its x86 error code alone (the "fault class").
 * Where kprobes exist, the *_copies counters count what the kernel really copied; on
 * 6.2+ the paired_* counters say what a write fault did, from the events it raised
 * before it ended. userspace/cow_accounting.h turns them into COW and growth.
 */
struct kr_faults {
	__u64 write_present_user; /* user-mode write to a present page (PROT|WRITE): the COW class;
				     in mm mode every write-protect fault (do_wp_page), user or
				     kernel mode */
	__u64 write_present_kernel; /* the same taken in kernel mode on a user address (e.g. read()
				       into it) */
	__u64 write_absent;	    /* write to a page not present: first touch of fresh memory */
	__u64 other;		    /* reads, instruction fetches, anything else */
	__u64 cow_copies;	    /* wp_page_copy of an anonymous page (kprobe, optional) */
	__u64 zero_page_copies;	    /* wp_page_copy of the shared zero page (kprobe, optional) */
	__u64 file_copies;	    /* wp_page_copy of a file page (kprobe, optional) */
	__u64 fill_copies; /* finish_fault with a COW page: a private file page copied on a write
			      to a page not present (do_cow_fault; kprobe, optional) */
	/* What a write fault did, from the events it raised before it ended (6.2+): */
	__u64 paired_zero_fills;    /* present page, ANON rose alone: the zero page filled */
	__u64 paired_file_copies;   /* present page, FILE fell and ANON rose: a file page copied */
	__u64 paired_shared_writes; /* present page in a MAP_SHARED mapping (writeback had
				       write-protected it): copies nothing */
	__u64 paired_file_fills; /* absent page, a page-cache fault then ANON rose: a private file
				    page copied on first write */
};

/*
 * Per-CPU cache of the hooks (the `mapping_cache` array, one entry): the mapping of the
 * last present-page write fault of a tracked child looked up on this CPU, valid while
 * the mm's mmap lock sequence (mm_lock_seq, 6.4+) has not moved.
 */
struct kr_mapping_cache {
	__u32 tgid;	/* whose mapping; 0 when empty */
	__u32 lock_seq; /* mm->mm_lock_seq when it was looked up */
	__u64 start;	/* [start, end) of the mapping */
	__u64 end;
	__u64 shared; /* 1 for a MAP_SHARED mapping */
};

/* kr_pending_fault.flags */
enum kr_pending_flags {
	KR_PENDING_PRESENT = 1,	     /* the fault was on a present page */
	KR_PENDING_FILE_DROPPED = 2, /* the FILE counter changed during the fault */
	KR_PENDING_FILEMAP = 4,	     /* the fault went through the page cache (filemap_fault) */
};

/*
 * Per-CPU scratch of the hooks (the `pending_fault` array, one entry): the last write
 * fault of a tracked child on this CPU, for the events it raises before it ends.
 */
struct kr_pending_fault {
	__u64 pid_tgid; /* the faulting thread; 0 when nothing is pending */
	__u64 min_flt;	/* task->min_flt at fault entry: unchanged until the fault ends */
	__u32 flags;	/* enum kr_pending_flags */
	__u32 pad;
};

/* Where COW-class faults land, sampled (diagnose only). */
enum kr_site_kind {
	KR_SITE_CODE = 0, /* address = the faulting instruction (user mode faults only) */
	KR_SITE_DATA =
	    1, /* address = the faulting data address, rounded down to KR_SITE_DATA_SHIFT */
};

#define KR_SITE_DATA_SHIFT 16 /* data addresses are bucketed by 64 KiB */
#define KR_MAX_SITES 32768

/*
 * Key of the LRU `cow_sites` map; the value is a __u64 count of sampled faults. The hooks
 * count the sites they insert (cow_site_inserts in .bss): the loader takes what is
 * missing of them as evicted (nothing else deletes a site).
 */
struct kr_site_key {
	__u32 tgid;    /* the child */
	__u32 kind;    /* enum kr_site_kind */
	__u64 address; /* see enum kr_site_kind */
};

/* Page-fault error-code bits on x86 (arch/x86/include/asm/trap_pf.h). */
#define KR_PF_PROT 0x1
#define KR_PF_WRITE 0x2
#define KR_PF_USER 0x4

#endif /* KIDREAPER_ABI_H */
