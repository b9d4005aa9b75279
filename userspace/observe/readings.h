// What the observer reads of one tracked child: plain data, no BPF (see observer.h).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>

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
    FaultCounts& operator+=(const FaultCounts& more) {
        write_present_user += more.write_present_user;
        write_present_kernel += more.write_present_kernel;
        write_absent += more.write_absent;
        other += more.other;
        cow_copies += more.cow_copies;
        zero_page_copies += more.zero_page_copies;
        file_copies += more.file_copies;
        fill_copies += more.fill_copies;
        paired_zero_fills += more.paired_zero_fills;
        paired_file_copies += more.paired_file_copies;
        paired_shared_writes += more.paired_shared_writes;
        paired_file_fills += more.paired_file_fills;
        return *this;
    }
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
    std::uint64_t start_ns = 0;  // kr_child.start_boottime_ns: its identity against pid reuse
    FaultCounts faults;
    // Read from the `exits` map: the child exited and a new process took its pid before
    // its exit was read. Such a reading is exited(); see faults_complete.
    bool displaced = false;
    // False when the faults counted since the last read were lost with the pid's hash
    // entry (a displaced child without its fast slot): `faults` is then empty, and the
    // counts read last stand.
    bool faults_complete = true;

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

// /proc/PID/stat's start time (field 22, clock ticks since boot) of a task whose
// start_boottime is `ns`, as the kernel converts it; nullopt when a tick is not a whole
// number of nanoseconds (the kernel then rounds otherwise) or ticks_per_second is not
// positive.
inline std::optional<std::uint64_t> start_ticks_of_ns(std::uint64_t ns, long ticks_per_second) {
    constexpr std::uint64_t kNsPerSecond = 1'000'000'000;
    if (ticks_per_second <= 0 || kNsPerSecond % static_cast<std::uint64_t>(ticks_per_second) != 0) {
        return std::nullopt;
    }
    return ns / (kNsPerSecond / static_cast<std::uint64_t>(ticks_per_second));
}

// The start_boottime (ns) that stands for a start time read in clock ticks: the first
// nanosecond of that tick; nullopt as above.
inline std::optional<std::uint64_t> start_ns_of_ticks(std::uint64_t ticks, long ticks_per_second) {
    constexpr std::uint64_t kNsPerSecond = 1'000'000'000;
    if (ticks_per_second <= 0 || kNsPerSecond % static_cast<std::uint64_t>(ticks_per_second) != 0) {
        return std::nullopt;
    }
    return ticks * (kNsPerSecond / static_cast<std::uint64_t>(ticks_per_second));
}

}  // namespace kidreaper
