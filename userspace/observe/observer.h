// The loader: RAII over the BPF skeleton (open, configure, load, attach; detach on
// destruction) and a narrow interface to its maps.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/log.h"
#include "kidreaper/abi.h"
#include "model/cow_accounting.h"
#include "observe/bpf_stats.h"
#include "observe/capacity.h"
#include "observe/kernel_features.h"
#include "observe/readings.h"

struct observer_bpf;
struct bpf_link;
struct bpf_program;

namespace kidreaper {

class ProcFs;

struct ObserverOptions {
    // What to load (KernelFeatures::cow_source() gives what the kernel offers); a kprobe
    // that fails to attach is dropped with a warning, pairing needs a 6.2+ kernel.
    CowSource cow;
    // In mm mode, attach the probes by fentry where the kernel loads and attaches them
    // (else kprobes).
    bool prefer_fentry = true;
    bool record_cow_sites = false;        // sample where COW-class faults land (diagnose)
    std::uint32_t cow_sample_period = 8;  // one fault in this many per CPU; a power of two
    bool batch_lookups = true;  // read maps with BPF_MAP_LOOKUP_BATCH where the kernel can
    // From this many tracked children on, a batched read takes every fault slot in one call
    // instead of one lookup per child (measured: 2000 children, 4.9 -> 3.1 ms a read).
    std::size_t batch_slots_from = 512;
    // Capacity of the children and faults maps (0: KR_MAX_CHILDREN) and of the exits map
    // (0: KR_MAX_EXITS), set before load; tests shrink them to fill them.
    std::uint32_t max_children = 0;
    std::uint32_t max_exits = 0;
};

// What add_child did.
enum class ChildAdded {
    added,            // tracked from now on
    tracked_already,  // it has an entry (e.g. the fork hook saw it)
    map_full,         // not tracked: the children map is full (counted in capacity())
};

// Sampled faults of one child at one code or data address (struct kr_site_key).
struct CowSiteSample {
    pid_t pid = 0;
    std::uint32_t kind = KR_SITE_CODE;  // enum kr_site_kind
    std::uint64_t address = 0;
    std::uint64_t samples = 0;
};

class Observer {
public:
    // Opens, loads and attaches the BPF programs. Throws Error with a one-line cause.
    Observer(const ObserverOptions& options, const Logger& log);
    ~Observer();
    Observer(const Observer&) = delete;
    Observer& operator=(const Observer&) = delete;

    // Children `manager` forks from now on are tracked by the kernel. Throws Error when
    // it cannot be registered (a full managers map is counted in capacity() first).
    void add_manager(pid_t manager);
    void remove_manager(pid_t manager);
    // Tracks a child that already exists, with its current resident memory by kind and its
    // start time (kr_child.start_boottime_ns; 0 when unknown). Never throws on a full map:
    // that is counted in capacity() and returned. A full faults map still tracks it (its
    // memory; its faults only where it gets its fast slot).
    ChildAdded add_child(pid_t child, pid_t manager,
                         const std::array<std::uint64_t, KR_MEM_KINDS>& mem_bytes,
                         std::uint64_t start_ns = 0);
    // Drops a child's entries (after its exit has been read) and releases its slot, when
    // the `children` entry of that pid still has `start_ns` (the reading's start_ns): a
    // newer child with the same pid is never forgotten. Where the kernel has
    // BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps (5.14+) the compare and the delete are
    // one step (a newer entry deleted by a race is put back); elsewhere a fork that reuses
    // the pid between the compare and the delete loses the new child's entry. True when
    // it deleted the entry.
    bool forget_child(pid_t child, std::uint64_t start_ns);
    // Deletes a displaced reading's `exits` entry once the caller has recorded it.
    void consume_exit(const ChildReading& reading);
    // Forgets every entry of `manager`'s children, exits included (a watch that ends).
    void forget_children_of(pid_t manager);
    // Gives a tracked child a fast counter slot when its slot is free (see KR_FAULT_SLOTS);
    // children the fork hook added count in the hash until then. True when it owns one.
    bool claim_slot(pid_t child);

    // Every tracked child, and first every displaced exit (ChildReading::displaced), which
    // stays until consume_exit().
    std::vector<ChildReading> read_children() const;
    // The `children` entry of one pid.
    std::optional<ChildReading> read_child(pid_t child) const;

    // What the maps could not hold so far (cow_sites: as of the last read_cow_sites()).
    CapacityCounts capacity() const;
    // The maps that dropped something since the last call, each once per Observer; each
    // is also logged as a warning.
    std::vector<CapacityNotice> take_capacity_notices();

    // Every sampled COW site (empty unless record_cow_sites); each sample stands for
    // cow_sample_period() faults.
    std::vector<CowSiteSample> read_cow_sites() const;
    std::uint32_t cow_sample_period() const { return cow_sample_period_; }

