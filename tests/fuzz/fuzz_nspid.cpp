// /proc/PID/status's NSpid line (parse_status_nspid) and a /proc/PID/ns/pid link
// (parse_ns_link): the same bytes read both ways.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    const std::optional<std::vector<pid_t>> pids = kidreaper::parse_status_nspid(text);
    if (pids) {
        check(!pids->empty() && pids->size() <= kidreaper::kMaxNsPids,
              "NSpid has 1 to kMaxNsPids pids");
        for (const pid_t pid : *pids) {
            check(pid > 0, "every NSpid pid is positive");
        }
    }
    const std::optional<std::uint64_t> inode = kidreaper::parse_ns_link(text, "pid");
    if (inode) {
        check(*inode > 0, "a namespace inode is not 0");
        check(text.size() >= 7 && text.substr(0, 5) == "pid:[" && text.back() == ']',
              "a pid namespace link reads pid:[INODE]");
    }
    return 0;
}
