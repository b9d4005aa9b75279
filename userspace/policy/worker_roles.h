// The role (worker or helper) of each child of one manager, judged by a WorkerRule on
// facts read from /proc. A child is judged when first seen and again on every look in
// its first seconds (a piped logger is a fork of the manager until it execs); after that
// the judgement stands, except right before a signal, when judge_now() looks again.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <utility>

#include "observe/process_facts.h"
#include "policy/worker_rule.h"

namespace kidreaper {

class WorkerRoles {
public:
    using Clock = std::chrono::steady_clock;

    WorkerRoles(WorkerRule rule, const ProcessFacts& facts, pid_t manager);

    // The child's role; `fresh` is set when this call judged it for the first time.
    const RoleJudgement& role(pid_t pid, std::uint64_t start_ticks, Clock::time_point now,
                              bool* fresh = nullptr);
    // Judges the child again from what /proc says now, and keeps that.
    RoleJudgement judge_now(pid_t pid, std::uint64_t start_ticks, Clock::time_point now);
    // Forgets children not in `alive` (pid, start ticks).
    void keep_only(const std::map<pid_t, std::uint64_t>& alive);
    // True when the rule has "listener" but the manager holds no listening socket, so the
    // condition was left out (say so once).
    bool listener_skipped() const { return listener_skipped_; }
    const WorkerRule& rule() const { return rule_; }

    // How long a worker judgement is revisited on every look after first sight.
    static constexpr std::chrono::seconds kSettling{5};

private:
    struct Entry {
        RoleJudgement judgement;
        Clock::time_point first_judged{};
    };

    RoleJudgement judge(pid_t pid, Clock::time_point now);
    void refresh_manager(Clock::time_point now);

    WorkerRule rule_;
    const ProcessFacts& facts_;
    pid_t manager_;
    ManagerFacts manager_facts_;
    Clock::time_point manager_read_at_{};
    bool listener_skipped_ = false;
    std::map<std::pair<pid_t, std::uint64_t>, Entry> roles_;
};

}  // namespace kidreaper
