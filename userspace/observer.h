// The loader: RAII over the BPF skeleton (open, configure, load, attach; detach on
// destruction) and a narrow interface to its maps.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "cow_accounting.h"
#include "kidreaper/abi.h"
#include "log.h"
#include "readings.h"

struct observer_bpf;

namespace kidreaper {

class ProcFs;

struct ObserverOptions {
    // What to load (KernelFeatures::cow_source() gives what the kernel offers); a kprobe
    // that fails to attach is dropped with a warning, pairing needs a 6.2+ kernel.
    CowSource cow;
    bool record_cow_sites = false;        // sample where COW-class faults land (diagnose)
    std::uint32_t cow_sample_period = 8;  // one fault in this many per CPU; a power of two
    bool batch_lookups = true;  // read maps with BPF_MAP_LOOKUP_BATCH where the kernel can
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

    // Children `manager` forks from now on are tracked by the kernel.
    void add_manager(pid_t manager);
    void remove_manager(pid_t manager);
    // Tracks a child that already exists, with its current resident memory by kind.
    // False when it is tracked already (e.g. the fork hook saw it).
    bool add_child(pid_t child, pid_t manager,
                   const std::array<std::uint64_t, KR_MEM_KINDS>& mem_bytes);
    // Drops a child's entries (after its exit has been read) and releases its slot.
    void forget_child(pid_t child);
    // Gives a tracked child a fast counter slot when its slot is free (see KR_FAULT_SLOTS);
    // children the fork hook added count in the hash until then. True when it owns one.
    bool claim_slot(pid_t child);

    std::vector<ChildReading> read_children() const;
    std::optional<ChildReading> read_child(pid_t child) const;

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

    // The clock of kr_child's *_ns fields (CLOCK_MONOTONIC, as bpf_ktime_get_ns()).
    static std::uint64_t now_ns();

private:
    void attach(const Logger& log);
    std::optional<std::vector<ChildReading>> read_children_batched() const;
    static ChildReading to_reading(pid_t pid, const kr_child& entry);
    // The child's counter in the BPF program's tracked_buckets (memory-mapped .bss).
    __u32& tracked_bucket(pid_t child) const;
    // The owner of the child's slot in slot_owner (memory-mapped .bss).
    __u32& slot_owner(pid_t child) const;
    // Adds the child's slot counters to `counts` when it owns its slot.
    void add_slot_counts(pid_t child, FaultCounts& counts) const;

    observer_bpf* skel_ = nullptr;
    int possible_cpus_ = 0;
    CowSource source_;
    std::uint32_t cow_sample_period_ = 1;
    mutable bool batch_lookups_ = true;  // cleared when the kernel has no batch map ops
};

// Registers `manager` and every child it has now (read from `proc`), so that nothing
// forked between the two steps is missed. Returns the children registered.
std::vector<pid_t> track_manager(Observer& observer, const ProcFs& proc, pid_t manager);

}  // namespace kidreaper
