#include "daemon/reaper.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "act/hooks.h"
#include "act/signaller.h"
#include "act/signals.h"
#include "common/error.h"
#include "common/units.h"
#include "observe/kernel_features.h"
#include "observe/observer.h"
#include "observe/procfs.h"
#include "policy/pidfile_trust.h"
#include "policy/worker_roles.h"

namespace kidreaper {

Metric parse_metric(std::string_view text) {
    if (text == "private") {
        return Metric::private_memory;
    }
    if (text == "pss") {
        return Metric::pss;
    }
    if (text == "rss") {
        return Metric::rss;
    }
    if (text == "anon") {
        return Metric::anon;
    }
    throw UsageError("invalid --metric \"" + std::string(text) +
                     "\": expected private, pss, rss or anon");
}

std::string metric_name(Metric metric) {
    switch (metric) {
        case Metric::private_memory:
            return "private";
        case Metric::pss:
            return "pss";
        case Metric::rss:
            return "rss";
        case Metric::anon:
            return "anon";
    }
    return "private";
}

std::uint64_t estimate_metric(const ChildRecord& record, Metric metric) {
    const ChildReading& now = record.latest;
    if (metric == Metric::rss) {
        return now.rss_bytes();
    }
    if (metric == Metric::anon) {
        return now.mem_bytes[KR_MEM_ANON];
    }
    if (!record.smaps_last) {
        return 0;
    }
    const std::uint64_t base =
        metric == Metric::pss ? record.smaps_last->pss : record.smaps_last->private_bytes();
    const std::uint64_t cow_now = record.account.cow_bytes();
    const std::uint64_t cow_since =
        cow_now < record.anchor_cow_bytes ? 0 : cow_now - record.anchor_cow_bytes;
    const auto anon_change = static_cast<std::int64_t>(record.account.fresh_bytes) -
                             static_cast<std::int64_t>(record.anchor_fresh_bytes);
    const std::int64_t estimate = static_cast<std::int64_t>(base + cow_since) + anon_change;
    return estimate > 0 ? static_cast<std::uint64_t>(estimate) : 0;
}

std::uint64_t truth_metric(const SmapsRollup& smaps, Metric metric) {
    switch (metric) {
        case Metric::private_memory:
            return smaps.private_bytes();
        case Metric::pss:
            return smaps.pss;
        case Metric::rss:
            return smaps.rss;
        case Metric::anon:
            return smaps.anonymous;
    }
    return smaps.private_bytes();
}

bool is_idle_syscall(const std::string& syscall_line, const std::set<long>& idle_syscalls) {
    long number = -1;
    const char* begin = syscall_line.data();
    const char* end = begin + syscall_line.size();
    auto [stop, error] = std::from_chars(begin, end, number);
    if (error != std::errc{} || (stop != end && *stop != ' ')) {
        return false;  // "running", or unreadable
    }
    return idle_syscalls.count(number) != 0;
}

namespace {

using Fields = EventLog::Fields;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

class Reaper {
public:
    Reaper(const ReapOptions& options, Observer& observer, const ProcFs& proc, Signaller& signaller,
           const EventLog& events, SignalGate& gate)
        : options_(options),
          observer_(observer),
          proc_(proc),
          signaller_(signaller),
          events_(events),
          gate_(gate),
          policy_(options.policy),
          facts_(proc.root()),
          rule_(options.workers ? *options.workers : parse_worker_rule(options.server.workers)) {}

    int run() {
        if (const auto manager = acceptable_manager()) {
            attach(*manager);
        } else if (!options_.wait_for_manager) {
            if (!last_refusal_.empty()) {
                throw Error("refusing to watch the process the pidfile names: " + last_refusal_);
            }
            throw Error("no manager process to watch (is the server running?)");
        }
        events_.emit("start", {{"manager", manager_},
                               {"limit", options_.policy.limit_bytes},
                               {"metric", metric_name(options_.metric)},
                               {"server", options_.server.name},
                               {"signal", signal_name(options_.policy.signals.front())},
                               {"dry_run", options_.policy.dry_run},
                               {"workers", rule_.text},
                               {"mode", cow_source_name(observer_.cow_source())}});
        int ticks = 0;
        while (true) {
            if (const int signal = gate_.wait_for(options_.interval); signal != 0) {
                events_.emit("stop", {{"reason", "signal " + signal_name(signal)}});
                return 0;
            }
            if (!follow_manager()) {
                return 1;
            }
            if (!watcher_) {
                continue;  // waiting for the manager (to come back)
            }
            const PolicyActions actions = tick();
            ++ticks;
            if (gate_.stop_requested()) {
                events_.emit("stop", {{"reason", "signal " + signal_name(gate_.received())}});
                return 0;
            }
            if (options_.once && ticks >= 2 && actions.recycle.empty() && actions.waiting == 0 &&
                policy_.in_flight() == 0) {
                events_.emit("stop", {{"reason", "once: nothing over the limit or in flight"}});
                return 0;
            }
        }
    }

private:
    TimePoint at(double seconds) const {
        return watch_start_ +
               duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    }

