// /proc/PID/stat (parse_stat): comm is exactly the text between the first " (" and the
// last ')', and the numbers it returns are the ones parse_stat promises.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    const std::optional<kidreaper::ProcStat> stat = kidreaper::parse_stat(text);
    if (!stat) {
        return 0;
    }
    const std::size_t open = text.find(" (");
    const std::size_t close = text.rfind(')');
    check(open != std::string_view::npos && close != std::string_view::npos && close >= open + 2,
          "a parsed stat has \" (\" before the last ')'");
    check(stat->comm == text.substr(open + 2, close - open - 2),
          "comm is the text between the first \" (\" and the last ')'");
    check(stat->comm.size() <= size, "comm is no longer than the input");
    check(stat->pid > 0, "pid > 0");
    check(stat->ppid >= 0, "ppid >= 0");
    check((stat->state >= 'A' && stat->state <= 'Z') || (stat->state >= 'a' && stat->state <= 'z'),
          "state is one letter");
    return 0;
}
