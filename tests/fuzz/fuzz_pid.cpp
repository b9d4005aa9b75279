// A pid from the command line (parse_pid): the result is in (1, kPidMaxLimit] and
// printing it and parsing it again gives it back.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    pid_t pid = 0;
    if (!kidreaper::fuzz::accepts([&] { pid = kidreaper::parse_pid(text); })) {
        return 0;
    }
    check(pid > 1 && pid <= kidreaper::kPidMaxLimit, "parse_pid's result is in (1, kPidMaxLimit]");
    check(text.find_first_not_of("0123456789") == std::string_view::npos,
          "parse_pid accepts decimal digits only");
    check(kidreaper::parse_pid(std::to_string(pid)) == pid, "a printed pid parses back");
    return 0;
}
