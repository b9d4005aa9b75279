// The kernel's own accounting of kidreaper's BPF programs (bpf_prog_info run_time_ns and
// run_cnt): what the programs cost the traced processes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kidreaper {

// A loaded program: the name to report it under and its fd.
struct BpfProgramFd {
    std::string name;
    int fd = -1;
};

// One program's totals since it was loaded. Both stay 0 unless the sysctl
// kernel.bpf_stats_enabled is 1 (the kernel counts only then).
struct BpfProgramStats {
    std::string name;
    std::uint64_t run_time_ns = 0;
    std::uint64_t run_count = 0;
};

// bpf_obj_get_info_by_fd() on each program, in order. Throws Error naming the program when
// the kernel refuses one.
std::vector<BpfProgramStats> read_bpf_program_stats(const std::vector<BpfProgramFd>& programs);

// Whether `proc_root`/sys/kernel/bpf_stats_enabled reads 1 (false when it is missing).
bool bpf_stats_enabled(const std::string& proc_root = "/proc");

}  // namespace kidreaper
