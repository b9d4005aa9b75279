// /proc/PID/net/tcp, tcp6 and unix (parse_tcp_listeners, parse_unix_listeners): never
// throw; no inode 0 is ever a listener.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "observe/process_facts.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    kidreaper::fuzz::check(kidreaper::parse_tcp_listeners(text).count(0) == 0,
                           "inode 0 is no tcp listener");
    kidreaper::fuzz::check(kidreaper::parse_unix_listeners(text).count(0) == 0,
                           "inode 0 is no unix listener");
    return 0;
}