    // The manager --pid or the pidfile names now, when it is a live process. A missing or
    // unreadable pidfile names nobody (a stopping server removes it).
    std::optional<pid_t> current_manager() const {
        std::optional<pid_t> manager = options_.pid;
        if (!manager && options_.pidfile) {
            try {
                manager = read_pidfile(*options_.pidfile);
            } catch (const UsageError&) {
                return std::nullopt;
            }
        }
        if (!manager) {
            return std::nullopt;
        }
        const auto stat = proc_.stat(*manager);
        if (!stat || stat->state == 'Z') {
            return std::nullopt;
        }
        return manager;
    }

    // The manager current_manager() names, when kidreaper may watch it: a pidfile must be
    // trusted for that process, and a new manager must match the pinned identity or be a
    // child of the old one (pidfile_trust.h). A refusal is an event, reported once per pid
    // and reason; nothing is signalled.
    std::optional<pid_t> acceptable_manager() {
        const auto manager = current_manager();
        if (!manager || !options_.pidfile) {
            return manager;
        }
        const auto stat = proc_.stat(*manager);
        const pid_t ppid = stat ? stat->ppid : 0;
        const PidfileTrust trust = assess_pidfile(*options_.pidfile, SystemPathInspector());
        const CandidateFacts candidate = read_candidate(*manager, ppid, facts_);
        std::optional<std::string> refusal;
        if (identity_pinned_ && !pinned_) {
            refusal = "the identity of the manager kidreaper started with could not be read";
        } else {
            refusal = refuse_manager(trust, candidate, pinned_, manager_);
        }
        if (!refusal) {
            return manager;
        }
        if (*refusal != last_refusal_ || *manager != last_refused_pid_) {
            events_.emit("manager-refused", {{"pid", *manager},
                                             {"pidfile", *options_.pidfile},
                                             {"manager", manager_},
                                             {"reason", *refusal}});
            last_refusal_ = *refusal;
            last_refused_pid_ = *manager;
        }
        return std::nullopt;
    }

    void attach(pid_t manager) {
        watcher_.reset();
        roles_.reset();
        if (!identity_pinned_) {
            const auto stat = proc_.stat(manager);
            pinned_ = pin_identity(read_candidate(manager, stat ? stat->ppid : 0, facts_));
            identity_pinned_ = true;
        }
        manager_ = manager;
        roles_ = std::make_unique<WorkerRoles>(rule_, facts_, manager_);
        helpers_reported_.clear();
        listener_warned_ = false;
        watch_start_ = Clock::now();
        watcher_ = std::make_unique<Watcher>(observer_, proc_, manager_, kSamplesKept);
        waiting_reported_ = false;
    }

    // Follows a manager restarted under its pidfile; false when kidreaper should exit.
    bool follow_manager() {
        const pid_t old = manager_;
        if (watcher_ && watcher_->manager_alive()) {
            if (options_.pidfile) {
                if (const auto listed = acceptable_manager(); listed && *listed != old) {
                    attach(*listed);
                    events_.emit("manager-restarted", {{"old", old}, {"manager", manager_}});
                }
            }
            return true;
        }
        watcher_.reset();
        if (options_.pidfile) {
            if (const auto listed = acceptable_manager(); listed && *listed != old) {
                attach(*listed);
                events_.emit(old != 0 ? "manager-restarted" : "manager-found",
                             {{"old", old}, {"manager", manager_}});
                return true;
            }
        }
        if (options_.wait_for_manager) {
            if (!waiting_reported_) {
                events_.emit("manager-gone", {{"manager", old}, {"action", "waiting"}});
                waiting_reported_ = true;
            }
            return true;
        }
        events_.emit("manager-gone", {{"manager", old}, {"action", "exit"}});
        return false;
    }

