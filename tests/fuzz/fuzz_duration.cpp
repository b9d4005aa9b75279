// A duration as users write it (parse_duration): bad input is a one-line UsageError; a
// parsed duration is not negative, and below a minute (where format_duration prints a
// single unit) printing it and parsing it again truncates to the printed precision.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/units.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    using std::chrono::milliseconds;
    milliseconds duration{};
    if (!kidreaper::fuzz::accepts(
            [&] { duration = kidreaper::parse_duration(kidreaper::fuzz::as_text(data, size)); })) {
        return 0;
    }
    check(duration.count() >= 0, "a parsed duration is not negative");
    const std::string printed = kidreaper::format_duration(duration);
    if (duration >= std::chrono::minutes(1)) {
        return 0;  // "3m20s", "2h05m": compound, parse_duration reads one unit
    }
    const milliseconds again = kidreaper::parse_duration(printed);
    const milliseconds precision = duration < std::chrono::seconds(1)    ? milliseconds(1)
                                   : duration < std::chrono::seconds(10) ? milliseconds(100)
                                                                         : milliseconds(1000);
    check(again <= duration && duration - again < precision,
          "a printed duration parses back truncated to its precision");
    return 0;
}
