#include "observe/observer.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/error.h"
#include "observe/procfs.h"
#include "observer.skel.h"

namespace kidreaper {

namespace {

std::string libbpf_error(const std::string& what, long err) {
    char buffer[128] = {};
    libbpf_strerror(static_cast<int>(err), buffer, sizeof(buffer));
    return what + ": " + buffer;
}

// True on kernels that trace every change of an mm counter (6.2+: per-CPU counters,
// no struct mm_rss_stat in the kernel's BTF).
bool rss_stat_per_change() {
    std::unique_ptr<btf, void (*)(btf*)> vmlinux(btf__load_vmlinux_btf(), btf__free);
    return vmlinux && btf__find_by_name_kind(vmlinux.get(), "mm_rss_stat", BTF_KIND_STRUCT) < 0;
}

}  // namespace

FaultCounts& FaultCounts::operator+=(const kr_faults& cpu) {
    write_present_user += cpu.write_present_user;
    write_present_kernel += cpu.write_present_kernel;
    write_absent += cpu.write_absent;
    other += cpu.other;
    cow_copies += cpu.cow_copies;
    zero_page_copies += cpu.zero_page_copies;
    file_copies += cpu.file_copies;
    fill_copies += cpu.fill_copies;
    paired_zero_fills += cpu.paired_zero_fills;
    paired_file_copies += cpu.paired_file_copies;
    paired_shared_writes += cpu.paired_shared_writes;
    paired_file_fills += cpu.paired_file_fills;
    return *this;
}

Observer::Observer(const ObserverOptions& options, const Logger& log) : log_(log) {
    possible_cpus_ = libbpf_num_possible_cpus();
    if (possible_cpus_ <= 0) {
        throw Error(libbpf_error("cannot count possible CPUs", possible_cpus_));
    }
    const std::uint32_t period = options.cow_sample_period;
    if (period == 0 || (period & (period - 1)) != 0) {
        throw Error("the COW sample period must be a power of two");
    }
    cow_sample_period_ = period;
    batch_lookups_ = options.batch_lookups;
    batch_slots_from_ = options.batch_slots_from;
    source_ = options.cow;
    source_.paired = !source_.mm && options.cow.paired && rss_stat_per_change();
    source_.paired_fills = source_.paired && options.cow.paired_fills;
    source_.exact_fills = options.cow.exact && options.cow.exact_fills;
    source_.wp_faults = source_.mm && options.cow.wp_faults;
    source_.fentry = false;
    if (source_.mm || source_.exact) {
        symbols_ = find_probe_symbols();
    }
    // fentry attaches by the function's BTF name: only to plain (unsuffixed) symbols. A
    // kernel without a BPF trampoline refuses the load; the kprobes are the fallback.
    const auto plain = [](const std::string& symbol, std::string_view base) {
        return symbol.empty() || symbol == base;
    };
    // Not before 5.13 on x86 (detaching could crash it) nor 6.0 on arm64 (fentry_usable()).
    utsname host{};
    const bool fentry_here = uname(&host) == 0 && fentry_usable(host.release, host.machine);
    const bool fentry_possible = source_.mm && options.prefer_fentry && fentry_here &&
                                 plain(symbols_.wp_page_copy, "wp_page_copy") &&
                                 plain(symbols_.do_wp_page, "do_wp_page") &&
                                 plain(symbols_.finish_fault, "finish_fault");
    int err = 0;
    if (fentry_possible) {
        err = open_and_load(options, true);
        if (err == 0) {
            const int attach_error = fentry_attach_error();
            if (attach_error == 0) {
                source_.fentry = true;
            } else {
                // Loaded but not attachable: a trampoline the architecture cannot make
                // (Debian's arm64 6.1 says ENOTSUPP).
                log.debug(
                    libbpf_error("fentry programs do not attach, using kprobes", attach_error));
                observer_bpf__destroy(skel_);
                skel_ = nullptr;
            }
        } else {
            log.debug(libbpf_error("fentry programs refused, using kprobes", err));
        }
    }
    if (!source_.fentry) {
        err = open_and_load(options, false);
    }
    if (err != 0) {
        if (err == -EPERM || err == -EACCES) {
            throw Error("the kernel refused to load kidreaper's BPF programs (" +
                        std::string(std::strerror(-err)) +
                        "): run as root; check kernel lockdown and unprivileged_bpf_disabled");
        }
        throw Error(
            libbpf_error("cannot load the BPF programs (run with -v for the verifier log)", err));
    }
    try {
        attach(log);
    } catch (...) {
        observer_bpf__destroy(skel_);
        skel_ = nullptr;
        throw;
    }
}

int Observer::open_and_load(const ObserverOptions& options, bool fentry) {
    // CO-RE against vmlinux's BTF only: libbpf would otherwise also list module BTF,
    // which needs CAP_SYS_ADMIN on top of CAP_BPF and CAP_PERFMON.
    bpf_object_open_opts open_options{};
    open_options.sz = sizeof(open_options);
    open_options.btf_custom_path = "/sys/kernel/btf/vmlinux";
    skel_ = observer_bpf__open_opts(&open_options);
    if (skel_ == nullptr) {
        throw Error(libbpf_error("cannot open the BPF object", -errno));
    }
    const bool mm = source_.mm;
    const bool paired = source_.paired;
    const bool copies = source_.exact;
    const bool fills = source_.exact_fills;
    const bool wp_faults = source_.wp_faults;
    bpf_program__set_autoload(skel_->progs.on_wp_page_copy, copies && !fentry);
    bpf_program__set_autoload(skel_->progs.on_finish_fault, fills && !fentry);
    bpf_program__set_autoload(skel_->progs.on_do_wp_page, wp_faults && !fentry);
    bpf_program__set_autoload(skel_->progs.on_wp_page_copy_fentry, copies && fentry);
    bpf_program__set_autoload(skel_->progs.on_finish_fault_fentry, fills && fentry);
    bpf_program__set_autoload(skel_->progs.on_do_wp_page_fentry, wp_faults && fentry);
    bpf_program__set_autoload(skel_->progs.on_filemap_fault, source_.paired_fills);
    bpf_program__set_autoload(skel_->progs.on_rss_stat, !paired);
    bpf_program__set_autoload(skel_->progs.on_fault_user, !mm && !paired);
    bpf_program__set_autoload(skel_->progs.on_fault_kernel, !mm && !paired);
    bpf_program__set_autoload(skel_->progs.on_rss_stat_pair, paired);
    bpf_program__set_autoload(skel_->progs.on_fault_user_pair, paired);
    bpf_program__set_autoload(skel_->progs.on_fault_kernel_pair, paired);
    skel_->rodata->record_cow_sites = options.record_cow_sites;
    skel_->rodata->cow_sample_mask = cow_sample_period_ - 1;
    // Linux 6.2+ traces every change of an mm counter (before, one in about 64): read
    // one event in 8 there. A sampled-out event only delays the absolute value it carries.
    skel_->rodata->rss_sample_mask = rss_stat_per_change() ? 7 : 0;
    if (options.max_children != 0) {
        bpf_map__set_max_entries(skel_->maps.children, options.max_children);
        bpf_map__set_max_entries(skel_->maps.faults, options.max_children);
    }
    if (options.max_exits != 0) {
        bpf_map__set_max_entries(skel_->maps.exits, options.max_exits);
    }
    const int err = observer_bpf__load(skel_);
    if (err != 0) {
        observer_bpf__destroy(skel_);
        skel_ = nullptr;
    }
    return err;
}

// Attaches the first loaded fentry program and detaches it again: 0 when the kernel can
// attach fentry programs here, else the negative error. Only after open_and_load(.., true).
int Observer::fentry_attach_error() const {
    for (bpf_program* fentry :
         {skel_->progs.on_wp_page_copy_fentry, skel_->progs.on_do_wp_page_fentry,
          skel_->progs.on_finish_fault_fentry}) {
        if (!bpf_program__autoload(fentry)) {
            continue;
        }
        bpf_link* link = bpf_program__attach(fentry);
        if (link == nullptr) {
            return -errno;
        }
        bpf_link__destroy(link);
        return 0;
    }
    return 0;
}

// Attaches a write-protect path probe: fentry as loaded, or a kprobe on the kallsyms name
// (which may carry a suffix). Null with errno set when the kernel refuses.
bpf_link* Observer::attach_probe(bpf_program* kprobe, bpf_program* fentry,
                                 const std::string& symbol) const {
    if (source_.fentry) {
        return bpf_program__attach(fentry);
    }
    if (symbol.empty()) {
        errno = ENOENT;
        return nullptr;
    }
    return bpf_program__attach_kprobe(kprobe, false, symbol.c_str());
}

void Observer::attach(const Logger& log) {
    struct Required {
        bpf_program* program;
        bpf_link** link;
        const char* name;
    };
    const bool paired = source_.paired;  // the pairing builds of the hot hooks
    std::vector<Required> required = {
        {skel_->progs.on_fork, &skel_->links.on_fork, "sched_process_fork"},
        {skel_->progs.on_exit, &skel_->links.on_exit, "sched_process_exit"},
        {paired ? skel_->progs.on_rss_stat_pair : skel_->progs.on_rss_stat,
         paired ? &skel_->links.on_rss_stat_pair : &skel_->links.on_rss_stat, "rss_stat"},
    };
    if (!source_.mm) {
        required.push_back({paired ? skel_->progs.on_fault_user_pair : skel_->progs.on_fault_user,
                            paired ? &skel_->links.on_fault_user_pair : &skel_->links.on_fault_user,
                            "page_fault_user"});
        required.push_back(
            {paired ? skel_->progs.on_fault_kernel_pair : skel_->progs.on_fault_kernel,
             paired ? &skel_->links.on_fault_kernel_pair : &skel_->links.on_fault_kernel,
             "page_fault_kernel"});
    }
    for (const auto& entry : required) {
        *entry.link = bpf_program__attach(entry.program);
        if (*entry.link == nullptr) {
            throw Error(
                libbpf_error(std::string("cannot attach to raw tracepoint ") + entry.name, -errno));
        }
    }
    if (source_.paired_fills) {
        // A tracepoint the probe found in BTF: failing it fails like the ones above.
        skel_->links.on_filemap_fault = bpf_program__attach(skel_->progs.on_filemap_fault);
        if (skel_->links.on_filemap_fault == nullptr) {
            throw Error(libbpf_error("cannot attach to raw tracepoint mm_filemap_fault", -errno));
        }
    }
    const std::string kind = source_.fentry ? "fentry" : "kprobe";
    if (source_.wp_faults) {
        bpf_link* link = attach_probe(skel_->progs.on_do_wp_page, skel_->progs.on_do_wp_page_fentry,
                                      symbols_.do_wp_page);
        if (link == nullptr) {
            const int error = errno;
            if (!source_.exact) {  // mm mode would see no fault at all
                throw Error(libbpf_error("cannot attach " + kind + " do_wp_page", -error));
            }
            log.warn(libbpf_error(kind + " on do_wp_page unavailable: writes that copy nothing "
                                         "are not counted",
                                  -error));
            source_.wp_faults = false;
        }
        (source_.fentry ? skel_->links.on_do_wp_page_fentry : skel_->links.on_do_wp_page) = link;
    }
    if (source_.exact) {
        bpf_link* link = attach_probe(skel_->progs.on_wp_page_copy,
                                      skel_->progs.on_wp_page_copy_fentry, symbols_.wp_page_copy);
        if (link == nullptr) {
            const int error = errno;
            if (source_.mm && !source_.wp_faults) {
                throw Error(libbpf_error("cannot attach " + kind + " wp_page_copy", -error));
            }
            log.warn(libbpf_error(kind + " on wp_page_copy unavailable, counting COW without it",
                                  -error));
            source_.exact = false;
        }
        (source_.fentry ? skel_->links.on_wp_page_copy_fentry : skel_->links.on_wp_page_copy) =
            link;
    }
    if (source_.exact_fills) {
        bpf_link* link =
            source_.exact ? attach_probe(skel_->progs.on_finish_fault,
                                         skel_->progs.on_finish_fault_fentry, symbols_.finish_fault)
                          : nullptr;
        if (link == nullptr) {
            log.warn(kind +
                     " on finish_fault unavailable: file copies on first write count as "
                     "growth");
            source_.exact_fills = false;
        }
        (source_.fentry ? skel_->links.on_finish_fault_fentry : skel_->links.on_finish_fault) =
            link;
    }
}

Observer::~Observer() {
    observer_bpf__destroy(skel_);
}

bool Observer::map_full(int error) {
    return error == E2BIG || error == ENOSPC || error == ENOMEM;
}

void Observer::add_manager(pid_t manager) {
    const auto key = static_cast<__u32>(manager);
    const kr_manager value{.registered_ns = now_ns()};
    if (bpf_map__update_elem(skel_->maps.managers, &key, sizeof(key), &value, sizeof(value),
                             BPF_ANY) != 0) {
        const int error = errno;
        if (map_full(error)) {
            ++managers_full_;
            take_capacity_notices();
        }
        throw Error(errno_message("cannot register manager " + std::to_string(manager), error));
    }
}

void Observer::remove_manager(pid_t manager) {
    const auto key = static_cast<__u32>(manager);
    bpf_map__delete_elem(skel_->maps.managers, &key, sizeof(key), 0);
}

ChildAdded Observer::add_child(pid_t child, pid_t manager,
                               const std::array<std::uint64_t, KR_MEM_KINDS>& mem_bytes,
                               std::uint64_t start_ns) {
    const auto key = static_cast<__u32>(child);
    kr_child entry{};
    entry.manager_tgid = static_cast<__u32>(manager);
    entry.flags = KR_CHILD_FROM_USERSPACE | KR_CHILD_MEM_SEEN;
    for (int kind = 0; kind < KR_MEM_KINDS; ++kind) {
        entry.mem_bytes[kind] = mem_bytes[kind];
    }
    entry.anon_start_bytes = mem_bytes[KR_MEM_ANON];
    entry.swap_start_bytes = mem_bytes[KR_MEM_SWAP];
    entry.start_boottime_ns = start_ns;
    if (bpf_map__update_elem(skel_->maps.children, &key, sizeof(key), &entry, sizeof(entry),
                             BPF_NOEXIST) != 0) {
        const int error = errno;
        if (error == EEXIST) {
            return ChildAdded::tracked_already;
        }
        if (map_full(error)) {
            ++children_full_;
            return ChildAdded::map_full;
        }
        throw Error(errno_message("cannot track child " + std::to_string(child), error));
    }
    std::vector<kr_faults> zeros(possible_cpus_);
    if (bpf_map__update_elem(skel_->maps.faults, &key, sizeof(key), zeros.data(),
                             zeros.size() * sizeof(kr_faults), BPF_NOEXIST) != 0) {
        const int error = errno;
        if (map_full(error)) {
            ++faults_full_;  // tracked all the same: its memory, and faults in its slot
        } else if (error != EEXIST) {
            throw Error(errno_message("cannot track child " + std::to_string(child), error));
        }
    }
    __atomic_fetch_add(&tracked_bucket(child), 1U, __ATOMIC_SEQ_CST);
    claim_slot(child);
    return ChildAdded::added;
}

bool Observer::has_entry(__u32 tgid, std::uint64_t start_ns) const {
    kr_child entry{};
    if (bpf_map__lookup_elem(skel_->maps.children, &tgid, sizeof(tgid), &entry, sizeof(entry), 0) ==
            0 &&
        entry.start_boottime_ns == start_ns) {
        return true;
    }
    const kr_exit_key key{.tgid = tgid, .pad = 0, .start_boottime_ns = start_ns};
    return bpf_map__lookup_elem(skel_->maps.exits, &key, sizeof(key), &entry, sizeof(entry), 0) ==
           0;
}

bool Observer::claim_slot(pid_t child) {
    __u32& owner = slot_owner(child);
    const auto tgid = static_cast<__u32>(child);
    if (__atomic_load_n(&owner, __ATOMIC_ACQUIRE) == tgid) {
        return true;
    }
    if (__atomic_load_n(&owner, __ATOMIC_ACQUIRE) != 0) {
        return false;  // another child has it: this one counts in the hash
    }
    kr_child entry{};
    if (bpf_map__lookup_elem(skel_->maps.children, &tgid, sizeof(tgid), &entry, sizeof(entry), 0) !=
        0) {
        return false;  // not tracked
    }
    SlotClaim& claim = slot_claim(child);
    if (claim.tgid != 0) {
        // The fork hook released it from a displaced child: its counters stay until that
        // exit is consumed (or is gone: the exits map was full).
        if (has_entry(claim.tgid, claim.start_ns)) {
            return false;
        }
        claim = {};
    }
    // Zero the counters before the owner is set: the hot path uses them from then on.
    const __u32 slot = tgid & (KR_FAULT_SLOTS - 1);
    std::vector<kr_faults> zeros(possible_cpus_);
    if (bpf_map__update_elem(skel_->maps.slot_faults, &slot, sizeof(slot), zeros.data(),
                             zeros.size() * sizeof(kr_faults), BPF_ANY) != 0) {
        return false;
    }
    __atomic_store_n(&owner, tgid, __ATOMIC_RELEASE);
    // The hash counts stop here (but for a fault already past the owner check).
    claim = {
        .tgid = tgid, .start_ns = entry.start_boottime_ns, .hash_at_claim = hash_counts(child)};
    return true;
}

FaultCounts Observer::hash_counts(pid_t child) const {
    const auto key = static_cast<__u32>(child);
    FaultCounts counts;
    std::vector<kr_faults> per_cpu(possible_cpus_);
    if (bpf_map__lookup_elem(skel_->maps.faults, &key, sizeof(key), per_cpu.data(),
                             per_cpu.size() * sizeof(kr_faults), 0) == 0) {
        for (const auto& cpu : per_cpu) {
            counts += cpu;
        }
    }
    return counts;
}

FaultCounts Observer::slot_counts(pid_t child) const {
    const __u32 slot = static_cast<__u32>(child) & (KR_FAULT_SLOTS - 1);
    FaultCounts counts;
    std::vector<kr_faults> per_cpu(possible_cpus_);
    if (bpf_map__lookup_elem(skel_->maps.slot_faults, &slot, sizeof(slot), per_cpu.data(),
                             per_cpu.size() * sizeof(kr_faults), 0) == 0) {
        for (const auto& cpu : per_cpu) {
            counts += cpu;
        }
    }
    return counts;
}

bool Observer::owns_claimed_slot(pid_t child, std::uint64_t start_ns) const {
    const auto tgid = static_cast<__u32>(child);
    const SlotClaim& claim = slot_claim(child);
    return __atomic_load_n(&slot_owner(child), __ATOMIC_ACQUIRE) == tgid && claim.tgid == tgid &&
           claim.start_ns == start_ns;
}

void Observer::add_slot_counts(pid_t child, std::uint64_t start_ns, FaultCounts& counts) const {
    if (owns_claimed_slot(child, start_ns)) {
        counts += slot_counts(child);
    }
}

void Observer::release_bucket(pid_t child) const {
    __u32& bucket = tracked_bucket(child);
    __u32 count = __atomic_load_n(&bucket, __ATOMIC_SEQ_CST);
    while (count > 0 && !__atomic_compare_exchange_n(&bucket, &count, count - 1, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
}

bool Observer::delete_child_entry(pid_t child, std::uint64_t start_ns) {
    const auto key = static_cast<__u32>(child);
    const int map_fd = bpf_map__fd(skel_->maps.children);
    if (lookup_and_delete_) {
        kr_child deleted{};
        const int err = bpf_map_lookup_and_delete_elem(map_fd, &key, &deleted);
        if (err == 0) {
            if (deleted.start_boottime_ns == start_ns) {
                return true;
            }
            // A newer child's (the pid was reused since the compare): put it back, unless
            // the fork hook wrote a newer one still.
            bpf_map_update_elem(map_fd, &key, &deleted, BPF_NOEXIST);
            return false;
        }
        if (err == -ENOENT) {
            return false;
        }
        lookup_and_delete_ = false;  // before 5.14: compare, then delete
    }
    kr_child entry{};
    if (bpf_map_lookup_elem(map_fd, &key, &entry) != 0 || entry.start_boottime_ns != start_ns) {
        return false;
    }
    return bpf_map_delete_elem(map_fd, &key) == 0;
}

bool Observer::forget_child(pid_t child, std::uint64_t start_ns) {
    const auto key = static_cast<__u32>(child);
    kr_child entry{};
    if (bpf_map__lookup_elem(skel_->maps.children, &key, sizeof(key), &entry, sizeof(entry), 0) !=
            0 ||
        entry.start_boottime_ns != start_ns) {
        return false;  // gone already, or a newer child's
    }
    SlotClaim& claim = slot_claim(child);
    if (claim.tgid == key && claim.start_ns == start_ns) {
        __u32& owner = slot_owner(child);
        if (__atomic_load_n(&owner, __ATOMIC_ACQUIRE) == key) {
            __atomic_store_n(&owner, 0U, __ATOMIC_RELEASE);
        }
        claim = {};
    }
    bpf_map__delete_elem(skel_->maps.faults, &key, sizeof(key), 0);
    const bool deleted = delete_child_entry(child, start_ns);
    if (deleted) {
        release_bucket(child);
    }
    // A fork that reused the pid during the steps above may have lost its fresh counters
    // to the delete: give them back (it has counted next to nothing yet).
    if (bpf_map__lookup_elem(skel_->maps.children, &key, sizeof(key), &entry, sizeof(entry), 0) ==
            0 &&
        entry.start_boottime_ns != start_ns) {
        std::vector<kr_faults> zeros(possible_cpus_);
        bpf_map__update_elem(skel_->maps.faults, &key, sizeof(key), zeros.data(),
                             zeros.size() * sizeof(kr_faults), BPF_NOEXIST);
    }
    return deleted;
}

void Observer::consume_exit(const ChildReading& reading) {
    if (!reading.displaced) {
        return;
    }
    const kr_exit_key key{
        .tgid = static_cast<__u32>(reading.pid), .pad = 0, .start_boottime_ns = reading.start_ns};
    bpf_map__delete_elem(skel_->maps.exits, &key, sizeof(key), 0);
    SlotClaim& claim = slot_claim(reading.pid);
    if (claim.tgid == key.tgid && claim.start_ns == reading.start_ns) {
        claim = {};  // its slot counters are read: the slot may be claimed again
    }
}

void Observer::forget_children_of(pid_t manager) {
    for (const ChildReading& reading : read_children()) {
        if (reading.manager != manager) {
            continue;
        }
        if (reading.displaced) {
            consume_exit(reading);
        } else {
            forget_child(reading.pid, reading.start_ns);
        }
    }
}

CapacityCounts Observer::capacity() const {
    const auto drops = [this](int map) {
        return __atomic_load_n(&skel_->bss->capacity_drops[map], __ATOMIC_RELAXED);
    };
    CapacityCounts counts;
    counts.children = {drops(KR_CAPACITY_CHILDREN) + children_full_,
                       bpf_map__max_entries(skel_->maps.children)};
    counts.faults = {drops(KR_CAPACITY_FAULTS) + faults_full_,
                     bpf_map__max_entries(skel_->maps.faults)};
    counts.exits = {drops(KR_CAPACITY_EXITS), bpf_map__max_entries(skel_->maps.exits)};
    counts.managers = {managers_full_, bpf_map__max_entries(skel_->maps.managers)};
    counts.cow_sites = {cow_sites_evicted_, bpf_map__max_entries(skel_->maps.cow_sites)};
    return counts;
}

std::vector<CapacityNotice> Observer::take_capacity_notices() {
    std::vector<CapacityNotice> notices = notices_.update(capacity());
    for (const auto& notice : notices) {
        log_.warn(notice.message);
    }
    return notices;
}

__u32& Observer::slot_owner(pid_t child) const {
    return skel_->bss->slot_owner[static_cast<__u32>(child) & (KR_FAULT_SLOTS - 1)];
}

__u32& Observer::tracked_bucket(pid_t child) const {
    return skel_->bss->tracked_buckets[static_cast<__u32>(child) & (KR_TRACKED_BUCKETS - 1)];
}

ChildReading Observer::to_reading(pid_t pid, const kr_child& entry) {
    ChildReading reading;
    reading.pid = pid;
    reading.manager = static_cast<pid_t>(entry.manager_tgid);
    reading.flags = entry.flags;
    reading.fork_ns = entry.fork_ns;
    reading.exit_ns = entry.exit_ns;
    for (int kind = 0; kind < KR_MEM_KINDS; ++kind) {
        reading.mem_bytes[kind] = entry.mem_bytes[kind];
    }
    reading.anon_start_bytes = entry.anon_start_bytes;
    reading.swap_start_bytes = entry.swap_start_bytes;
    reading.start_ns = entry.start_boottime_ns;
    return reading;
}

std::optional<ChildReading> Observer::read_child(pid_t child) const {
    const auto key = static_cast<__u32>(child);
    kr_child entry{};
    if (bpf_map__lookup_elem(skel_->maps.children, &key, sizeof(key), &entry, sizeof(entry), 0) !=
        0) {
        return std::nullopt;
    }
    ChildReading reading = to_reading(child, entry);
    reading.faults = hash_counts(child);
    add_slot_counts(child, reading.start_ns, reading.faults);
    return reading;
}

std::vector<ChildReading> Observer::read_exits() const {
    std::vector<ChildReading> readings;
    kr_exit_key key{};
    kr_exit_key next{};
    const void* previous = nullptr;
    while (bpf_map__get_next_key(skel_->maps.exits, previous, &next, sizeof(next)) == 0) {
        kr_child entry{};
        if (bpf_map__lookup_elem(skel_->maps.exits, &next, sizeof(next), &entry, sizeof(entry),
                                 0) == 0) {
            ChildReading reading = to_reading(static_cast<pid_t>(next.tgid), entry);
            reading.flags |= KR_CHILD_EXITED;
            reading.displaced = true;
            // Its hash entry went with the displacement; where it owned its slot, the slot
            // kept its counts and the claim kept the hash counts of before.
            const SlotClaim& claim = slot_claim(reading.pid);
            reading.faults_complete = claim.tgid == next.tgid && claim.start_ns == reading.start_ns;
            if (reading.faults_complete) {
                reading.faults = claim.hash_at_claim;
                reading.faults += slot_counts(reading.pid);
            }
            readings.push_back(reading);
        }
        key = next;
        previous = &key;
    }
    return readings;
}

namespace {

// Reads a whole map with BPF_MAP_LOOKUP_BATCH (Linux 5.6+). False when the kernel
// cannot (the caller falls back to one lookup per key).
bool lookup_all_batched(int map_fd, std::size_t value_size, std::vector<__u32>& keys,
                        std::vector<unsigned char>& values) {
    constexpr __u32 kChunk = 512;
    alignas(8) unsigned char in_token[8] = {};
    alignas(8) unsigned char out_token[8] = {};
    bool first = true;
    keys.clear();
    values.clear();
    while (true) {
        const std::size_t have = keys.size();
        keys.resize(have + kChunk);
        values.resize((have + kChunk) * value_size);
        __u32 count = kChunk;
        const int err =
            bpf_map_lookup_batch(map_fd, first ? nullptr : in_token, out_token, keys.data() + have,
                                 values.data() + have * value_size, &count, nullptr);
        keys.resize(have + count);
        values.resize((have + count) * value_size);
        if (err == -ENOENT) {
            return true;  // the end of the map
        }
        if (err != 0) {
            return false;
        }
        std::memcpy(in_token, out_token, sizeof(in_token));
        first = false;
    }
}

}  // namespace

std::vector<ChildReading> Observer::read_children() const {
    std::vector<ChildReading> readings = read_exits();
    if (batch_lookups_) {
        if (auto batched = read_children_batched()) {
            readings.insert(readings.end(), batched->begin(), batched->end());
            return readings;
        }
        batch_lookups_ = false;  // this kernel cannot: one lookup per key from now on
    }
    __u32 key = 0;
    __u32 next = 0;
    const void* previous = nullptr;
    while (bpf_map__get_next_key(skel_->maps.children, previous, &next, sizeof(next)) == 0) {
        if (auto reading = read_child(static_cast<pid_t>(next))) {
            readings.push_back(*reading);
        }
        key = next;
        previous = &key;
    }
    return readings;
}

std::optional<std::vector<ChildReading>> Observer::read_children_batched() const {
    std::vector<__u32> child_keys;
    std::vector<unsigned char> child_values;
    if (!lookup_all_batched(bpf_map__fd(skel_->maps.children), sizeof(kr_child), child_keys,
                            child_values)) {
        return std::nullopt;
    }
    std::vector<__u32> fault_keys;
    std::vector<unsigned char> fault_values;
    const std::size_t per_child = sizeof(kr_faults) * static_cast<std::size_t>(possible_cpus_);
    if (!lookup_all_batched(bpf_map__fd(skel_->maps.faults), per_child, fault_keys, fault_values)) {
        return std::nullopt;
    }
    std::unordered_map<__u32, FaultCounts> faults;
    faults.reserve(fault_keys.size());
    for (std::size_t i = 0; i < fault_keys.size(); ++i) {
        FaultCounts& sum = faults[fault_keys[i]];
        for (int cpu = 0; cpu < possible_cpus_; ++cpu) {
            kr_faults one{};
            std::memcpy(&one, fault_values.data() + i * per_child + cpu * sizeof(kr_faults),
                        sizeof(one));
            sum += one;
        }
    }
    // Many slotted children: one batched read of every slot beats one lookup per child.
    // Few: the lookups are cheaper than copying all KR_FAULT_SLOTS slots of every CPU.
    std::vector<__u32> slot_keys;
    std::vector<unsigned char> slot_values;
    const bool slots_read = child_keys.size() >= batch_slots_from_ &&
                            lookup_all_batched(bpf_map__fd(skel_->maps.slot_faults), per_child,
                                               slot_keys, slot_values) &&
                            slot_keys.size() == KR_FAULT_SLOTS;
    std::vector<ChildReading> readings;
    readings.reserve(child_keys.size());
    for (std::size_t i = 0; i < child_keys.size(); ++i) {
        kr_child entry{};
        std::memcpy(&entry, child_values.data() + i * sizeof(kr_child), sizeof(entry));
        ChildReading reading = to_reading(static_cast<pid_t>(child_keys[i]), entry);
        if (auto found = faults.find(child_keys[i]); found != faults.end()) {
            reading.faults = found->second;
        }
        if (!slots_read) {
            add_slot_counts(reading.pid, reading.start_ns, reading.faults);
        } else if (owns_claimed_slot(reading.pid, reading.start_ns)) {
            // An array's batch returns its slots in index order.
            const std::size_t slot = static_cast<__u32>(reading.pid) & (KR_FAULT_SLOTS - 1);
            for (int cpu = 0; cpu < possible_cpus_; ++cpu) {
                kr_faults one{};
                std::memcpy(&one, slot_values.data() + slot * per_child + cpu * sizeof(kr_faults),
                            sizeof(one));
                reading.faults += one;
            }
        }
        readings.push_back(reading);
    }
    return readings;
}

std::vector<CowSiteSample> Observer::read_cow_sites() const {
    std::vector<CowSiteSample> sites;
    kr_site_key key{};
    kr_site_key next{};
    const void* previous = nullptr;
    while (bpf_map__get_next_key(skel_->maps.cow_sites, previous, &next, sizeof(next)) == 0) {
        __u64 samples = 0;
        if (bpf_map__lookup_elem(skel_->maps.cow_sites, &next, sizeof(next), &samples,
                                 sizeof(samples), 0) == 0) {
            sites.push_back({static_cast<pid_t>(next.tgid), next.kind, next.address, samples});
        }
        key = next;
        previous = &key;
    }
    // Nothing but eviction deletes a site: what the hooks inserted and is missing was evicted.
    const std::uint64_t inserted = __atomic_load_n(&skel_->bss->cow_site_inserts, __ATOMIC_RELAXED);
    cow_sites_evicted_ = inserted > sites.size() ? inserted - sites.size() : 0;
    return sites;
}

std::vector<BpfProgramFd> Observer::program_fds() const {
    std::vector<BpfProgramFd> programs;
    bpf_program* program = nullptr;
    bpf_object__for_each_program(program, skel_->obj) {
        if (const int fd = bpf_program__fd(program); fd >= 0) {
            programs.push_back({bpf_program__name(program), fd});
        }
    }
    return programs;
}

std::uint64_t Observer::now_ns() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000ULL +
           static_cast<std::uint64_t>(now.tv_nsec);
}

std::int64_t boottime_offset_ns(const ProcFs& proc) {
    std::ifstream offsets(proc.root() / "self" / "timens_offsets");
    std::string clock;
    long long seconds = 0;
    long long nanoseconds = 0;
    while (offsets >> clock >> seconds >> nanoseconds) {
        if (clock == "boottime" || clock == "7") {  // CLOCK_BOOTTIME
            return seconds * 1'000'000'000LL + nanoseconds;
        }
    }
    return 0;
}

std::vector<pid_t> track_manager(Observer& observer, const ProcFs& proc, pid_t manager) {
    observer.add_manager(manager);
    const long ticks_per_second = sysconf(_SC_CLK_TCK);
    const std::int64_t offset = boottime_offset_ns(proc);
    std::vector<pid_t> registered;
    for (pid_t child : proc.children_of(manager)) {
        const auto stat = proc.stat(child);
        const auto status = proc.status(child);
        if (!stat || !status || stat->ppid != manager) {
            continue;  // gone, or re-parented, since the scan
        }
        std::array<std::uint64_t, KR_MEM_KINDS> mem{};
        mem[KR_MEM_FILE] = status->rss_file;
        mem[KR_MEM_ANON] = status->rss_anon;
        mem[KR_MEM_SWAP] = status->vm_swap;
        mem[KR_MEM_SHMEM] = status->rss_shmem;
        // In the kernel's frame, as the fork hook reads it (0 when unknown).
        const auto proc_ns = start_ns_of_ticks(stat->start_ticks, ticks_per_second);
        const std::uint64_t start_ns =
            proc_ns ? static_cast<std::uint64_t>(static_cast<std::int64_t>(*proc_ns) - offset) : 0;
        if (observer.add_child(child, manager, mem, start_ns) == ChildAdded::added) {
            registered.push_back(child);
        }
    }
    return registered;
}

}  // namespace kidreaper
