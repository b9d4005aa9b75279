// The service manager's notification protocol (sd_notify, through libsystemd): readiness,
// reloads, stopping, a status line and the watchdog of a Type=notify unit with WatchdogSec=.
// Without NOTIFY_SOCKET (not started by systemd, or Type=simple) every call does nothing.
#pragma once

#include <chrono>
#include <string>

namespace kidreaper {

class ServiceNotifier {
public:
    using Clock = std::chrono::steady_clock;

    // Reads NOTIFY_SOCKET, and WATCHDOG_USEC/WATCHDOG_PID (sd_watchdog_enabled) once.
    ServiceNotifier();

    // Whether a service manager listens (NOTIFY_SOCKET was set).
    bool enabled() const { return enabled_; }

    // READY=1: start-up is done (every service watched, the metrics endpoint bound).
    void ready() const;
    // RELOADING=1 with MONOTONIC_USEC=now (systemd 253+ Type=notify-reload wants it; older
    // systemd ignores it): a reload (SIGHUP) began.
    void reloading() const;
    // READY=1 again, once the reload is done (or failed and the old config stays).
    void ready_after_reload() const;
    // STOPPING=1: the daemon is shutting down.
    void stopping() const;
    // STATUS=text: one line shown by systemctl status (newlines become spaces).
    void status(const std::string& text) const;

    // Whether the unit has a watchdog for this process, and its interval (0 when not).
    bool watchdog_enabled() const { return watchdog_interval_.count() > 0; }
    std::chrono::microseconds watchdog_interval() const { return watchdog_interval_; }
    // True when the watchdog wants a ping: half of its interval has passed since the last
    // ping (or there was none yet). Always false without a watchdog.
    bool watchdog_due(Clock::time_point now = Clock::now()) const;
    // WATCHDOG=1, and remembers `now` as the last ping.
    void ping_watchdog(Clock::time_point now = Clock::now());

private:
    // Sends one message; a failure is ignored (the service manager may be gone).
    void notify(const std::string& message) const;

    bool enabled_ = false;
    std::chrono::microseconds watchdog_interval_{0};
    bool pinged_ = false;
    Clock::time_point last_ping_;
};

}  // namespace kidreaper
