// `kidreaper reap`: watch a manager's children continuously and recycle those over the
// limit through the policy (reap_policy.h), confirming each on ground truth, waiting for
// an idle moment, and signalling through a pidfd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/log.h"
#include "daemon/event_log.h"
#include "observe/manager_lookup.h"
#include "observe/watcher.h"
#include "policy/reap_policy.h"
#include "policy/server_presets.h"
#include "policy/worker_rule.h"

namespace kidreaper {

// What --limit is compared with.
enum class Metric {
    private_memory,  // private clean + dirty: COW-unshared plus own growth (default)
    pss,
    rss,
    anon,
};

Metric parse_metric(std::string_view text);  // throws UsageError
std::string metric_name(Metric metric);

// The cheap per-tick value: the last ground truth plus what the kernel counted since
// (COW copies and anon growth both add private pages). rss and anon come straight from
// the kernel counters.
std::uint64_t estimate_metric(const ChildRecord& record, Metric metric);
// The metric read from smaps_rollup.
std::uint64_t truth_metric(const SmapsRollup& smaps, Metric metric);
// True when /proc/PID/syscall's line shows the child blocked in one of `idle_syscalls`.
bool is_idle_syscall(const std::string& syscall_line, const std::set<long>& idle_syscalls);

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
    bool wait_for_manager = false;  // with --pidfile: keep waiting when the manager is gone
    LogFormat log_format = LogFormat::text;
};

// Runs until SIGINT/SIGTERM (exit 0), the manager is gone (exit 1), or --once is done.
int run_reap(const ReapOptions& options, const Logger& log);

}  // namespace kidreaper
