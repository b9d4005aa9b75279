// /proc/PID/syscall (is_idle_syscall on its first line, trimmed, as ProcFs::syscall
// gives it): "idle" only when the line starts with an idle syscall's number.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "act/idle.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    // accept, epoll_wait, select, poll, epoll_pwait, accept4, pselect6, ppoll
    static const std::set<long> kIdle = {43, 232, 23, 7, 281, 288, 270, 271};
    const std::string line(text.substr(0, text.find('\n')));
    if (!kidreaper::is_idle_syscall(line, kIdle)) {
        return 0;
    }
    const std::size_t digits_end = line.find_first_not_of("0123456789");
    const std::string number = line.substr(0, digits_end);
    kidreaper::fuzz::check(!number.empty() && kIdle.count(std::stol(number)) != 0 &&
                               (digits_end == std::string::npos || line[digits_end] == ' '),
                           "an idle line starts with an idle syscall's number");
    return 0;
}