    PolicyActions tick() {
        watcher_->poll();
        // A full kernel map: once per map (the observer also logged a warning).
        for (const auto& notice : watcher_->take_capacity_notices()) {
            events_.emit("capacity", capacity_event_fields(notice));
        }
        refresh_oldest_truth();
        std::vector<ChildView> views;
        std::map<pid_t, std::uint64_t> alive;
        const TimePoint judged_at = Clock::now();
        for (const auto& [pid, record] : watcher_->children()) {
            if (record.exited) {
                continue;
            }
            alive.emplace(pid, record.start_ticks);
            if (!is_worker(record, judged_at)) {
                continue;  // a helper: never a candidate, never counted
            }
            ChildView view;
            view.pid = pid;
            view.start_ticks = record.start_ticks;
            view.metric_bytes = estimate_metric(record, options_.metric);
            view.first_seen = at(record.first_seen);
            if (view.metric_bytes > policy_.limit_for(pid, record.start_ticks)) {
                view.verdict = classify(record.samples.samples()).verdict;  // only where it matters
            }
            views.push_back(view);
        }
        watcher_->prune_exited();
        roles_->keep_only(alive);
        std::erase_if(helpers_reported_,
                      [&](const auto& helper) { return !alive.contains(helper.first); });
        const TimePoint now = Clock::now();
        PolicyActions actions = policy_.tick(now, views);
        for (const auto& notice : actions.notices) {
            events_.emit(notice.event, {{"pid", notice.pid}, {"detail", notice.detail}});
            if (notice.event == "replaced" || notice.event == "replace-timeout") {
                run_post_hook(notice.pid);
            }
        }
        for (const auto& escalation : actions.escalate) {
            if (gate_.stop_requested()) {
                return actions;  // stop wins: no further signal
            }
            const auto outcome = signaller_.send({escalation.pid, escalation.start_ticks, manager_},
                                                 escalation.signal);
            events_.emit("escalate", {{"pid", escalation.pid},
                                      {"signal", signal_name(escalation.signal)},
                                      {"outcome", outcome_name(outcome)},
                                      {"reason", escalation.reason}});
        }
        for (const auto& action : actions.recycle) {
            if (gate_.stop_requested()) {
                return actions;
            }
            recycle(action, views.size());
        }
        return actions;
    }

    // Whether a live child is a worker; a helper is reported once (event "helper").
    bool is_worker(const ChildRecord& record, TimePoint now) {
        const RoleJudgement& role = roles_->role(record.pid, record.start_ticks, now);
        if (roles_->listener_skipped() && !listener_warned_) {
            events_.emit("workers", {{"rule", rule_.text},
                                     {"detail",
                                      "the manager holds no listening socket: the listener "
                                      "condition is left out"}});
            listener_warned_ = true;
        }
        if (role.worker) {
            return true;
        }
        if (helpers_reported_.emplace(record.pid, record.start_ticks).second) {
            events_.emit("helper",
                         {{"pid", record.pid}, {"comm", record.comm}, {"reason", role.reason}});
        }
        return false;
    }

    // Ground truth for one child per tick whose last reading is oldest, when it is older
    // than --truth-every: keeps estimates honest at a bounded cost.
    void refresh_oldest_truth() {
        const double due = watcher_->elapsed_seconds() -
                           static_cast<double>(options_.truth_every.count()) / 1000.0;
        const ChildRecord* oldest = nullptr;
        for (const auto& [pid, record] : watcher_->children()) {
            if (!record.exited && record.anchor_seconds <= due &&
                (oldest == nullptr || record.anchor_seconds < oldest->anchor_seconds)) {
                oldest = &record;
            }
        }
        if (oldest != nullptr) {
            watcher_->refresh_child(oldest->pid);
        }
    }

