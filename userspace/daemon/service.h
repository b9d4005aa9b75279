// One watched server inside the daemon: it finds and follows its manager, estimates its
// children, asks its own policy what to recycle, and recycles each child gracefully
// (ground truth, pre-hook, idle wait, identity and role checked again, pidfd signal,
// post-hook). Every service shares the daemon's one Observer.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "act/hooks.h"
#include "daemon/event_log.h"
#include "daemon/metrics.h"
#include "daemon/reaper.h"
#include "observe/process_facts.h"
#include "observe/watcher.h"
#include "policy/pidfile_trust.h"
#include "policy/reap_policy.h"
#include "policy/worker_roles.h"
#include "policy/worker_rule.h"

namespace kidreaper {

class Metrics;
class Observer;
class ProcFs;
class Signaller;
class SignalGate;

// Managers claimed by the daemon's services: two services never watch one manager.
class ManagerClaims {
public:
    // True when `manager` is now `service`'s (or was already).
    bool claim(pid_t manager, const std::string& service);
    void release(pid_t manager, const std::string& service);
    // The service holding `manager`, or "".
    std::string holder(pid_t manager) const;

private:
    std::map<pid_t, std::string> holders_;
};

// What every service of one daemon shares.
struct ServiceContext {
    Observer& observer;
    const ProcFs& proc;
    Signaller& signaller;
    SignalGate& gate;
    ManagerClaims& claims;
    bool label_events = false;  // add service=NAME to every event (a daemon of services)
    LogFormat log_format = LogFormat::text;
    Metrics* metrics = nullptr;  // counts recycles, signals and skips; none without [metrics]
};

// How one step of a service ended.
enum class StepResult {
    running,   // watching (or waiting for its manager)
    finished,  // --once: nothing over the limit or in flight
    gone,      // its manager is gone and it does not wait (the single-server command line)
};

class Service {
public:
    // `waits` makes a missing manager a reported wait instead of the end of the service.
    Service(std::string name, ReapOptions options, const ServiceContext& context, bool waits);
    ~Service();
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Finds the manager at start and logs "start". Without `waits`, a missing or refused
    // manager throws Error (one line).
    void start();
    // Follows the manager, reads the maps and acts once.
    StepResult step();
    const std::string& name() const { return name_; }
    const ReapOptions& options() const { return options_; }
    pid_t manager() const { return manager_; }
    // Whether it watches a manager now (not waiting for one).
    bool watching() const { return watcher_ != nullptr; }
    // The service as of its last step, for the metrics: sums over its live workers (each
    // child's estimate since its last ground truth), its largest worker in the service's
    // metric, and the COW bytes its children copied since the service started.
    ServiceSnapshot snapshot() const { return snapshot_; }

private:
    void emit(const std::string& event, EventLog::Fields fields) const;
    TimePoint at(double seconds) const;
    // The manager the selector names now (nullopt with a reported problem when none).
    std::optional<pid_t> current_manager();
    // current_manager() when kidreaper may watch it (pidfile trust, pinned identity,
    // not another service's).
    std::optional<pid_t> acceptable_manager();
    void attach(pid_t manager);
    void detach();
    // Follows a manager restarted under its pidfile, cgroup or unit; false when the
    // service ends.
    bool follow_manager();
    PolicyActions tick();
    bool is_worker(const ChildRecord& record, TimePoint now);
    void refresh_oldest_truth();
    std::vector<std::string> hook_env(const std::string& event, pid_t pid,
                                      const RecycleAction* action) const;
    HookResult run_hook(const std::string& label, const std::string& command,
                        std::vector<std::string> env);
    void run_post_hook(pid_t pid);
    // Logs why a proposed child was not signalled (`code`: a short fixed name of the reason);
    // the policy leaves it alone for a while (its retry time, or `hold`).
    void skip(const RecycleAction& action, const std::string& code, const std::string& reason,
              std::optional<Duration> hold = std::nullopt);
    void recycle(const RecycleAction& action, std::size_t alive_count);
    std::string lifetime(const ChildRecord& record) const;
    // Adds what every watched child copied since the last step to the service's COW total
    // (before exited children are pruned, so their last copies count too).
    void count_cow();
    // Fills snapshot_ from this step's workers.
    void take_snapshot(const std::vector<const ChildRecord*>& workers);
    void count_signal(int signal, const std::string& outcome) const;

    // Each child's whole life, thinned: 8 KiB a child (docs/reap.md).
    static constexpr std::size_t kSamplesKept = 256;

    std::string name_;
    ReapOptions options_;
    ServiceContext context_;
    bool waits_;
    EventLog events_;
    ReapPolicy policy_;
    std::unique_ptr<Watcher> watcher_;
    pid_t manager_ = 0;
    TimePoint watch_start_{};
    bool waiting_reported_ = false;
    ProcessFacts facts_;
    WorkerRule rule_;
    std::unique_ptr<WorkerRoles> roles_;
    std::set<std::pair<pid_t, std::uint64_t>> helpers_reported_;
    bool listener_warned_ = false;
    // The manager the service started with (pidfile_trust.h); pinned at the first attach.
    std::optional<ManagerIdentity> pinned_;
    bool identity_pinned_ = false;
    std::string last_refusal_;
    pid_t last_refused_pid_ = 0;
    std::string last_problem_;
    int ticks_ = 0;
    // COW bytes each child (pid, start time) had at the last step, and the service's total.
    std::map<std::pair<pid_t, std::uint64_t>, std::uint64_t> cow_seen_;
    std::uint64_t cow_total_ = 0;
    ServiceSnapshot snapshot_;
};

}  // namespace kidreaper
