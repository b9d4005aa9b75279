#include "common/error.h"

#include <cstdio>
#include <system_error>

namespace kidreaper {

std::string errno_message(const std::string& what, int err) {
    // std::generic_category().message() is thread-safe (unlike strerror) and maps
    // unknown values to "Unknown error N".
    return what + ": " + std::generic_category().message(err);
}

std::string printable(std::string_view text, std::size_t limit) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (i == limit) {
            out += "...";
            break;
        }
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace kidreaper