    std::vector<std::string> hook_env(const std::string& event, pid_t pid,
                                      const RecycleAction* action) const {
        std::vector<std::string> env = {
            "KIDREAPER_EVENT=" + event,
            "KIDREAPER_PID=" + std::to_string(pid),
            "KIDREAPER_MANAGER=" + std::to_string(manager_),
            "KIDREAPER_DRY_RUN=" + std::string(options_.policy.dry_run ? "1" : "0"),
        };
        if (action != nullptr) {
            env.push_back("KIDREAPER_SIGNAL=" + signal_name(action->signal));
            env.push_back("KIDREAPER_METRIC=" + metric_name(options_.metric));
            env.push_back("KIDREAPER_METRIC_BYTES=" + std::to_string(action->metric_bytes));
            env.push_back("KIDREAPER_LIMIT_BYTES=" + std::to_string(action->limit_bytes));
            env.push_back("KIDREAPER_VERDICT=" + std::string(verdict_name(action->verdict)));
        }
        return env;
    }

    // A hook's outcome; its output goes to stderr, prefixed (stdout is the event stream).
    HookResult run_hook(const std::string& label, const std::string& command,
                        std::vector<std::string> env) {
        HookRequest request;
        request.label = label;
        request.command = command;
        request.env = std::move(env);
        request.timeout = options_.hook_timeout;
        return kidreaper::run_hook(request, gate_, STDERR_FILENO);
    }

    void run_post_hook(pid_t pid) {
        if (options_.post_hook.empty() || gate_.stop_requested()) {
            return;
        }
        const HookResult result =
            run_hook("post-hook", options_.post_hook, hook_env("post", pid, nullptr));
        Fields fields = {{"pid", pid}, {"outcome", hook_outcome_name(result.outcome)}};
        if (result.outcome == HookOutcome::exited) {
            fields.emplace_back("status", result.status);
        }
        fields.emplace_back("detail", describe(result));
        events_.emit("post-hook", fields);
    }

    // Logs why a proposed child was not signalled; the policy leaves it alone for a while
    // (its retry time, or `hold`).
    void skip(const RecycleAction& action, const std::string& reason,
              std::optional<Duration> hold = std::nullopt) {
        events_.emit("skip", {{"pid", action.pid}, {"reason", reason}});
        policy_.refused(action.pid, Clock::now(), hold);
    }

    // Waits until the child is idle (or the idle timeout); returns "idle", "timeout",
    // "off", or "" when kidreaper is being stopped.
    std::string wait_until_idle(pid_t pid) {
        if (!options_.idle_wait) {
            return "off";
        }
        const auto deadline = Clock::now() + options_.idle_timeout;
        while (true) {
            const auto line = proc_.syscall(pid);
            if (!line) {
                // Exited, or /proc/PID/syscall is not readable (no CAP_SYS_PTRACE): say so.
                return proc_.stat(pid) ? "unreadable" : "gone";
            }
            if (is_idle_syscall(*line, options_.server.idle_syscalls)) {
                return "idle";
            }
            if (Clock::now() >= deadline) {
                return "timeout";
            }
            if (gate_.wait_for(milliseconds(10)) != 0) {
                return "";
            }
        }
    }

