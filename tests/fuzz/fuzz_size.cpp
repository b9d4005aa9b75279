// A size as users write it (parse_size): bad input is a one-line UsageError, and a parsed
// size printed by format_size (its space removed) parses back to within the rounding
// format_size does (exact below 1 KiB, within 5% above).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/units.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    std::uint64_t bytes = 0;
    if (!kidreaper::fuzz::accepts(
            [&] { bytes = kidreaper::parse_size(kidreaper::fuzz::as_text(data, size)); })) {
        return 0;
    }
    std::string printed = kidreaper::format_size(bytes);
    check(printed.find('\n') == std::string::npos, "format_size prints one line");
    printed.erase(printed.find(' '), 1);
    if (printed.ends_with("PiB") || printed.ends_with("EiB")) {
        return 0;  // parse_size stops at TiB
    }
    const std::uint64_t again = kidreaper::parse_size(printed);
    if (bytes < 1024) {
        check(again == bytes, "a size below 1 KiB round-trips exactly");
    } else {
        const std::uint64_t error = again > bytes ? again - bytes : bytes - again;
        check(error <= bytes / 20, "a printed size parses back within 5%");
    }
    return 0;
}
