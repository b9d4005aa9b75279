// `kidreaper reap`'s settings for one server, checked and converted (reap_settings.h makes
// them from the flags or a [[service]] table). The daemon (daemon.h) runs them as services
// (service.h).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/log.h"
#include "daemon/event_log.h"
#include "model/estimate.h"
#include "observe/manager_lookup.h"
#include "observe/watcher.h"
#include "policy/reap_policy.h"
#include "policy/server_presets.h"
#include "policy/worker_rule.h"

namespace kidreaper {

// One server's reap settings: the flags of `kidreaper reap`, or a [[service]] table.
struct ReapOptions {
    std::optional<pid_t> pid;
    std::optional<std::string> pidfile;
    // How the manager is named: exactly one of pid, pidfile, cgroup, unit (pid and pidfile
    // above are set too when it is one of them).
    ManagerSelector manager;
    Metric metric = Metric::private_memory;
    ServerPreset server = default_preset();
    // Which children are workers (--workers; else the server preset's rule): only they
    // are signalled, counted for --min-children and taken for replacements.
    std::optional<WorkerRule> workers;
    FaultSource fault_source = FaultSource::automatic;  // --fault-source
    ReapConfig policy;  // limit, signals (from the server unless --signal), stagger, ...
    std::chrono::milliseconds interval{std::chrono::seconds(1)};
    std::chrono::milliseconds idle_timeout{std::chrono::seconds(10)};
    bool idle_wait = true;
    std::chrono::milliseconds truth_every{std::chrono::seconds(60)};
    std::chrono::milliseconds hook_timeout{std::chrono::seconds(30)};
    std::string pre_hook;           // run before each signal; a non-zero exit vetoes it
    std::string post_hook;          // run once the child exited and was replaced (or timed out)
    bool once = false;              // stop when nothing is over the limit or in flight
    bool wait_for_manager = false;  // not with --pid: keep waiting when the manager is gone
    LogFormat log_format = LogFormat::text;
};

}  // namespace kidreaper
