#include "policy/worker_roles.h"

namespace kidreaper {
namespace {

// The manager's listening sockets are read again at most this often (a graceful restart
// of Apache keeps them; a new listener is rare).
constexpr std::chrono::seconds kManagerRefresh{10};

}  // namespace

WorkerRoles::WorkerRoles(WorkerRule rule, const ProcessFacts& facts, pid_t manager)
    : rule_(std::move(rule)), facts_(facts), manager_(manager) {
    refresh_manager(Clock::now());
}

void WorkerRoles::refresh_manager(Clock::time_point now) {
    if (rule_.same_exe) {
        manager_facts_.exe = facts_.executable(manager_);
    }
    if (rule_.listener) {
        manager_facts_.listening_sockets = facts_.listening_sockets(manager_);
    }
    manager_read_at_ = now;
}

RoleJudgement WorkerRoles::judge(pid_t pid, Clock::time_point now) {
    if (rule_.any) {
        return judge_role(rule_, {}, manager_facts_);
    }
    ChildFacts child;
    if (rule_.same_exe) {
        child.exe = facts_.executable(pid);
    }
    if (!rule_.comm_globs.empty()) {
        child.comm = facts_.comm(pid);
    }
    if (!rule_.cmdline_globs.empty()) {
        child.cmdline = facts_.cmdline(pid);
    }
    if (rule_.listener) {
        child.socket_inodes = facts_.socket_inodes(pid);
    }
    RoleJudgement judgement = judge_role(rule_, child, manager_facts_, &listener_skipped_);
    if (!judgement.worker && now - manager_read_at_ >= kManagerRefresh) {
        refresh_manager(now);  // the manager may have changed (a new listener, an exec)
        judgement = judge_role(rule_, child, manager_facts_, &listener_skipped_);
    }
    return judgement;
}

const RoleJudgement& WorkerRoles::role(pid_t pid, std::uint64_t start_ticks, Clock::time_point now,
                                       bool* fresh) {
    const auto key = std::make_pair(pid, start_ticks);
    auto found = roles_.find(key);
    if (found == roles_.end()) {
        if (fresh != nullptr) {
            *fresh = true;
        }
        return roles_.emplace(key, Entry{judge(pid, now), now}).first->second.judgement;
    }
    if (fresh != nullptr) {
        *fresh = false;
    }
    Entry& entry = found->second;
    if (entry.judgement.worker && now - entry.first_judged < kSettling) {
        entry.judgement = judge(pid, now);
    }
    return entry.judgement;
}

RoleJudgement WorkerRoles::judge_now(pid_t pid, std::uint64_t start_ticks, Clock::time_point now) {
    RoleJudgement judgement = judge(pid, now);
    auto [entry, inserted] = roles_.try_emplace(std::make_pair(pid, start_ticks));
    if (inserted) {
        entry->second.first_judged = now;
    }
    entry->second.judgement = judgement;
    return judgement;
}

void WorkerRoles::keep_only(const std::map<pid_t, std::uint64_t>& alive) {
    std::erase_if(roles_, [&](const auto& item) {
        const auto found = alive.find(item.first.first);
        return found == alive.end() || found->second != item.first.second;
    });
}

}  // namespace kidreaper
