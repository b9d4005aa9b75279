// A signal name or number (parse_signal): bad input is a one-line UsageError, a parsed
// signal is in [1, NSIG) and its name parses back to it.
#include <csignal>
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "policy/server_presets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using kidreaper::fuzz::check;
    int signal = 0;
    if (!kidreaper::fuzz::accepts(
            [&] { signal = kidreaper::parse_signal(kidreaper::fuzz::as_text(data, size)); })) {
        return 0;
    }
    check(signal >= 1 && signal < NSIG, "a parsed signal is in [1, NSIG)");
    check(kidreaper::parse_signal(kidreaper::signal_name(signal)) == signal,
          "a signal's name parses back to it");
    return 0;
}
