// Helpers shared by the libFuzzer targets of this directory (see README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kidreaper::fuzz {

// The fuzzer's bytes as the text a parser reads.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// A broken invariant is a finding: print it and abort, so libFuzzer saves the input.
inline void check(bool holds, std::string_view invariant) {
    if (!holds) {
        std::fprintf(stderr, "fuzz invariant broken: %.*s\n", static_cast<int>(invariant.size()),
                     invariant.data());
        std::abort();
    }
}

// Runs a parser that reports bad input with UsageError. Returns true when it returned
// normally; a UsageError is the expected answer to bad input and must carry a one-line
// message. Any other exception escapes and libFuzzer reports it as a crash.
template <typename Fn>
bool accepts(Fn&& parse) {
    try {
        parse();
        return true;
    } catch (const UsageError& e) {
        const std::string_view message = e.what();
        check(!message.empty(), "a UsageError has a message");
        check(message.find('\n') == std::string_view::npos &&
                  message.find('\r') == std::string_view::npos,
              "a UsageError message is one line");
        return false;
    }
}

}  // namespace kidreaper::fuzz
