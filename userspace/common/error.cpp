#include "common/error.h"

#include <system_error>

namespace kidreaper {

std::string errno_message(const std::string& what, int err) {
    // std::generic_category().message() is thread-safe (unlike strerror) and maps
    // unknown values to "Unknown error N".
    return what + ": " + std::generic_category().message(err);
}

}  // namespace kidreaper
