// A pidfile's content (parse_pidfile_text, the pure half of read_pidfile): the result is
// in (1, kPidMaxLimit] and agrees with parse_pid of the trimmed text. The start of the
// input doubles as the path, so a hostile path must still give a one-line error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    const std::string path(text.substr(0, 80));
    pid_t pid = 0;
    if (!kidreaper::fuzz::accepts([&] { pid = kidreaper::parse_pidfile_text(text, path); })) {
        return 0;
    }
    check(pid > 1 && pid <= kidreaper::kPidMaxLimit, "a pidfile's pid is in (1, kPidMaxLimit]");
    check(size <= 64, "a pidfile is at most 64 bytes");
    const std::size_t first = text.find_first_not_of(" \t\n\r\v\f");
    const std::size_t last = text.find_last_not_of(" \t\n\r\v\f");
    check(first != std::string_view::npos, "an accepted pidfile is not blank");
    check(kidreaper::parse_pid(text.substr(first, last - first + 1)) == pid,
          "a pidfile's pid is parse_pid of its trimmed text");
    return 0;
}
