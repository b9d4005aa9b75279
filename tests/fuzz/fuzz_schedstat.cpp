// /proc/PID/schedstat (parse_schedstat): the value is the first field's number.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "observe/procfs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    const std::optional<std::uint64_t> runtime = kidreaper::parse_schedstat(text);
    if (runtime) {
        // Leading zeros aside, the decimal digits of the value are in the text.
        kidreaper::fuzz::check(text.find(std::to_string(*runtime)) != std::string_view::npos,
                               "the parsed runtime's digits appear in the text");
    }
    return 0;
}
