// format_size and format_duration on any value (the first 8 bytes of the input): one
// short line, and a negative duration carries its sign.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/units.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    std::uint64_t value = 0;
    std::memcpy(&value, data, size < sizeof value ? size : sizeof value);
    const std::string size_text = kidreaper::format_size(value);
    check(!size_text.empty() && size_text.size() < 16 && size_text.find('\n') == std::string::npos,
          "format_size prints a short line");
    std::int64_t signed_value = 0;
    std::memcpy(&signed_value, &value, sizeof signed_value);
    const std::string duration_text =
        kidreaper::format_duration(std::chrono::milliseconds(signed_value));
    check(!duration_text.empty() && duration_text.size() < 32,
          "format_duration prints a short line");
    check((signed_value < 0) == duration_text.starts_with("-"),
          "format_duration's sign is the duration's");
    return 0;
}
