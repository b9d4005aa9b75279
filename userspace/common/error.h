// Errors kidreaper reports to its user: one line, naming the cause and the fix.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kidreaper {

// A failure with a one-line, user-facing message. main() prints it and exits non-zero.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, int exit_code = 1)
        : std::runtime_error(message), exit_code_(exit_code) {}
    int exit_code() const { return exit_code_; }

private:
    int exit_code_;
};

// A bad argument or input from the user (exit code 2).
class UsageError : public Error {
public:
    explicit UsageError(const std::string& message) : Error(message, 2) {}
};

// "what: strerror(err)".
std::string errno_message(const std::string& what, int err);

// Untrusted text on one line: control and non-ASCII bytes, '\\' and '"' as \xNN, cut
// after `limit` bytes with "...".
std::string printable(std::string_view text, std::size_t limit = 256);

}  // namespace kidreaper
