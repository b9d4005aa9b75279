#include "daemon/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>
#include <cstdlib>

namespace kidreaper {

ServiceNotifier::ServiceNotifier() {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    enabled_ = socket != nullptr && *socket != '\0';
    std::uint64_t usec = 0;
    if (enabled_ && sd_watchdog_enabled(0, &usec) > 0) {
        watchdog_interval_ = std::chrono::microseconds(usec);
    }
}

void ServiceNotifier::notify(const std::string& message) const {
    if (enabled_) {
        sd_notify(0, message.c_str());
    }
}

void ServiceNotifier::ready() const {
    notify("READY=1");
}

void ServiceNotifier::reloading() const {
    timespec now = {};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const auto usec = static_cast<std::uint64_t>(now.tv_sec) * 1000000U +
                      static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void ServiceNotifier::ready_after_reload() const {
    notify("READY=1");
}

void ServiceNotifier::stopping() const {
    notify("STOPPING=1");
}

void ServiceNotifier::status(const std::string& text) const {
    std::string line = text;
    for (char& c : line) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    notify("STATUS=" + line);
}

bool ServiceNotifier::watchdog_due(Clock::time_point now) const {
    if (!watchdog_enabled()) {
        return false;
    }
    return !pinged_ || now - last_ping_ >= watchdog_interval_ / 2;
}

void ServiceNotifier::ping_watchdog(Clock::time_point now) {
    if (!watchdog_enabled()) {
        return;
    }
    notify("WATCHDOG=1");
    pinged_ = true;
    last_ping_ = now;
}

}  // namespace kidreaper
