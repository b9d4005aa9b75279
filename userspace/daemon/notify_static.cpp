// The static build's ServiceNotifier: Debian ships libsystemd as a shared library only, so a
// static kidreaper never notifies a service manager (run it as Type=simple, without
// WatchdogSec=); every call does nothing.
#include "daemon/notify.h"

namespace kidreaper {

ServiceNotifier::ServiceNotifier() = default;
void ServiceNotifier::notify(const std::string& /*message*/) const {}
void ServiceNotifier::ready() const {}
void ServiceNotifier::reloading() const {}
void ServiceNotifier::ready_after_reload() const {}
void ServiceNotifier::stopping() const {}
void ServiceNotifier::status(const std::string& /*text*/) const {}
bool ServiceNotifier::watchdog_due(Clock::time_point /*now*/) const {
    return false;
}
void ServiceNotifier::ping_watchdog(Clock::time_point now) {
    pinged_ = true;
    last_ping_ = now;
}

}  // namespace kidreaper
