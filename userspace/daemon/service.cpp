#include "daemon/service.h"

#include <unistd.h>

#include <algorithm>

#include "act/idle.h"
#include "act/signaller.h"
#include "act/signals.h"
#include "common/error.h"
#include "common/units.h"
#include "model/estimate.h"
#include "observe/manager_lookup.h"
#include "observe/observer.h"
#include "observe/procfs.h"

namespace kidreaper {

using Fields = EventLog::Fields;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

bool ManagerClaims::claim(pid_t manager, const std::string& service) {
    const auto [it, added] = holders_.emplace(manager, service);
    return added || it->second == service;
}

void ManagerClaims::release(pid_t manager, const std::string& service) {
    if (const auto it = holders_.find(manager); it != holders_.end() && it->second == service) {
        holders_.erase(it);
    }
}

std::string ManagerClaims::holder(pid_t manager) const {
    const auto it = holders_.find(manager);
    return it == holders_.end() ? std::string() : it->second;
}

Service::Service(std::string name, ReapOptions options, const ServiceContext& context, bool waits)
    : name_(std::move(name)),
      options_(std::move(options)),
      context_(context),
      waits_(waits),
      events_(context.log_format),
      policy_(options_.policy),
      facts_(context.proc.root()),
      rule_(options_.workers ? *options_.workers : parse_worker_rule(options_.server.workers)) {
    snapshot_.service = name_;
    snapshot_.limit_bytes = options_.policy.limit_bytes;
}

Service::~Service() {
    detach();
}

void Service::emit(const std::string& event, Fields fields) const {
    if (context_.label_events) {
        fields.insert(fields.begin(), {"service", name_});
    }
    events_.emit(event, fields);
}

TimePoint Service::at(double seconds) const {
    return watch_start_ + duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

void Service::start() {
    if (const auto manager = acceptable_manager()) {
        attach(*manager);
    } else if (!waits_) {
        if (!last_refusal_.empty()) {
            throw Error("refusing to watch the process the " +
                        std::string(selector_key(options_.manager.kind)) +
                        " names: " + last_refusal_);
        }
        throw Error(last_problem_.empty() ? "no manager process to watch (is the server running?)"
                                          : last_problem_);
    }
    emit("start", {{"manager", manager_},
                   {"limit", options_.policy.limit_bytes},
                   {"metric", metric_name(options_.metric)},
                   {"server", options_.server.name},
                   {"signal", signal_name(options_.policy.signals.front())},
                   {"dry_run", options_.policy.dry_run},
                   {"workers", rule_.text},
                   {"mode", cow_source_name(context_.observer.cow_source())}});
}

std::optional<pid_t> Service::current_manager() {
    const ManagerLookup lookup = find_manager(options_.manager, context_.proc);
    last_problem_ = lookup.problem;
    return lookup.pid;
}

std::optional<pid_t> Service::acceptable_manager() {
    const auto manager = current_manager();
    if (!manager) {
        return std::nullopt;
    }
    std::optional<std::string> refusal;
    const std::string holder = context_.claims.holder(*manager);
    if (!holder.empty() && holder != name_) {
        refusal = "it is service " + holder + "'s manager already";
    } else if (options_.manager.kind == ManagerSelector::Kind::pidfile) {
        const auto stat = context_.proc.stat(*manager);
        const pid_t ppid = stat ? stat->ppid : 0;
        const PidfileTrust trust = assess_pidfile(options_.manager.value, SystemPathInspector());
        const CandidateFacts candidate = read_candidate(*manager, ppid, facts_);
        if (identity_pinned_ && !pinned_) {
            refusal = "the identity of the manager kidreaper started with could not be read";
        } else {
            refusal = refuse_manager(trust, candidate, pinned_, manager_);
        }
    }
    if (!refusal) {
        last_refusal_.clear();
        return manager;
    }
    if (*refusal != last_refusal_ || *manager != last_refused_pid_) {
        emit("manager-refused", {{"pid", *manager},
                                 {selector_key(options_.manager.kind), options_.manager.value},
                                 {"manager", manager_},
                                 {"reason", *refusal}});
        last_refusal_ = *refusal;
        last_refused_pid_ = *manager;
    }
    return std::nullopt;
}

void Service::attach(pid_t manager) {
    detach();
    if (!identity_pinned_) {
        const auto stat = context_.proc.stat(manager);
        pinned_ = pin_identity(read_candidate(manager, stat ? stat->ppid : 0, facts_));
        identity_pinned_ = true;
    }
    context_.claims.claim(manager, name_);
    manager_ = manager;
    roles_ = std::make_unique<WorkerRoles>(rule_, facts_, manager_);
    helpers_reported_.clear();
    listener_warned_ = false;
    watch_start_ = Clock::now();
    watcher_ = std::make_unique<Watcher>(context_.observer, context_.proc, manager_, kSamplesKept);
    waiting_reported_ = false;
}

void Service::detach() {
    watcher_.reset();
    roles_.reset();
    if (manager_ != 0) {
        context_.claims.release(manager_, name_);
    }
}

bool Service::follow_manager() {
    const pid_t old = manager_;
    const bool rereads_each_tick = options_.manager.kind == ManagerSelector::Kind::pidfile;
    const bool can_move = options_.manager.kind != ManagerSelector::Kind::pid;
    if (watcher_ && watcher_->manager_alive()) {
        if (rereads_each_tick) {
            if (const auto listed = acceptable_manager(); listed && *listed != old) {
                attach(*listed);
                emit("manager-restarted", {{"old", old}, {"manager", manager_}});
            }
        }
        return true;
    }
    if (watcher_) {
        detach();
    }
    if (can_move) {
        if (const auto listed = acceptable_manager(); listed && *listed != old) {
            attach(*listed);
            emit(old != 0 ? "manager-restarted" : "manager-found",
                 {{"old", old}, {"manager", manager_}});
            return true;
        }
    }
    if (waits_) {
        if (!waiting_reported_) {
            emit("manager-gone",
                 {{"manager", old},
                  {"action", "waiting"},
                  {"detail", last_problem_.empty() ? last_refusal_ : last_problem_}});
            waiting_reported_ = true;
        }
        return true;
    }
    emit("manager-gone", {{"manager", old}, {"action", "exit"}});
    return false;
}

StepResult Service::step() {
    if (!follow_manager()) {
        return StepResult::gone;
    }
    if (!watcher_) {
        snapshot_ = ServiceSnapshot{};
        snapshot_.service = name_;
        snapshot_.limit_bytes = options_.policy.limit_bytes;
        snapshot_.cow_bytes_total = cow_total_;
        return StepResult::running;  // waiting for the manager (to come back)
    }
    const PolicyActions actions = tick();
    ++ticks_;
    if (options_.once && ticks_ >= 2 && actions.recycle.empty() && actions.waiting == 0 &&
        policy_.in_flight() == 0) {
        return StepResult::finished;
    }
    return StepResult::running;
}

PolicyActions Service::tick() {
    watcher_->poll();
    // A full kernel map: once per map (the observer also logged a warning).
    for (const auto& notice : watcher_->take_capacity_notices()) {
        emit("capacity", capacity_event_fields(notice));
    }
    refresh_oldest_truth();
    count_cow();
    std::vector<ChildView> views;
    std::vector<const ChildRecord*> workers;
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
        workers.push_back(&record);
        ChildView view;
        view.pid = pid;
        view.start_ticks = record.start_ticks;
        view.metric_bytes = estimate_metric(record, options_.metric);
        view.first_seen = at(record.first_seen);
        const bool over = view.metric_bytes > policy_.limit_for(pid, record.start_ticks);
        if (over) {
            view.verdict = classify(record.samples.samples()).verdict;  // only where it matters
        }
        views.push_back(view);
    }
    take_snapshot(workers);
    watcher_->prune_exited();
    roles_->keep_only(alive);
    std::erase_if(helpers_reported_,
                  [&](const auto& helper) { return !alive.contains(helper.first); });
    const TimePoint now = Clock::now();
    PolicyActions actions = policy_.tick(now, views);
    for (const auto& notice : actions.notices) {
        emit(notice.event, {{"pid", notice.pid}, {"detail", notice.detail}});
        if (notice.event == "replaced" || notice.event == "replace-timeout") {
            run_post_hook(notice.pid);
        }
    }
    for (const auto& escalation : actions.escalate) {
        if (context_.gate.stop_requested()) {
            return actions;  // stop wins: no further signal
        }
        const auto outcome = context_.signaller.send(
            {escalation.pid, escalation.start_ticks, manager_}, escalation.signal);
        count_signal(escalation.signal, outcome_name(outcome));
        emit("escalate", {{"pid", escalation.pid},
                          {"signal", signal_name(escalation.signal)},
                          {"outcome", outcome_name(outcome)},
                          {"reason", escalation.reason}});
    }
    for (const auto& action : actions.recycle) {
        if (context_.gate.stop_requested()) {
            return actions;
        }
        recycle(action, views.size());
    }
    return actions;
}

bool Service::is_worker(const ChildRecord& record, TimePoint now) {
    const RoleJudgement& role = roles_->role(record.pid, record.start_ticks, now);
    if (roles_->listener_skipped() && !listener_warned_) {
        emit("workers", {{"rule", rule_.text},
                         {"detail",
                          "the manager holds no listening socket: the listener "
                          "condition is left out"}});
        listener_warned_ = true;
    }
    if (role.worker) {
        return true;
    }
    if (helpers_reported_.emplace(record.pid, record.start_ticks).second) {
        emit("helper", {{"pid", record.pid}, {"comm", record.comm}, {"reason", role.reason}});
    }
    return false;
}

void Service::refresh_oldest_truth() {
    const double due =
        watcher_->elapsed_seconds() - static_cast<double>(options_.truth_every.count()) / 1000.0;
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

std::vector<std::string> Service::hook_env(const std::string& event, pid_t pid,
                                           const RecycleAction* action) const {
    std::vector<std::string> env = {
        "KIDREAPER_EVENT=" + event,
        "KIDREAPER_PID=" + std::to_string(pid),
        "KIDREAPER_MANAGER=" + std::to_string(manager_),
        "KIDREAPER_SERVICE=" + name_,
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

HookResult Service::run_hook(const std::string& label, const std::string& command,
                             std::vector<std::string> env) {
    HookRequest request;
    request.label = label;
    request.command = command;
    request.env = std::move(env);
    request.timeout = options_.hook_timeout;
    return kidreaper::run_hook(request, context_.gate, STDERR_FILENO);
}

void Service::run_post_hook(pid_t pid) {
    if (options_.post_hook.empty() || context_.gate.stop_requested()) {
        return;
    }
    const HookResult result =
        run_hook("post-hook", options_.post_hook, hook_env("post", pid, nullptr));
    Fields fields = {{"pid", pid}, {"outcome", hook_outcome_name(result.outcome)}};
    if (result.outcome == HookOutcome::exited) {
        fields.emplace_back("status", result.status);
    }
    fields.emplace_back("detail", describe(result));
    emit("post-hook", fields);
}

void Service::skip(const RecycleAction& action, const std::string& code, const std::string& reason,
                   std::optional<Duration> hold) {
    emit("skip", {{"pid", action.pid}, {"reason", reason}, {"code", code}});
    if (context_.metrics != nullptr) {
        context_.metrics->count_skip(name_, code);
    }
    policy_.refused(action.pid, Clock::now(), hold);
}

void Service::recycle(const RecycleAction& action, std::size_t alive_count) {
    const auto truth = watcher_->refresh_child(action.pid);
    if (!truth) {
        skip(action, "exited", "exited before it could be confirmed");
        return;
    }
    const std::uint64_t measured = truth_metric(*truth, options_.metric);
    if (measured <= action.limit_bytes) {
        // The estimate is re-anchored on this reading: look again next interval.
        skip(action, "under-limit",
             "ground truth " + format_size(measured) + " is under the limit " +
                 format_size(action.limit_bytes) + " (estimate was " +
                 format_size(action.metric_bytes) + ")",
             options_.interval);
        return;
    }
    const auto found = watcher_->children().find(action.pid);
    if (found == watcher_->children().end()) {
        skip(action, "unwatched", "no longer watched");
        return;
    }
    const ChildRecord& record = found->second;
    if (!options_.pre_hook.empty()) {
        const HookResult verdict =
            run_hook("pre-hook", options_.pre_hook, hook_env("pre", action.pid, &action));
        if (verdict.outcome == HookOutcome::stopped || context_.gate.stop_requested()) {
            return;  // stop wins: the daemon logs "stop"
        }
        if (!approves(verdict)) {
            skip(action, "pre-hook-veto", "pre-hook vetoed it (" + describe(verdict) + ")");
            return;
        }
    }
    IdleWait idle = IdleWait::idle;
    std::string idle_text = "off";
    if (options_.idle_wait) {
        idle = wait_until_idle(context_.proc, action.pid, options_.server.idle_syscalls,
                               options_.idle_timeout, context_.gate);
        idle_text = idle_wait_name(idle);
    }
    if (idle == IdleWait::stopping || context_.gate.stop_requested()) {
        return;  // stopping
    }
    if (idle == IdleWait::gone) {
        skip(action, "exited", "exited while waiting for it to be idle");
        return;
    }
    if (idle == IdleWait::unreadable) {
        emit("busy", {{"pid", action.pid},
                      {"detail",
                       "cannot read /proc/PID/syscall (CAP_SYS_PTRACE?); "
                       "signalling without waiting for idle"}});
    }
    if (idle == IdleWait::timeout) {
        emit("busy", {{"pid", action.pid},
                      {"detail", "not idle within " + format_duration(options_.idle_timeout) +
                                     "; signalling anyway: the signal is graceful"}});
    }
    const Verdict verdict =
        record.samples.size() > 2 ? classify(record.samples.samples()).verdict : Verdict::unknown;
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
        {"verdict", verdict_name(verdict)},
        {"reason", format_size(measured) + " " + metric_name(options_.metric) +
                       " over the limit of " + format_size(action.limit_bytes)},
        {"signal", signal_name(action.signal)},
        {"idle", idle_text},
    };
    // Looked at again right before the signal: a child that exec'd another program
    // since it was judged (a piped logger) is a helper.
    if (const RoleJudgement role = roles_->judge_now(action.pid, action.start_ticks, Clock::now());
        !role.worker) {
        skip(action, "not-worker", "not a worker: " + role.reason, std::chrono::hours(24));
        return;
    }
    if (context_.gate.stop_requested()) {
        return;  // stop wins, right up to the signal
    }
    if (options_.policy.dry_run) {
        fields.emplace_back("dry_run", true);
        emit("recycle", fields);
        policy_.signalled(action, Clock::now(), alive_count);
        return;
    }
    const auto outcome =
        context_.signaller.send({action.pid, action.start_ticks, manager_}, action.signal);
    count_signal(action.signal, outcome_name(outcome));
    if (outcome != SignalOutcome::sent) {
        skip(action, "signal-failed", "not signalled: " + outcome_name(outcome));
        return;
    }
    emit("recycle", fields);
    if (context_.metrics != nullptr) {
        context_.metrics->count_recycle(name_, verdict_name(verdict));
    }
    policy_.signalled(action, Clock::now(), alive_count);
}

void Service::count_signal(int signal, const std::string& outcome) const {
    if (context_.metrics != nullptr) {
        context_.metrics->count_signal(name_, signal_name(signal), outcome);
    }
}

void Service::count_cow() {
    std::map<std::pair<pid_t, std::uint64_t>, std::uint64_t> seen;
    for (const auto& [pid, record] : watcher_->children()) {
        const std::pair<pid_t, std::uint64_t> key{pid, record.start_ticks};
        const std::uint64_t now = record.account.cow_bytes();
        const auto before = cow_seen_.find(key);
        const std::uint64_t was = before == cow_seen_.end() ? 0 : before->second;
        cow_total_ += now > was ? now - was : 0;
        if (!record.exited) {
            seen[key] = std::max(now, was);
        }
    }
    cow_seen_ = std::move(seen);
}

void Service::take_snapshot(const std::vector<const ChildRecord*>& workers) {
    ServiceSnapshot snap;
    snap.service = name_;
    snap.manager_up = watcher_ != nullptr && watcher_->manager_alive();
    snap.children = workers.size();
    snap.limit_bytes = options_.policy.limit_bytes;
    snap.cow_bytes_total = cow_total_;
    for (const ChildRecord* record : workers) {
        snap.private_bytes += estimate_metric(*record, Metric::private_memory);
        snap.pss_bytes += estimate_metric(*record, Metric::pss);
        snap.rss_bytes += record->latest.rss_bytes();
        if (record->smaps_last) {
            snap.shared_bytes += record->smaps_last->shared_bytes();
        }
        snap.largest_child_bytes =
            std::max(snap.largest_child_bytes, estimate_metric(*record, options_.metric));
        if (context_.metrics != nullptr) {
            const Verdict verdict = record->samples.size() > 2
                                        ? classify(record->samples.samples()).verdict
                                        : Verdict::unknown;
            ++snap.children_by_verdict[std::string(verdict_name(verdict))];
        }
    }
    snapshot_ = std::move(snap);
}

std::string Service::lifetime(const ChildRecord& record) const {
    const auto uptime = context_.proc.uptime_seconds();
    const long ticks_per_second = sysconf(_SC_CLK_TCK);
    if (!uptime || ticks_per_second <= 0) {
        return "?";
    }
    const double seconds =
        *uptime - static_cast<double>(record.start_ticks) / static_cast<double>(ticks_per_second);
    return format_duration(milliseconds(static_cast<long long>(std::max(0.0, seconds) * 1000)));
}

}  // namespace kidreaper
