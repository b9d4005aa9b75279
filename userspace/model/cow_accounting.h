// From a child's raw counters to what kidreaper reports: COW of inherited memory (anon
// and private file pages), writes that copy nothing, and the fresh memory the child
// keeps. Pure; the rules are in docs/accuracy.md.
#pragma once

#include <cstdint>
#include <string>

#include "observe/readings.h"

namespace kidreaper {

// How the observer tells a copy of inherited memory from other write faults; each part
// is chosen by probe at start-up (KernelFeatures::cow_source()).
struct CowSource {
    // mm mode: no page-fault tracepoints; the write-protect path is probed (kprobes or
    // fentry) and growth comes from the mm counters. Otherwise the x86 tracepoints.
    bool mm = false;
    bool fentry = false;       // the probes below attached by fentry, not kprobes (as loaded)
    bool exact = false;        // kprobe on wp_page_copy counts the real copies
    bool exact_fills = false;  // kprobe on finish_fault counts file copies on first write
    // Each write fault is paired with the events it raises before it ends (counter changes:
    // 6.2+ traces every one), and a present-page write with its mapping (bpf_find_vma).
    bool paired = false;
    bool paired_fills = false;  // ... and a page-cache fault (mm_filemap_fault tracepoint)
    // mm mode: do_wp_page counts every write-protect fault (the COW class) into
    // write_present_user, so that writes that copied nothing are known.
    bool wp_faults = false;
};

// One line for `kidreaper check` and diagnose's "mode", e.g. "raw tracepoints + fault
// pairing (counters, mappings, page-cache faults)".
std::string cow_source_name(const CowSource& source);

// One child's memory, accounted (all in bytes).
struct MemoryAccount {
    std::uint64_t anon_cow_bytes = 0;  // inherited anonymous pages copied
    std::uint64_t file_cow_bytes = 0;  // private file pages copied into anon memory
    // Write faults that copied nothing inherited: MAP_SHARED writes, zero-page fills,
    // mprotect/uffd-wp/soft-dirty faults on the child's own memory.
    std::uint64_t excluded_write_bytes = 0;
    // Fresh memory the child keeps: resident + swapped-out anon, minus the anon that came
    // from file COW. A level (not a delta): differences between readings are growth.
    std::uint64_t fresh_bytes = 0;
    // fresh_bytes minus its value when tracking began (>= 0).
    std::uint64_t fresh_growth_bytes = 0;

    std::uint64_t cow_bytes() const { return anon_cow_bytes + file_cow_bytes; }
};

MemoryAccount account_memory(const ChildReading& reading, const CowSource& source);

}  // namespace kidreaper
