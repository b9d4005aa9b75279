#include "daemon/reaper.h"

#include "common/error.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "policy/pidfile_trust.h"

namespace kidreaper {

int run_reap(const ReapOptions& options, const Logger& log) {
    if (options.policy.limit_bytes == 0) {
        throw UsageError("--limit is required and must be greater than zero");
    }
    if (options.interval.count() <= 0) {
        throw UsageError("--interval must be greater than zero");
    }
    if (options.policy.max_concurrent == 0) {
        throw UsageError("--max-concurrent must be at least 1");
    }
    ReapOptions checked = options;
    if (options.pid && options.pidfile) {
        throw UsageError("give --pid or --pidfile, not both");
    }
    if (options.pid) {
        checked.manager = {ManagerSelector::Kind::pid, std::to_string(*options.pid)};
    } else if (options.pidfile) {
        checked.manager = {ManagerSelector::Kind::pidfile, *options.pidfile};
    } else if (options.manager.value.empty()) {
        throw UsageError(
            "which server? give --pid PID, --pidfile FILE, --cgroup PATH or --unit NAME");
    }
    if (options.wait_for_manager && checked.manager.kind == ManagerSelector::Kind::pid) {
        throw UsageError(
            "--wait-for-manager needs --pidfile, --cgroup or --unit (a new manager has a new pid)");
    }
    if (checked.manager.kind == ManagerSelector::Kind::pidfile && !options.wait_for_manager) {
        read_pidfile(checked.manager.value);  // a bad pidfile is a usage error, up front
    }
    return run_daemon(single_service_config(checked), log);
}

}  // namespace kidreaper
