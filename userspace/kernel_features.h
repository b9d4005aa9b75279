// What the running kernel offers kidreaper, probed at start-up, and the mode chosen.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cow_accounting.h"

namespace kidreaper {

// Where to look; tests point these at fake trees.
struct SystemPaths {
    std::filesystem::path proc = "/proc";
    std::filesystem::path sys = "/sys";
};

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
    // Every mm counter change is traced (6.2+: no struct mm_rss_stat in BTF).
    bool rss_stat_per_change = false;
    bool find_vma_helper = false;      // bpf_find_vma accepted in raw tracepoints (5.17+)
    bool tp_mm_filemap_fault = false;  // the page-cache fault tracepoint, in BTF

    // Exact COW counting through a kprobe on wp_page_copy is possible.
    bool exact_cow() const { return kprobe_pmu && wp_page_copy_symbol; }
    // The best way this kernel offers to tell COW from other write faults.
    CowSource cow_source() const {
        // The kprobes count the copies themselves: where they exist, pairing would only
        // add hooks to the hot path.
        const bool paired = rss_stat_per_change && find_vma_helper && !exact_cow();
        return {.exact = exact_cow(),
                .exact_fills = exact_cow() && finish_fault_symbol,
                .paired = paired,
                .paired_fills = paired && tp_mm_filemap_fault};
    }
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

}  // namespace kidreaper
