// Test helper: run a callable that must throw kidreaper::UsageError and get its message.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kidreaper::testing {

// The message of the UsageError that fn() throws. Records a test failure (and returns "")
// when fn() returns normally or throws anything else, or when the message is not a
// single line (kidreaper prints these messages as they are).
template <typename Fn>
std::string usage_error_message(Fn&& fn) {
    try {
        fn();
    } catch (const UsageError& e) {
        const std::string message = e.what();
        EXPECT_EQ(message.find('\n'), std::string::npos) << "message is not one line: " << message;
        EXPECT_EQ(e.exit_code(), 2);
        return message;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected UsageError, got another exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "expected UsageError, nothing was thrown";
    return {};
}

inline bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

}  // namespace kidreaper::testing
