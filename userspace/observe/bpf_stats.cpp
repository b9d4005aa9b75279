#include "observe/bpf_stats.h"

#include <bpf/bpf.h>

#include <cerrno>
#include <fstream>

#include "common/error.h"

namespace kidreaper {

std::vector<BpfProgramStats> read_bpf_program_stats(const std::vector<BpfProgramFd>& programs) {
    std::vector<BpfProgramStats> stats;
    stats.reserve(programs.size());
    for (const BpfProgramFd& program : programs) {
        bpf_prog_info info = {};
        __u32 length = sizeof(info);
        if (bpf_obj_get_info_by_fd(program.fd, &info, &length) != 0) {
            throw Error(
                errno_message("cannot read the statistics of BPF program " + program.name, errno));
        }
        stats.push_back({program.name.empty() ? std::string(info.name) : program.name,
                         info.run_time_ns, info.run_cnt});
    }
    return stats;
}

bool bpf_stats_enabled(const std::string& proc_root) {
    std::ifstream in(proc_root + "/sys/kernel/bpf_stats_enabled");
    int value = 0;
    return in >> value && value == 1;
}

}  // namespace kidreaper
