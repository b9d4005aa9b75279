// `kidreaper reap`'s settings for one server, and the single-server entry point. The work
// is done by the daemon (daemon.h) and its services (service.h).
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
    ManagerSelector manager;  // which manager: --pid, --pidfile, --cgroup or --unit
    std::optional<pid_t> pid;
    std::optional<std::string> pidfile;
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
    bool wait_for_manager = false;  // with --pidfile: keep waiting when the manager is gone
    LogFormat log_format = LogFormat::text;
};

// The single-server command line: checks the options, then runs the daemon with this one
// service. Runs until SIGINT/SIGTERM (exit 0), the manager is gone (exit 1), or --once is
// done.
int run_reap(const ReapOptions& options, const Logger& log);

}  // namespace kidreaper