    void recycle(const RecycleAction& action, std::size_t alive_count) {
        const auto truth = watcher_->refresh_child(action.pid);
        if (!truth) {
            skip(action, "exited before it could be confirmed");
            return;
        }
        const std::uint64_t measured = truth_metric(*truth, options_.metric);
        if (measured <= action.limit_bytes) {
            // The estimate is re-anchored on this reading: look again next interval.
            skip(action,
                 "ground truth " + format_size(measured) + " is under the limit " +
                     format_size(action.limit_bytes) + " (estimate was " +
                     format_size(action.metric_bytes) + ")",
                 options_.interval);
            return;
        }
        const auto found = watcher_->children().find(action.pid);
        if (found == watcher_->children().end()) {
            skip(action, "no longer watched");
            return;
        }
        const ChildRecord& record = found->second;
        if (!options_.pre_hook.empty()) {
            const HookResult verdict =
                run_hook("pre-hook", options_.pre_hook, hook_env("pre", action.pid, &action));
            if (verdict.outcome == HookOutcome::stopped || gate_.stop_requested()) {
                return;  // stop wins: run() logs "stop"
            }
            if (!approves(verdict)) {
                skip(action, "pre-hook vetoed it (" + describe(verdict) + ")");
                return;
            }
        }
        const std::string idle = wait_until_idle(action.pid);
        if (idle.empty() || gate_.stop_requested()) {
            return;  // stopping
        }
        if (idle == "gone") {
            skip(action, "exited while waiting for it to be idle");
            return;
        }
        if (idle == "unreadable") {
            events_.emit("busy", {{"pid", action.pid},
                                  {"detail",
                                   "cannot read /proc/PID/syscall (CAP_SYS_PTRACE?); "
                                   "signalling without waiting for idle"}});
        }
        if (idle == "timeout") {
            events_.emit("busy",
                         {{"pid", action.pid},
                          {"detail", "not idle within " + format_duration(options_.idle_timeout) +
                                         "; signalling anyway: the signal is graceful"}});
        }
        Fields fields = {
            {"pid", action.pid},
            {"lifetime", lifetime(record)},
            {"private", truth->private_bytes()},
            {"shared", truth->shared_bytes()},
            {"rss", truth->rss},
            {"pss", truth->pss},
            {"metric", metric_name(options_.metric)},
            {"value", measured},
            {"limit", action.limit_bytes},
            {"verdict",
             verdict_name(record.samples.size() > 2 ? classify(record.samples.samples()).verdict
                                                    : Verdict::unknown)},
            {"reason", format_size(measured) + " " + metric_name(options_.metric) +
                           " over the limit of " + format_size(action.limit_bytes)},
            {"signal", signal_name(action.signal)},
            {"idle", idle},
        };
        // Looked at again right before the signal: a child that exec'd another program
        // since it was judged (a piped logger) is a helper.
        if (const RoleJudgement role =
                roles_->judge_now(action.pid, action.start_ticks, Clock::now());
            !role.worker) {
            skip(action, "not a worker: " + role.reason, std::chrono::hours(24));
            return;
        }
        if (gate_.stop_requested()) {
            return;  // stop wins, right up to the signal
        }
        if (options_.policy.dry_run) {
            fields.emplace_back("dry_run", true);
            events_.emit("recycle", fields);
            policy_.signalled(action, Clock::now(), alive_count);
            return;
        }
        const auto outcome =
            signaller_.send({action.pid, action.start_ticks, manager_}, action.signal);
        if (outcome != SignalOutcome::sent) {
            skip(action, "not signalled: " + outcome_name(outcome));
            return;
        }
        events_.emit("recycle", fields);
        policy_.signalled(action, Clock::now(), alive_count);
    }

    std::string lifetime(const ChildRecord& record) const {
        const auto uptime = proc_.uptime_seconds();
        const long ticks_per_second = sysconf(_SC_CLK_TCK);
        if (!uptime || ticks_per_second <= 0) {
            return "?";
        }
        const double seconds = *uptime - static_cast<double>(record.start_ticks) /
                                             static_cast<double>(ticks_per_second);
        return format_duration(milliseconds(static_cast<long long>(std::max(0.0, seconds) * 1000)));
    }

    // Each child's whole life, thinned: 8 KiB a child (docs/reap.md).
    static constexpr std::size_t kSamplesKept = 256;

    const ReapOptions& options_;
    Observer& observer_;
    const ProcFs& proc_;
    Signaller& signaller_;
    const EventLog& events_;
    SignalGate& gate_;
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
    // The manager kidreaper started with (pidfile_trust.h); pinned at the first attach.
    std::optional<ManagerIdentity> pinned_;
    bool identity_pinned_ = false;
    std::string last_refusal_;
    pid_t last_refused_pid_ = 0;
};

}  // namespace

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
    if (options.pid && options.pidfile) {
        throw UsageError("give --pid or --pidfile, not both");
    }
    if (!options.pid && !options.pidfile) {
        throw UsageError("which server? give --pid PID or --pidfile FILE");
    }
    if (options.wait_for_manager && !options.pidfile) {
        throw UsageError("--wait-for-manager needs --pidfile (a new manager has a new pid)");
    }
    if (options.pidfile && !options.wait_for_manager) {
        read_pidfile(*options.pidfile);  // a bad pidfile is a usage error, up front
    }
    const KernelFeatures features = require_usable_kernel();
    const ProcFs proc;
    if (options.pid && !proc.stat(*options.pid)) {
        throw Error("no process " + std::to_string(*options.pid));
    }
    Observer observer({.cow = features.cow_source(options.fault_source)}, log);
    SignalGate gate;
    PidfdSignaller signaller(proc);
    const EventLog events(options.log_format);
    Reaper reaper(options, observer, proc, signaller, events, gate);
    return reaper.run();
}

}  // namespace kidreaper
