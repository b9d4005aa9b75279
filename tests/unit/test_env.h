// Test helpers for a process's environment: a variable set for one scope, and the
// notification socket a service manager listens on (NOTIFY_SOCKET).
#pragma once

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "fake_proc.h"

namespace kidreaper::testing {

// Sets (or, with nullopt, unsets) an environment variable for the scope of a test and
// restores the old value after.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
        if (const char* old = std::getenv(name)) {
            old_ = old;
        }
        if (value) {
            ::setenv(name, value->c_str(), 1);
        } else {
            ::unsetenv(name);
        }
    }
    ~ScopedEnv() {
        if (old_) {
            ::setenv(name_, old_->c_str(), 1);
        } else {
            ::unsetenv(name_);
        }
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

// A bound AF_UNIX datagram socket in a temp dir of its own: what systemd listens on.
class NotifySocket {
public:
    // `receive_timeout`: how long receive() waits for a datagram.
    explicit NotifySocket(std::chrono::milliseconds receive_timeout = std::chrono::seconds(2))
        : path_((dir_.path() / "notify").string()) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr = {};
        addr.sun_family = AF_UNIX;
        path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
            ADD_FAILURE() << "bind " << path_;
        }
        const auto usec = std::chrono::duration_cast<std::chrono::microseconds>(receive_timeout);
        timeval timeout = {static_cast<time_t>(usec.count() / 1000000),
                           static_cast<suseconds_t>(usec.count() % 1000000)};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    const std::string& path() const { return path_; }
    // The next datagram; empty when none arrives within the receive timeout.
    std::string receive() const {
        char buffer[4096];
        const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
        return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
    }
    // Whether a datagram is waiting.
    bool pending() const {
        char byte = 0;
        return ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
    }

private:
    TempDir dir_;
    std::string path_;
    int fd_ = -1;
};

}  // namespace kidreaper::testing
