// Signal state: the reset of what kidreaper inherits, and termination signals as events
// (SignalGate): while a gate lives, SIGINT, SIGTERM and SIGHUP are blocked and collected
// through a signalfd, so loops stop cleanly between steps and a wait on other descriptors
// (a hook's output) can watch for them too. SIGINT and SIGTERM ask to stop; SIGHUP asks to
// reload (take_reload()) and never stops anything.
#pragma once

#include <signal.h>

#include <chrono>
#include <functional>

namespace kidreaper {

// Sets every catchable signal's disposition to SIG_DFL and empties the signal mask. A
// parent may hand kidreaper SIGCHLD ignored (then the kernel reaps hooks itself and
// waitpid cannot tell a veto from success) or SIGTERM blocked (then nothing stops us).
// Call first thing in main().
void reset_inherited_signals();

class SignalGate {
public:
    SignalGate();  // throws Error when the signalfd cannot be made
    ~SignalGate();
    SignalGate(const SignalGate&) = delete;
    SignalGate& operator=(const SignalGate&) = delete;

    // Sleeps up to `timeout`; returns the termination signal that arrived, or 0. Returns 0
    // early when a reload request (SIGHUP) arrives.
    int wait_for(std::chrono::milliseconds timeout);
    // A descriptor that polls readable while a termination signal is pending: poll it with
    // others, then call collect().
    int fd() const { return fd_; }
    // Takes the pending signals without waiting: returns the termination signal among them,
    // or 0 (a SIGHUP is kept as a reload request).
    int collect();
    // Whether a SIGHUP arrived since the last call (collect() first).
    bool take_reload() {
        collect();
        const bool requested = reload_requested_;
        reload_requested_ = false;
        return requested;
    }
    // Called on every collect(), so every wait (the tick's, an idle wait's, a hook's) runs
    // it at least once a second: the daemon pings its watchdog there.
    void set_heartbeat(std::function<void()> heartbeat) { heartbeat_ = std::move(heartbeat); }
    // The first termination signal received so far, or 0.
    int received() const { return received_; }
    // collect(), then whether a termination signal was ever received: "stop now".
    bool stop_requested() {
        collect();
        return received_ != 0;
    }

    // The longest a wait sleeps before it collects (and beats) again.
    static constexpr std::chrono::seconds kMaxSlice{1};

private:
    sigset_t blocked_{};
    sigset_t previous_{};
    int fd_ = -1;
    int received_ = 0;
    bool reload_requested_ = false;
    std::function<void()> heartbeat_;
};

}  // namespace kidreaper
