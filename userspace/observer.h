// The loader: RAII over the BPF skeleton (open, configure, load, attach; detach on
// destruction) and a narrow interface to its maps.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "kidreaper/abi.h"
#include "log.h"

struct observer_bpf;

namespace kidreaper {

class ProcFs;

// Fault counters of one child, summed over CPUs (see struct kr_faults).
struct FaultCounts {
    std::uint64_t write_present_user = 0;
    std::uint64_t write_present_kernel = 0;
    std::uint64_t write_absent = 0;
    std::uint64_t other = 0;
    std::uint64_t cow_copies = 0;
    std::uint64_t zero_page_copies = 0;

    // Write faults on present pages, user and kernel mode: the COW class.
    std::uint64_t write_present() const { return write_present_user + write_present_kernel; }
    FaultCounts& operator+=(const kr_faults& cpu);
};

// One read of one tracked child's map entries.
struct ChildReading {
    pid_t pid = 0;
    pid_t manager = 0;
    std::uint32_t flags = 0;  // enum kr_child_flags
    std::uint64_t fork_ns = 0;
    std::uint64_t exit_ns = 0;
    std::array<std::uint64_t, KR_MEM_KINDS> mem_bytes{};  // by enum kr_mem_kind
    std::uint64_t anon_start_bytes = 0;                   // anon when tracking began
    FaultCounts faults;

    bool exited() const { return (flags & KR_CHILD_EXITED) != 0; }
    bool mem_seen() const { return (flags & KR_CHILD_MEM_SEEN) != 0; }
    // Fresh anonymous memory gained since tracking began (COW copies do not change it).
    std::uint64_t anon_growth_bytes() const {
        return mem_bytes[KR_MEM_ANON] > anon_start_bytes ? mem_bytes[KR_MEM_ANON] - anon_start_bytes
                                                         : 0;
    }
    std::uint64_t rss_bytes() const {
        return mem_bytes[KR_MEM_FILE] + mem_bytes[KR_MEM_ANON] + mem_bytes[KR_MEM_SHMEM];
    }
};

struct ObserverOptions {
    bool exact_cow = false;         // load and attach the wp_page_copy kprobe (see KernelFeatures)
    bool record_cow_sites = false;  // sample where COW-class faults land (diagnose)
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
    bool exact_cow() const { return exact_cow_; }

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
    bool exact_cow_ = false;
    std::uint32_t cow_sample_period_ = 1;
    mutable bool batch_lookups_ = true;  // cleared when the kernel has no batch map ops
};

// Registers `manager` and every child it has now (read from `proc`), so that nothing
// forked between the two steps is missed. Returns the children registered.
std::vector<pid_t> track_manager(Observer& observer, const ProcFs& proc, pid_t manager);

}  // namespace kidreaper