    // How many tracked tgids share `child`'s pre-filter bucket (tests, diagnostics).
    std::uint32_t tracked_bucket_count(pid_t child) const {
        return __atomic_load_n(&tracked_bucket(child), __ATOMIC_SEQ_CST);
    }

    // Whether the exact-COW kprobe is attached.
    bool exact_cow() const { return source_.exact; }
    // How COW is told from other write faults, as loaded and attached.
    const CowSource& cow_source() const { return source_; }

    // The loaded programs (name and fd), for read_bpf_program_stats().
    std::vector<BpfProgramFd> program_fds() const;

    // The clock of kr_child's *_ns fields (CLOCK_MONOTONIC, as bpf_ktime_get_ns()).
    static std::uint64_t now_ns();

private:
    // The loader's record of a fast slot it gave away: the child, and its hash counts
    // right after the claim (frozen from then on), so that a displaced child's counts
    // can still be summed after the fork hook released its slot.
    struct SlotClaim {
        __u32 tgid = 0;  // 0: none, or consumed
        std::uint64_t start_ns = 0;
        FaultCounts hash_at_claim;
    };

    // Opens the skeleton, selects and configures its programs (fentry or kprobe builds of
    // the probes) and loads it; 0 or the negative error (skel_ then null).
    int open_and_load(const ObserverOptions& options, bool fentry);
    int fentry_attach_error() const;
    void attach(const Logger& log);
    bpf_link* attach_probe(bpf_program* kprobe, bpf_program* fentry,
                           const std::string& symbol) const;
    std::optional<std::vector<ChildReading>> read_children_batched() const;
    std::vector<ChildReading> read_exits() const;
    static ChildReading to_reading(pid_t pid, const kr_child& entry);
    // The child's counter in the BPF program's tracked_buckets (memory-mapped .bss).
    __u32& tracked_bucket(pid_t child) const;
    void release_bucket(pid_t child) const;
    // The owner of the child's slot in slot_owner (memory-mapped .bss).
    __u32& slot_owner(pid_t child) const;
    SlotClaim& slot_claim(pid_t child) {
        return claims_[static_cast<__u32>(child) & (KR_FAULT_SLOTS - 1)];
    }
    const SlotClaim& slot_claim(pid_t child) const {
        return claims_[static_cast<__u32>(child) & (KR_FAULT_SLOTS - 1)];
    }
    // Whether `tgid` with start `start_ns` has an entry in children or exits.
    bool has_entry(__u32 tgid, std::uint64_t start_ns) const;
    // The slot's counters summed over CPUs.
    FaultCounts slot_counts(pid_t child) const;
    // Whether the child owns its slot, claimed by this loader for the child with `start_ns`.
    bool owns_claimed_slot(pid_t child, std::uint64_t start_ns) const;
    // Adds the child's slot counters to `counts` when it owns its slot.
    void add_slot_counts(pid_t child, std::uint64_t start_ns, FaultCounts& counts) const;
    // The per-CPU hash counters of a child, summed; empty when it has no entry.
    FaultCounts hash_counts(pid_t child) const;
    // Deletes the children entry of `child` if it still has `start_ns`; true when it did.
    bool delete_child_entry(pid_t child, std::uint64_t start_ns);
    // Whether a failed map update's errno says the map is full.
    static bool map_full(int error);

    observer_bpf* skel_ = nullptr;
    const Logger& log_;
    int possible_cpus_ = 0;
    CowSource source_;
    ProbeSymbols symbols_;  // kallsyms names of the probed functions
    std::uint32_t cow_sample_period_ = 1;
    mutable bool batch_lookups_ = true;  // cleared when the kernel has no batch map ops
    std::size_t batch_slots_from_ = 512;
    bool lookup_and_delete_ = true;  // cleared when hash maps have no lookup-and-delete
    std::vector<SlotClaim> claims_ = std::vector<SlotClaim>(KR_FAULT_SLOTS);
    // What the loader could not add (the fork hook counts its own in the .bss).
    std::uint64_t children_full_ = 0;
    std::uint64_t faults_full_ = 0;
    std::uint64_t managers_full_ = 0;
    mutable std::uint64_t cow_sites_evicted_ = 0;  // as of the last read_cow_sites()
    CapacityNotices notices_;
};

// Registers `manager` and every child it has now (read from `proc`), so that nothing
// forked between the two steps is missed. Returns the children registered (a child the
// full children map cannot take is counted in the observer's capacity()).
std::vector<pid_t> track_manager(Observer& observer, const ProcFs& proc, pid_t manager);

// The boottime offset of this process's time namespace (the "boottime" line of
// `proc`/self/timens_offsets; 0 without one): /proc shows start times shifted by it, the
// kernel's task->start_boottime is not.
std::int64_t boottime_offset_ns(const ProcFs& proc);

}  // namespace kidreaper
