// The Uid line of /proc/PID/status and a /proc/PID/fd link (parse_status_uids,
// parse_socket_link): never throw, and a parsed socket link prints back the same.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "observe/process_facts.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = kidreaper::fuzz::as_text(data, size);
    (void)kidreaper::parse_status_uids(text);
    if (const auto inode = kidreaper::parse_socket_link(text)) {
        kidreaper::fuzz::check(
            text == "socket:[" + std::to_string(*inode) + "]" || text.find("socket:[0") == 0,
            "a socket link is socket:[INODE]");
    }
    return 0;
}
