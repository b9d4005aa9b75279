#include "act/signals.h"

#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "common/error.h"

namespace kidreaper {

void reset_inherited_signals() {
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    for (int signal = 1; signal < NSIG; ++signal) {
        if (signal == SIGKILL || signal == SIGSTOP) {
            continue;
        }
        // The C library's internal real-time signals refuse: nothing to reset there.
        sigaction(signal, &default_action, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
}

SignalGate::SignalGate() {
    sigemptyset(&blocked_);
    sigaddset(&blocked_, SIGINT);
    sigaddset(&blocked_, SIGTERM);
    sigaddset(&blocked_, SIGHUP);
    sigprocmask(SIG_BLOCK, &blocked_, &previous_);
    fd_ = signalfd(-1, &blocked_, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd_ < 0) {
        const int error = errno;
        sigprocmask(SIG_SETMASK, &previous_, nullptr);
        throw Error(std::string("signalfd failed: ") + std::strerror(error));
    }
}

SignalGate::~SignalGate() {
    close(fd_);
    sigprocmask(SIG_SETMASK, &previous_, nullptr);
}

int SignalGate::collect() {
    if (heartbeat_) {
        heartbeat_();
    }
    signalfd_siginfo info{};
    while (true) {
        const ssize_t got = read(fd_, &info, sizeof info);
        if (got == static_cast<ssize_t>(sizeof info)) {
            const auto signal = static_cast<int>(info.ssi_signo);
            if (signal == SIGHUP) {
                reload_requested_ = true;
                return 0;
            }
            if (received_ == 0) {
                received_ = signal;
            }
            return signal;
        }
        if (got < 0 && errno == EINTR) {
            continue;
        }
        return 0;  // nothing pending (EAGAIN)
    }
}

int SignalGate::wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        const bool reload_was_pending = reload_requested_;
        if (const int signal = collect(); signal != 0) {
            return signal;
        }
        if (reload_requested_ && !reload_was_pending) {
            return 0;  // a reload request: the caller looks at it now
        }
        const auto left =
            std::min<std::chrono::nanoseconds>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   deadline - std::chrono::steady_clock::now()),
                                               kMaxSlice);
        if (left.count() <= 0) {
            return 0;
        }
        timespec wait{};
        wait.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
        wait.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
        pollfd ready{fd_, POLLIN, 0};
        if (ppoll(&ready, 1, &wait, nullptr) < 0 && errno != EINTR) {
            return 0;
        }
    }
}

}  // namespace kidreaper
