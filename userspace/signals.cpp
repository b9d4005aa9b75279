#include "signals.h"

#include <cerrno>
#include <ctime>

namespace kidreaper {

SignalGate::SignalGate() {
    sigemptyset(&blocked_);
    sigaddset(&blocked_, SIGINT);
    sigaddset(&blocked_, SIGTERM);
    sigaddset(&blocked_, SIGHUP);
    sigprocmask(SIG_BLOCK, &blocked_, &previous_);
}

SignalGate::~SignalGate() {
    sigprocmask(SIG_SETMASK, &previous_, nullptr);
}

int SignalGate::wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return 0;
        }
        timespec wait{};
        wait.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
        wait.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
        const int signal = sigtimedwait(&blocked_, nullptr, &wait);
        if (signal > 0) {
            if (received_ == 0) {
                received_ = signal;
            }
            return signal;
        }
        if (errno != EINTR && errno != EAGAIN) {
            return 0;
        }
    }
}

}  // namespace kidreaper
