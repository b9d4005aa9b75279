// Termination signals as events: while a SignalGate lives, SIGINT, SIGTERM and SIGHUP
// are blocked and collected by wait_for(), so loops stop cleanly between steps.
#pragma once

#include <signal.h>

#include <chrono>

namespace kidreaper {

class SignalGate {
public:
    SignalGate();
    ~SignalGate();
    SignalGate(const SignalGate&) = delete;
    SignalGate& operator=(const SignalGate&) = delete;

    // Sleeps up to `timeout`; returns the termination signal that arrived, or 0.
    int wait_for(std::chrono::milliseconds timeout);
    // The first termination signal received so far, or 0.
    int received() const { return received_; }

private:
    sigset_t blocked_{};
    sigset_t previous_{};
    int received_ = 0;
};

}  // namespace kidreaper
