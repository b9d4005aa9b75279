#include "reaper.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <memory>
#include <optional>

#include "error.h"
#include "kernel_features.h"
#include "observer.h"
#include "procfs.h"
#include "signaller.h"
#include "signals.h"
#include "units.h"

extern char** environ;

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

// Runs `command` with /bin/sh and `env` added to the environment; the exit status,
// or -1 when it could not run or ran past `timeout` (then it is killed).
int run_hook(const std::string& command, const std::vector<std::string>& env, milliseconds timeout,
             SignalGate& gate) {
    std::vector<std::string> environment = env;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        environment.emplace_back(*entry);
    }
    std::vector<char*> envp;
    envp.reserve(environment.size() + 1);
    for (auto& entry : environment) {
        envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    std::string shell = "/bin/sh";
    std::string flag = "-c";
    std::string script = command;
    char* argv[] = {shell.data(), flag.data(), script.data(), nullptr};
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
    pid_t hook = 0;
    const int error = posix_spawn(&hook, shell.c_str(), nullptr, &attributes, argv, envp.data());
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
        return -1;
    }
    const auto deadline = Clock::now() + timeout;
    int status = 0;
    while (waitpid(hook, &status, WNOHANG) == 0) {
        if (Clock::now() >= deadline) {
            kill(hook, SIGKILL);
            waitpid(hook, &status, 0);
            return -1;
        }
        gate.wait_for(milliseconds(20));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

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
          policy_(options.policy) {}

    int run() {
        if (const auto manager = current_manager()) {
            attach(*manager);
        } else if (!options_.wait_for_manager) {
            throw Error("no manager process to watch (is the server running?)");
        }
        events_.emit("start", {{"manager", manager_},
                               {"limit", options_.policy.limit_bytes},
                               {"metric", metric_name(options_.metric)},
                               {"server", options_.server.name},
                               {"signal", signal_name(options_.policy.signals.front())},
                               {"dry_run", options_.policy.dry_run},
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
            if (gate_.received() != 0) {
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

    void attach(pid_t manager) {
        watcher_.reset();
        manager_ = manager;
        watch_start_ = Clock::now();
        watcher_ = std::make_unique<Watcher>(observer_, proc_, manager_, kSamplesKept);
        waiting_reported_ = false;
    }

    // Follows a manager restarted under its pidfile; false when kidreaper should exit.
    bool follow_manager() {
        const pid_t old = manager_;
        if (watcher_ && watcher_->manager_alive()) {
            if (options_.pidfile) {
                if (const auto listed = current_manager(); listed && *listed != old) {
                    attach(*listed);
                    events_.emit("manager-restarted", {{"old", old}, {"manager", manager_}});
                }
            }
            return true;
        }
        watcher_.reset();
        if (options_.pidfile) {
            if (const auto listed = current_manager(); listed && *listed != old) {
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
        refresh_oldest_truth();
        std::vector<ChildView> views;
        for (const auto& [pid, record] : watcher_->children()) {
            if (record.exited) {
                continue;
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
        const TimePoint now = Clock::now();
        PolicyActions actions = policy_.tick(now, views);
        for (const auto& notice : actions.notices) {
            events_.emit(notice.event, {{"pid", notice.pid}, {"detail", notice.detail}});
            if (notice.event == "replaced" || notice.event == "replace-timeout") {
                run_post_hook(notice.pid);
            }
        }
        for (const auto& escalation : actions.escalate) {
            const auto outcome = signaller_.send({escalation.pid, escalation.start_ticks, manager_},
                                                 escalation.signal);
            events_.emit("escalate", {{"pid", escalation.pid},
                                      {"signal", signal_name(escalation.signal)},
                                      {"outcome", outcome_name(outcome)},
                                      {"reason", escalation.reason}});
        }
        for (const auto& action : actions.recycle) {
            recycle(action, views.size());
        }
        return actions;
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

    void run_post_hook(pid_t pid) {
        if (options_.post_hook.empty()) {
            return;
        }
        const int status = run_hook(options_.post_hook, hook_env("post", pid, nullptr),
                                    options_.hook_timeout, gate_);
        events_.emit("post-hook", {{"pid", pid}, {"status", status}});
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
            const int status = run_hook(options_.pre_hook, hook_env("pre", action.pid, &action),
                                        options_.hook_timeout, gate_);
            if (status != 0) {
                skip(action, "pre-hook vetoed it (status " + std::to_string(status) + ")");
                return;
            }
        }
        const std::string idle = wait_until_idle(action.pid);
        if (idle.empty()) {
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
    Observer observer({.cow = features.cow_source()}, log);
    SignalGate gate;
    PidfdSignaller signaller(proc);
    const EventLog events(options.log_format);
    Reaper reaper(options, observer, proc, signaller, events, gate);
    return reaper.run();
}

}  // namespace kidreaper
