// What the running kernel offers kidreaper, probed at start-up, and the mode chosen.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "model/cow_accounting.h"

namespace kidreaper {

// Where to look; tests point these at fake trees.
struct SystemPaths {
    std::filesystem::path proc = "/proc";
    std::filesystem::path sys = "/sys";
};

// Where page faults are seen (`--fault-source`).
enum class FaultSource {
    automatic,    // mm where the kernel can probe wp_page_copy, else the tracepoints
    tracepoints,  // the x86 page-fault tracepoints: every fault of every process
    mm,           // kprobes/fentry on the write-protect path only (do_wp_page, wp_page_copy)
};

// Parses "auto", "tracepoints" or "mm"; throws Error otherwise.
FaultSource parse_fault_source(const std::string& text);

// The kallsyms names of the write-protect path's functions; empty when absent (inlined).
// A name may carry a compiler suffix (wp_page_copy.isra.0): kprobes need the full name.
struct ProbeSymbols {
    std::string wp_page_copy;
    std::string do_wp_page;
    std::string finish_fault;
};

// Reads /proc/kallsyms under `proc` once. Never throws.
ProbeSymbols find_probe_symbols(const std::filesystem::path& proc = "/proc");

// Facts about this kernel that decide whether and how kidreaper can run.
struct KernelFeatures {
    std::string release;  // uname -r
    int version_major = 0;
    int version_minor = 0;
    bool is_root = false;
    bool btf = false;                  // /sys/kernel/btf/vmlinux readable (CO-RE needs it)
    bool raw_tracepoint_prog = false;  // BPF_PROG_TYPE_RAW_TRACEPOINT loads
    bool percpu_hash_map = false;
    bool tracefs_mounted = false;     // informational: raw tracepoints do not need it
    bool tp_page_fault_user = false;  // the raw tracepoints, found in BTF
    bool tp_page_fault_kernel = false;
    bool tp_rss_stat = false;
    bool tp_sched_process_fork = false;
    bool tp_sched_process_exit = false;
    bool kprobe_pmu = false;           // /sys/bus/event_source/devices/kprobe
    bool wp_page_copy_symbol = false;  // wp_page_copy in kallsyms (not inlined)
    bool finish_fault_symbol = false;  // finish_fault in kallsyms
    bool do_wp_page_symbol = false;    // do_wp_page in kallsyms
    // Every mm counter change is traced (6.2+: no struct mm_rss_stat in BTF).
    bool rss_stat_per_change = false;
    bool find_vma_helper = false;      // bpf_find_vma accepted in raw tracepoints (5.17+)
    bool tp_mm_filemap_fault = false;  // the page-cache fault tracepoint, in BTF

    // Exact COW counting through a kprobe on wp_page_copy is possible.
    bool exact_cow() const { return kprobe_pmu && wp_page_copy_symbol; }
    // The x86 page-fault tracepoints exist.
    bool fault_tracepoints() const { return tp_page_fault_user && tp_page_fault_kernel; }
    // mm mode is possible: kprobes, and at least one function of the write-protect path.
    bool mm_fault_source() const {
        return kprobe_pmu && (wp_page_copy_symbol || do_wp_page_symbol);
    }
    // The best way this kernel offers to tell COW from other write faults (automatic).
    CowSource cow_source() const { return cow_source(FaultSource::automatic); }
    // The way `wanted` tells COW from other write faults here; throws Error with a one-line
    // cause when this kernel cannot give it.
    CowSource cow_source(FaultSource wanted) const;
};

// Probes the kernel. Never throws; unknown facts stay false.
KernelFeatures probe_features(const SystemPaths& paths = {});

// Problems that stop kidreaper from running, each one line naming the cause and the fix.
// Empty when usable.
std::vector<std::string> blocking_problems(const KernelFeatures& features);

// Probes the kernel and returns what it offers; throws Error with the first blocking
// problem when kidreaper cannot run on it.
KernelFeatures require_usable_kernel(const SystemPaths& paths = {});

// Human report for `kidreaper check`: one line per feature, then the mode or the problems.
std::string format_features(const KernelFeatures& features);

// Parses "6.18.44-fc-v595" into (6, 18); false when it is not a version.
bool parse_kernel_release(const std::string& release, int& major, int& minor);
// Whether fentry programs can be used on this release and machine (uname -r, uname -m):
// - x86_64 from 5.13: before, a BPF trampoline's image could be freed while a task still
//   ran in it (fixed by "bpf: Fix fexit trampoline"), which crashed a 5.10 kernel in
//   wp_page_copy on detach;
// - aarch64 from 6.0, the first with BPF trampolines there. Earlier ones, and some later
//   ones too (Debian's 6.1: ENOTSUPP), load fentry programs and then refuse to attach
//   them: the observer tries one attach and falls back to kprobes.
// Anything else, or an unparsable release, gives false: kprobes then.
bool fentry_usable(const std::string& release, const std::string& machine);

}  // namespace kidreaper
