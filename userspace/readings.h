// What the observer reads of one tracked child: plain data, no BPF (see observer.h).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>

#include "kidreaper/abi.h"

namespace kidreaper {

// Fault counters of one child, summed over CPUs (see struct kr_faults).
struct FaultCounts {
    std::uint64_t write_present_user = 0;
    std::uint64_t write_present_kernel = 0;
    std::uint64_t write_absent = 0;
    std::uint64_t other = 0;
    std::uint64_t cow_copies = 0;
    std::uint64_t zero_page_copies = 0;
    std::uint64_t file_copies = 0;
    std::uint64_t fill_copies = 0;
    std::uint64_t paired_zero_fills = 0;
    std::uint64_t paired_file_copies = 0;
    std::uint64_t paired_shared_writes = 0;
    std::uint64_t paired_file_fills = 0;

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
    std::uint64_t swap_start_bytes = 0;                   // swap entries when tracking began
    FaultCounts faults;

    bool exited() const { return (flags & KR_CHILD_EXITED) != 0; }
    bool mem_seen() const { return (flags & KR_CHILD_MEM_SEEN) != 0; }
    // Anonymous memory, resident and swapped out, gained since tracking began (COW of an
    // anonymous page does not change it; COW of a private file page does: see
    // cow_accounting.h for the growth that leaves that out).
    std::uint64_t anon_growth_bytes() const {
        const std::uint64_t now = mem_bytes[KR_MEM_ANON] + mem_bytes[KR_MEM_SWAP];
        const std::uint64_t start = anon_start_bytes + swap_start_bytes;
        return now > start ? now - start : 0;
    }
    std::uint64_t rss_bytes() const {
        return mem_bytes[KR_MEM_FILE] + mem_bytes[KR_MEM_ANON] + mem_bytes[KR_MEM_SHMEM];
    }
};

}  // namespace kidreaper
