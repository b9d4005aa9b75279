#include "policy/reap_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kidreaper {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t kLimit = 100 * MiB;
constexpr std::uint64_t kSmall = 20 * MiB;  // a fresh child, well under the limit

// A config where nothing but the limit holds a recycle back; tests turn on what they test.
ReapConfig base_config() {
    ReapConfig config;
    config.limit_bytes = kLimit;
    config.signals = {SIGTERM};
    config.stagger = 0s;
    config.max_concurrent = 1;
    config.min_children = 0;
    config.grace = 60s;
    config.escalate = false;
    config.jitter_percent = 0;
    config.replace_timeout = 60s;
    config.retry_after = 30s;
    config.dry_run = false;
    return config;
}

// A signal sent to a child: when (ms since the simulation began), to whom, which.
struct Sent {
    std::int64_t at_ms = 0;
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    int signal = 0;
};

struct Noticed {
    std::int64_t at_ms = 0;
    PolicyNotice notice;
};

std::int64_t ms(Duration duration) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(duration).count();
}

// The policy, a fake clock, the manager's children, and a recording signaller that plays
// the Reaper: every proposed recycle is signalled (or refused, for pids in `refuse`), every
// escalation and notice is recorded. Optionally it also plays the manager: a signalled
// child exits `exit_after` later and a small replacement appears `replace_after` after that.
class Sim {
public:
    explicit Sim(const ReapConfig& config) : policy(config) {}

    ReapPolicy policy;
    const TimePoint start = TimePoint{} + std::chrono::hours(1);
    TimePoint now = start;
    std::vector<ChildView> alive;
    std::vector<Sent> recycled;
    std::vector<Sent> escalated;
    std::vector<Noticed> notices;
    std::set<pid_t> refuse;  // proposals for these pids are refused (not signalled)
    std::vector<pid_t> refused_log;

    std::int64_t elapsed_ms() const { return ms(now - start); }

    ChildView& spawn(pid_t pid, std::uint64_t metric, Verdict verdict = Verdict::stable,
                     std::optional<std::uint64_t> start_ticks = std::nullopt) {
        ChildView child;
        child.pid = pid;
        child.start_ticks = start_ticks ? *start_ticks : next_ticks_++;
        child.metric_bytes = metric;
        child.verdict = verdict;
        child.first_seen = now;
        alive.push_back(child);
        return alive.back();
    }

    void exit(pid_t pid) {
        const auto before = alive.size();
        std::erase_if(alive, [pid](const ChildView& child) { return child.pid == pid; });
        ASSERT_EQ(alive.size() + 1, before) << "pid " << pid << " was not alive";
    }

    ChildView* find(pid_t pid) {
        for (auto& child : alive) {
            if (child.pid == pid) {
                return &child;
            }
        }
        return nullptr;
    }

    // Plays the manager from now on (see the class comment).
    void manage(Duration exit_after, Duration replace_after) {
        exit_after_ = exit_after;
        replace_after_ = replace_after;
    }

    PolicyActions tick() {
        run_manager();
        PolicyActions actions = policy.tick(now, alive);
        for (const auto& notice : actions.notices) {
            notices.push_back({elapsed_ms(), notice});
        }
        for (const auto& action : actions.recycle) {
            if (refuse.count(action.pid)) {
                refused_log.push_back(action.pid);
                policy.refused(action.pid, now);
                continue;
            }
            recycled.push_back({elapsed_ms(), action.pid, action.start_ticks, action.signal});
            policy.signalled(action, now, alive.size());
            if (exit_after_) {
                pending_exits_.push_back({now + *exit_after_, action.pid, action.start_ticks});
            }
        }
        for (const auto& action : actions.escalate) {
            escalated.push_back({elapsed_ms(), action.pid, action.start_ticks, action.signal});
        }
        return actions;
    }

    // Advances by `step` and ticks, until `elapsed` since the start (inclusive).
    void run_until(Duration elapsed, Duration step = 1s) {
        while (now + step <= start + elapsed) {
            now += step;
            tick();
        }
    }

    std::size_t count(const std::string& event, std::optional<pid_t> pid = std::nullopt) const {
        return static_cast<std::size_t>(
            std::count_if(notices.begin(), notices.end(), [&](const Noticed& noticed) {
                return noticed.notice.event == event && (!pid || noticed.notice.pid == *pid);
            }));
    }

    std::vector<pid_t> recycled_pids() const {
        std::vector<pid_t> pids;
        for (const auto& sent : recycled) {
            pids.push_back(sent.pid);
        }
        return pids;
    }

    std::vector<std::int64_t> recycled_times() const {
        std::vector<std::int64_t> times;
        for (const auto& sent : recycled) {
            times.push_back(sent.at_ms);
        }
        return times;
    }

    std::vector<std::int64_t> notice_times(const std::string& event, pid_t pid) const {
        std::vector<std::int64_t> times;
        for (const auto& noticed : notices) {
            if (noticed.notice.event == event && noticed.notice.pid == pid) {
                times.push_back(noticed.at_ms);
            }
        }
        return times;
    }

private:
    struct PendingExit {
        TimePoint at;
        pid_t pid;
        std::uint64_t start_ticks;
    };

    void run_manager() {
        for (auto it = pending_exits_.begin(); it != pending_exits_.end();) {
            if (it->at <= now) {
                const auto target = std::make_pair(it->pid, it->start_ticks);
                std::erase_if(alive, [&](const ChildView& child) {
                    return std::make_pair(child.pid, child.start_ticks) == target;
                });
                pending_spawns_.push_back(now + replace_after_);
                it = pending_exits_.erase(it);
            } else {
                ++it;
            }
        }
        for (auto it = pending_spawns_.begin(); it != pending_spawns_.end();) {
            if (*it <= now) {
                spawn(next_pid_++, kSmall);
                it = pending_spawns_.erase(it);
            } else {
                ++it;
            }
        }
    }

    std::uint64_t next_ticks_ = 5000;
    pid_t next_pid_ = 9000;
    std::optional<Duration> exit_after_;
    Duration replace_after_{};
    std::vector<PendingExit> pending_exits_;
    std::vector<TimePoint> pending_spawns_;
};

// ---- ordering ---------------------------------------------------------------------------

TEST(ReapPolicyOrder, LeakFirstThenMixedThenLargest) {
    auto config = base_config();
    config.max_concurrent = 10;
    Sim sim(config);
    sim.spawn(101, 300 * MiB, Verdict::stable);
    sim.spawn(102, 150 * MiB, Verdict::leak);
    sim.spawn(103, 400 * MiB, Verdict::mixed);
    sim.spawn(104, 250 * MiB, Verdict::cow);
    sim.spawn(105, 120 * MiB, Verdict::leak);
    sim.spawn(106, 110 * MiB, Verdict::mixed);
    sim.spawn(107, 350 * MiB, Verdict::unknown);
    sim.spawn(108, 90 * MiB, Verdict::leak);  // under the limit
    sim.spawn(109, kLimit, Verdict::leak);    // at the limit: not over it

    const auto actions = sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{102, 105, 103, 106, 107, 101, 104}));
    ASSERT_EQ(actions.recycle.size(), 7u);
    for (const auto& action : actions.recycle) {
        EXPECT_GT(action.metric_bytes, action.limit_bytes) << action.pid;
        EXPECT_EQ(action.limit_bytes, kLimit) << action.pid;
        EXPECT_EQ(action.signal, SIGTERM) << action.pid;
        EXPECT_FALSE(action.reason.empty());
        const ChildView* child = sim.find(action.pid);
        ASSERT_NE(child, nullptr);
        EXPECT_EQ(action.start_ticks, child->start_ticks);
        EXPECT_EQ(action.metric_bytes, child->metric_bytes);
        EXPECT_EQ(action.verdict, child->verdict);
    }
    EXPECT_EQ(sim.policy.in_flight(), 7u);
}

TEST(ReapPolicyOrder, OneAtATimeInTheSameOrderAndNothingUnderTheLimit) {
    Sim sim(base_config());
    sim.spawn(201, 300 * MiB, Verdict::stable);
    sim.spawn(202, 150 * MiB, Verdict::leak);
    sim.spawn(203, 400 * MiB, Verdict::mixed);
    sim.spawn(204, kLimit + 1, Verdict::cow);
    sim.spawn(205, kLimit, Verdict::leak);
    sim.spawn(206, 50 * MiB, Verdict::mixed);
    sim.manage(2s, 1s);
    sim.tick();
    sim.run_until(120s);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{202, 203, 201, 204}));
    // Each next victim once the previous one exited (2 s) and was replaced (1 s later).
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 3000, 6000, 9000}));
    EXPECT_EQ(sim.policy.in_flight(), 0u);
    EXPECT_NE(sim.find(205), nullptr);
    EXPECT_NE(sim.find(206), nullptr);
}

// ---- stagger and replacement ------------------------------------------------------------

TEST(ReapPolicyStagger, SignalsAreAtLeastStaggerApart) {
    auto config = base_config();
    config.stagger = 10s;
    config.max_concurrent = 3;
    Sim sim(config);
    for (pid_t pid = 301; pid <= 305; ++pid) {
        sim.spawn(pid, (200 + static_cast<std::uint64_t>(pid)) * MiB);
    }
    sim.manage(1s, 1s);
    sim.tick();
    sim.run_until(100s, 500ms);
    ASSERT_EQ(sim.recycled.size(), 5u);
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 10000, 20000, 30000, 40000}));
    for (std::size_t i = 1; i < sim.recycled.size(); ++i) {
        EXPECT_GE(sim.recycled[i].at_ms - sim.recycled[i - 1].at_ms, 10000) << i;
    }
}

TEST(ReapPolicyStagger, StaggerHoldsEvenWhenSlotsAreFree) {
    auto config = base_config();
    config.stagger = 10s;
    config.max_concurrent = 5;
    Sim sim(config);
    sim.spawn(311, 300 * MiB);
    sim.spawn(312, 200 * MiB);
    sim.spawn(313, 150 * MiB);
    // No child ever exits: only the stagger spaces the signals; with ticks every 3 s the
    // next one goes at the first tick at least 10 s after the previous.
    sim.tick();
    sim.run_until(60s, 3s);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{311, 312, 313}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 12000, 24000}));
    EXPECT_EQ(sim.policy.in_flight(), 3u);
}

TEST(ReapPolicyStagger, NextVictimOnlyAfterExitAndReplacement) {
    Sim sim(base_config());
    sim.spawn(401, 300 * MiB);
    sim.spawn(402, 200 * MiB);
    sim.spawn(403, kSmall);
    sim.tick();
    ASSERT_EQ(sim.recycled_pids(), (std::vector<pid_t>{401}));
    EXPECT_EQ(sim.policy.in_flight(), 1u);

    sim.run_until(5s);  // 401 still alive: in flight
    EXPECT_EQ(sim.recycled.size(), 1u);

    sim.exit(401);
    sim.run_until(9s);  // exited, no replacement yet
    EXPECT_EQ(sim.recycled.size(), 1u);
    EXPECT_EQ(sim.notice_times("exited", 401), (std::vector<std::int64_t>{6000}));
    EXPECT_EQ(sim.count("replaced", 401), 0u);
    EXPECT_EQ(sim.policy.in_flight(), 1u);

    sim.now += 1s;
    sim.spawn(404, kSmall);  // the replacement
    sim.tick();
    EXPECT_EQ(sim.notice_times("replaced", 401), (std::vector<std::int64_t>{10000}));
    ASSERT_EQ(sim.recycled.size(), 2u);
    EXPECT_EQ(sim.recycled[1].pid, 402);
    EXPECT_EQ(sim.recycled[1].at_ms, 10000);
    EXPECT_EQ(sim.count("exited", 401), 1u);
}

TEST(ReapPolicyStagger, ExitAndReplacementSeenInOneTick) {
    Sim sim(base_config());
    sim.spawn(411, 300 * MiB);
    sim.spawn(412, 200 * MiB);
    sim.tick();
    sim.now += 2s;
    sim.exit(411);
    sim.spawn(413, kSmall);
    sim.tick();
    EXPECT_EQ(sim.count("exited", 411), 1u);
    EXPECT_EQ(sim.count("replaced", 411), 1u);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{411, 412}));
}

TEST(ReapPolicyStagger, ReplaceTimeoutReleasesTheSlot) {
    auto config = base_config();
    config.replace_timeout = 30s;
    Sim sim(config);
    sim.spawn(421, 300 * MiB);
    sim.spawn(422, 200 * MiB);
    sim.spawn(423, kSmall);
    sim.tick();
    sim.run_until(5s);
    sim.exit(421);
    sim.run_until(35s);  // exited at 6 s: the timeout runs until 36 s
    EXPECT_EQ(sim.recycled.size(), 1u);
    EXPECT_EQ(sim.count("replace-timeout"), 0u);
    EXPECT_EQ(sim.policy.in_flight(), 1u);

    sim.run_until(36s);
    EXPECT_EQ(sim.notice_times("replace-timeout", 421), (std::vector<std::int64_t>{36000}));
    EXPECT_EQ(sim.count("replaced", 421), 0u);
    ASSERT_EQ(sim.recycled.size(), 2u);
    EXPECT_EQ(sim.recycled[1].pid, 422);
    EXPECT_EQ(sim.recycled[1].at_ms, 36000);

    sim.run_until(120s);
    EXPECT_EQ(sim.count("replace-timeout", 421), 1u);
}

TEST(ReapPolicyStagger, NewcomerCountsAsReplacedWithFewerChildrenThanBefore) {
    Sim sim(base_config());
    sim.spawn(441, 300 * MiB);
    sim.spawn(442, 200 * MiB);
    sim.spawn(443, kSmall);
    sim.spawn(444, kSmall);
    sim.tick();  // signalled with 4 alive
    sim.now += 1s;
    sim.exit(443);  // died on its own, the manager does not replace it
    sim.tick();
    sim.now += 1s;
    sim.exit(441);
    sim.spawn(445, kSmall);  // 441's replacement: 3 alive, fewer than 4
    sim.tick();
    EXPECT_EQ(sim.count("replaced", 441), 1u);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{441, 442}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 2000}));
}

TEST(ReapPolicyStagger, AsManyChildrenAsBeforeCountsAsReplaced) {
    Sim sim(base_config());
    sim.spawn(431, 300 * MiB);
    sim.spawn(432, 200 * MiB);
    sim.spawn(433, kSmall);
    sim.tick();
    sim.now += 1s;
    sim.exit(431);
    // A child the policy had not seen before, but first seen (by the Reaper) at the signal
    // itself, not after it: only the head count says it is a replacement.
    sim.spawn(434, kSmall).first_seen = sim.start;
    sim.tick();
    EXPECT_EQ(sim.count("replaced", 431), 1u);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{431, 432}));
}

// ---- max_concurrent ---------------------------------------------------------------------

TEST(ReapPolicyConcurrency, AtMostMaxConcurrentInFlight) {
    auto config = base_config();
    config.max_concurrent = 2;
    Sim sim(config);
    sim.spawn(501, 600 * MiB);
    sim.spawn(502, 500 * MiB);
    sim.spawn(503, 400 * MiB);
    sim.spawn(504, 300 * MiB);
    sim.spawn(505, kSmall);
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{501, 502}));
    EXPECT_EQ(sim.policy.in_flight(), 2u);

    sim.run_until(5s);
    EXPECT_EQ(sim.recycled.size(), 2u);

    sim.now += 1s;
    sim.exit(501);
    sim.tick();
    EXPECT_EQ(sim.recycled.size(), 2u);  // 501 exited but is not replaced yet

    sim.now += 1s;
    sim.spawn(506, kSmall);
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{501, 502, 503}));
    EXPECT_EQ(sim.policy.in_flight(), 2u);

    sim.run_until(30s);
    EXPECT_EQ(sim.recycled.size(), 3u);
}

TEST(ReapPolicyConcurrency, LongRunNeverMoreThanTwoInFlight) {
    auto config = base_config();
    config.max_concurrent = 2;
    Sim sim(config);
    for (pid_t pid = 511; pid <= 519; ++pid) {
        sim.spawn(pid, (100 + 10 * static_cast<std::uint64_t>(pid - 510)) * MiB);
    }
    sim.spawn(520, kSmall);
    sim.manage(3s, 2s);
    std::size_t most = 0;
    sim.tick();
    most = std::max(most, sim.policy.in_flight());
    for (int i = 0; i < 200; ++i) {
        sim.now += 500ms;
        sim.tick();
        most = std::max(most, sim.policy.in_flight());
        // Signalled children whose replacement has not yet shown: never more than 2.
        const auto signalled = sim.recycled.size();
        const auto replaced = sim.count("replaced") + sim.count("replace-timeout");
        ASSERT_LE(signalled - replaced, 2u) << "at " << sim.elapsed_ms() << " ms";
    }
    EXPECT_EQ(most, 2u);
    EXPECT_EQ(sim.recycled.size(), 9u);
    EXPECT_EQ(sim.recycled_pids(),
              (std::vector<pid_t>{519, 518, 517, 516, 515, 514, 513, 512, 511}));
    // Pairs go together, each pair after the previous one exited (3 s) and was replaced (2 s).
    EXPECT_EQ(sim.recycled_times(),
              (std::vector<std::int64_t>{0, 0, 5000, 5000, 10000, 10000, 15000, 15000, 20000}));
}

// ---- min_children -----------------------------------------------------------------------

TEST(ReapPolicyMinChildren, HeldWhenTooFewWouldRemainNoticedOnce) {
    auto config = base_config();
    config.min_children = 3;
    Sim sim(config);
    sim.spawn(601, 300 * MiB);
    sim.spawn(602, kSmall);
    sim.spawn(603, kSmall);
    sim.tick();
    sim.run_until(20s);
    EXPECT_TRUE(sim.recycled.empty());
    EXPECT_EQ(sim.notice_times("held", 601), (std::vector<std::int64_t>{0}));
    EXPECT_EQ(sim.count("held"), 1u);

    sim.now += 1s;
    sim.spawn(604, kSmall);  // now 3 remain after the signal
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{601}));
    EXPECT_EQ(sim.count("held"), 1u);
}

TEST(ReapPolicyMinChildren, SignalsInOneTickCountTowardTheFloor) {
    auto config = base_config();
    config.min_children = 2;
    config.max_concurrent = 5;
    Sim sim(config);
    sim.spawn(611, 300 * MiB);
    sim.spawn(612, 250 * MiB);
    sim.spawn(613, 200 * MiB);
    sim.spawn(614, kSmall);
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{611, 612}));  // 2 remain
    EXPECT_EQ(sim.notice_times("held", 613), (std::vector<std::int64_t>{0}));
    sim.run_until(10s);
    EXPECT_EQ(sim.recycled.size(), 2u);
    EXPECT_EQ(sim.count("held"), 1u);
}

TEST(ReapPolicyMinChildren, InFlightChildrenCountAsGone) {
    auto config = base_config();
    config.min_children = 2;
    config.max_concurrent = 5;
    config.stagger = 1s;
    Sim sim(config);
    sim.spawn(621, 300 * MiB);
    sim.spawn(622, 250 * MiB);
    sim.spawn(623, 200 * MiB);
    sim.spawn(624, kSmall);
    sim.tick();
    sim.run_until(30s);
    // 621 at 0 s and 622 at 1 s (both still alive, in flight): 623 would leave 1.
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{621, 622}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 1000}));
    EXPECT_EQ(sim.notice_times("held", 623), (std::vector<std::int64_t>{2000}));
    EXPECT_EQ(sim.count("held"), 1u);

    // 621 exits and is replaced: 4 alive, 1 going: 623 may go.
    sim.now += 1s;
    sim.exit(621);
    sim.spawn(625, kSmall);
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{621, 622, 623}));
    EXPECT_EQ(sim.count("held"), 1u);
}

// ---- jitter -----------------------------------------------------------------------------

TEST(ReapPolicyJitter, LimitWithinRangeDeterministicAndSpread) {
    auto config = base_config();
    config.jitter_percent = 10;
    const ReapPolicy policy(config);
    const ReapPolicy same(config);
    const auto low = static_cast<std::uint64_t>(static_cast<double>(kLimit) * 0.9);
    std::set<std::uint64_t> distinct;
    std::uint64_t lowest = kLimit;
    std::uint64_t highest = 0;
    for (pid_t pid = 1000; pid < 1500; ++pid) {
        const std::uint64_t ticks = 77000 + static_cast<std::uint64_t>(pid) * 13;
        const auto limit = policy.limit_for(pid, ticks);
        EXPECT_GE(limit, low) << pid;
        EXPECT_LE(limit, kLimit) << pid;
        EXPECT_EQ(limit, policy.limit_for(pid, ticks)) << pid;
        EXPECT_EQ(limit, same.limit_for(pid, ticks)) << pid;
        distinct.insert(limit);
        lowest = std::min(lowest, limit);
        highest = std::max(highest, limit);
    }
    EXPECT_GT(distinct.size(), 490u);  // differs across children
    // Spread over the whole band, not bunched at one end.
    EXPECT_LT(lowest, low + kLimit / 100);
    EXPECT_GT(highest, kLimit - kLimit / 100);

    // The start time is part of the identity: a reused pid gets another fraction.
    std::set<std::uint64_t> by_start;
    for (std::uint64_t ticks = 1; ticks <= 50; ++ticks) {
        by_start.insert(policy.limit_for(4242, ticks));
    }
    EXPECT_GT(by_start.size(), 45u);
}

TEST(ReapPolicyJitter, ZeroJitterIsTheLimit) {
    const ReapPolicy policy(base_config());
    for (pid_t pid = 1; pid < 300; ++pid) {
        EXPECT_EQ(policy.limit_for(pid, static_cast<std::uint64_t>(pid) * 31), kLimit);
    }
}

TEST(ReapPolicyJitter, ChildBetweenJitteredLimitAndLimitOnlyIfItsOwnLimitIsLower) {
    auto config = base_config();
    config.jitter_percent = 20;
    config.max_concurrent = 10;
    const ReapPolicy probe(config);
    // The pids with the lowest and the highest limits among a few.
    pid_t low_pid = 0;
    pid_t high_pid = 0;
    for (pid_t pid = 700; pid < 760; ++pid) {
        const auto limit = probe.limit_for(pid, 1234);
        if (low_pid == 0 || limit < probe.limit_for(low_pid, 1234)) {
            low_pid = pid;
        }
        if (high_pid == 0 || limit > probe.limit_for(high_pid, 1234)) {
            high_pid = pid;
        }
    }
    const auto low_limit = probe.limit_for(low_pid, 1234);
    const auto high_limit = probe.limit_for(high_pid, 1234);
    ASSERT_LT(low_limit + 2 * MiB, high_limit);
    ASSERT_LT(high_limit, kLimit);
    const std::uint64_t metric = low_limit + (high_limit - low_limit) / 2;  // under --limit

    Sim sim(config);
    sim.spawn(low_pid, metric, Verdict::stable, 1234);
    sim.spawn(high_pid, metric, Verdict::leak, 1234);
    const auto actions = sim.tick();
    ASSERT_EQ(actions.recycle.size(), 1u);
    EXPECT_EQ(actions.recycle[0].pid, low_pid);
    EXPECT_EQ(actions.recycle[0].limit_bytes, low_limit);
    sim.run_until(60s);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{low_pid}));
}

// ---- grace and escalation ---------------------------------------------------------------

TEST(ReapPolicyGrace, WithoutEscalateOneGraceExpiredNotice) {
    auto config = base_config();
    config.signals = {SIGHUP, SIGTERM, SIGKILL};
    config.grace = 60s;
    Sim sim(config);
    sim.spawn(801, 300 * MiB);
    sim.spawn(802, 200 * MiB);
    sim.tick();
    ASSERT_EQ(sim.recycled.size(), 1u);
    EXPECT_EQ(sim.recycled[0].signal, SIGHUP);
    sim.run_until(59s);
    EXPECT_EQ(sim.count("grace-expired"), 0u);
    sim.run_until(60s);
    sim.run_until(400s, 5s);
    EXPECT_EQ(sim.notice_times("grace-expired", 801), (std::vector<std::int64_t>{60000}));
    EXPECT_EQ(sim.count("grace-expired"), 1u);
    EXPECT_TRUE(sim.escalated.empty());
    EXPECT_EQ(sim.recycled.size(), 1u);  // still in flight: 802 waits
    EXPECT_EQ(sim.policy.in_flight(), 1u);
}

TEST(ReapPolicyGrace, EscalatesThroughTheSequenceThenOneGraceExpired) {
    auto config = base_config();
    config.signals = {SIGHUP, SIGTERM, SIGKILL};
    config.grace = 30s;
    config.escalate = true;
    Sim sim(config);
    sim.spawn(811, 300 * MiB);
    sim.tick();
    ASSERT_EQ(sim.recycled.size(), 1u);
    EXPECT_EQ(sim.recycled[0].signal, SIGHUP);
    sim.run_until(300s);
    ASSERT_EQ(sim.escalated.size(), 2u);
    EXPECT_EQ(sim.escalated[0].pid, 811);
    EXPECT_EQ(sim.escalated[0].signal, SIGTERM);
    EXPECT_EQ(sim.escalated[0].at_ms, 30000);
    EXPECT_EQ(sim.escalated[1].pid, 811);
    EXPECT_EQ(sim.escalated[1].signal, SIGKILL);
    EXPECT_EQ(sim.escalated[1].at_ms, 60000);
    EXPECT_EQ(sim.escalated[0].start_ticks, sim.recycled[0].start_ticks);
    EXPECT_EQ(sim.notice_times("grace-expired", 811), (std::vector<std::int64_t>{90000}));
}

TEST(ReapPolicyGrace, ExitStopsTheEscalation) {
    auto config = base_config();
    config.signals = {SIGHUP, SIGTERM, SIGKILL};
    config.grace = 30s;
    config.escalate = true;
    Sim sim(config);
    sim.spawn(821, 300 * MiB);
    sim.spawn(822, kSmall);
    sim.tick();
    sim.run_until(40s);
    ASSERT_EQ(sim.escalated.size(), 1u);
    sim.exit(821);
    sim.run_until(300s);
    EXPECT_EQ(sim.escalated.size(), 1u);
    EXPECT_EQ(sim.count("grace-expired"), 0u);
    EXPECT_EQ(sim.count("exited", 821), 1u);
}

// ---- refused ----------------------------------------------------------------------------

TEST(ReapPolicyRefused, NotProposedAgainBeforeRetryAfter) {
    auto config = base_config();
    config.retry_after = 30s;
    Sim sim(config);
    sim.spawn(901, 300 * MiB);
    sim.spawn(902, kSmall);
    sim.refuse.insert(901);
    sim.tick();
    EXPECT_EQ(sim.refused_log, (std::vector<pid_t>{901}));
    sim.run_until(29s, 500ms);
    EXPECT_EQ(sim.refused_log.size(), 1u);

    sim.refuse.clear();
    sim.run_until(30s, 500ms);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{901}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{30000}));
}

TEST(ReapPolicyRefused, OtherCandidatesGoMeanwhileAndTheRefusalIsNoSignal) {
    auto config = base_config();
    config.retry_after = 30s;
    config.stagger = 10s;
    config.max_concurrent = 2;
    Sim sim(config);
    sim.spawn(911, 300 * MiB);
    sim.spawn(912, 200 * MiB);
    sim.refuse.insert(911);
    sim.tick();
    sim.refuse.clear();
    sim.run_until(60s);
    // 912 right at the next tick (a refusal starts no stagger), 911 after retry_after.
    EXPECT_EQ(sim.refused_log, (std::vector<pid_t>{911}));
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{912, 911}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{1000, 30000}));
}

// ---- dry run ----------------------------------------------------------------------------

TEST(ReapPolicyDryRun, SignalledChildIsNotInFlightNorProposedAgain) {
    auto config = base_config();
    config.dry_run = true;
    config.stagger = 10s;
    Sim sim(config);
    sim.spawn(1001, 300 * MiB);
    sim.spawn(1002, 200 * MiB);
    sim.spawn(1003, 150 * MiB);
    sim.spawn(1004, kSmall);
    sim.tick();
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1001}));
    EXPECT_EQ(sim.policy.in_flight(), 0u);
    sim.run_until(200s);
    // Not waited for (max_concurrent 1 does not hold the others back), stagger respected,
    // each proposed once while it lives.
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1001, 1002, 1003}));
    EXPECT_EQ(sim.recycled_times(), (std::vector<std::int64_t>{0, 10000, 20000}));
    EXPECT_EQ(sim.policy.in_flight(), 0u);
    EXPECT_TRUE(sim.escalated.empty());
    EXPECT_EQ(sim.count("grace-expired"), 0u);
}

TEST(ReapPolicyDryRun, ReusedPidWithAnotherStartIsProposedAgain) {
    auto config = base_config();
    config.dry_run = true;
    config.stagger = 10s;
    Sim sim(config);
    sim.spawn(1011, 300 * MiB, Verdict::stable, 111);
    sim.spawn(1012, kSmall);
    sim.tick();
    sim.run_until(30s);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1011}));

    sim.now += 1s;
    sim.exit(1011);
    sim.spawn(1011, 300 * MiB, Verdict::stable, 222);
    sim.tick();
    ASSERT_EQ(sim.recycled.size(), 2u);
    EXPECT_EQ(sim.recycled[1].pid, 1011);
    EXPECT_EQ(sim.recycled[1].start_ticks, 222u);
    EXPECT_EQ(sim.recycled[1].at_ms, 31000);
    sim.run_until(120s);
    EXPECT_EQ(sim.recycled.size(), 2u);
}

// ---- pid reuse --------------------------------------------------------------------------

TEST(ReapPolicyPidReuse, InFlightPidWithAnotherStartCountsAsExited) {
    Sim sim(base_config());
    sim.spawn(1101, 300 * MiB, Verdict::leak, 1000);
    sim.spawn(1102, kSmall);
    sim.tick();
    sim.run_until(5s);
    EXPECT_EQ(sim.policy.in_flight(), 1u);
    EXPECT_EQ(sim.count("exited"), 0u);

    sim.now += 1s;
    sim.exit(1101);
    sim.spawn(1101, 300 * MiB, Verdict::leak, 2000);  // another child, same pid
    sim.tick();
    EXPECT_EQ(sim.count("exited", 1101), 1u);
    EXPECT_EQ(sim.count("replaced", 1101), 1u);
    // The newcomer is a child of its own, over the limit: proposed with its identity.
    ASSERT_EQ(sim.recycled.size(), 2u);
    EXPECT_EQ(sim.recycled[1].pid, 1101);
    EXPECT_EQ(sim.recycled[1].start_ticks, 2000u);
    EXPECT_EQ(sim.policy.in_flight(), 1u);
}

// ---- known bug: one replacement releases several recycles --------------------------------

// With max_concurrent 2, 511 and 512 are signalled together. 511's replacement appears,
// releasing 511's slot (513 goes). Then 512 exits while no replacement for it exists yet:
// 512 must stay in flight. The policy counts 511's replacement (first seen after 512's
// signal too) as 512's replacement, frees the slot and signals 514, so three children are
// down at once (512 gone, 513 and 514 going) with max_concurrent 2.
TEST(ReapPolicyConcurrency, OneReplacementDoesNotReleaseTwoRecycles) {
    auto config = base_config();
    config.max_concurrent = 2;
    Sim sim(config);
    sim.spawn(1201, 600 * MiB);
    sim.spawn(1202, 500 * MiB);
    sim.spawn(1203, 400 * MiB);
    sim.spawn(1204, 300 * MiB);
    sim.spawn(1205, kSmall);
    sim.spawn(1206, kSmall);
    sim.tick();
    ASSERT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1201, 1202}));

    sim.now += 1s;
    sim.exit(1201);
    sim.spawn(1207, kSmall);  // 1201's replacement
    sim.tick();
    ASSERT_EQ(sim.count("replaced", 1201), 1u);
    ASSERT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1201, 1202, 1203}));

    sim.now += 1s;
    sim.exit(1202);  // no replacement for it yet: 5 alive, it was signalled with 6
    sim.tick();
    EXPECT_EQ(sim.count("exited", 1202), 1u);
    EXPECT_EQ(sim.count("replaced", 1202), 0u) << "1207 already replaced 1201";
    EXPECT_EQ(sim.policy.in_flight(), 2u);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1201, 1202, 1203}))
        << "three children down at once with max_concurrent 2";

    sim.now += 1s;
    sim.spawn(1208, kSmall);  // 1202's replacement
    sim.tick();
    EXPECT_EQ(sim.count("replaced", 1202), 1u);
    EXPECT_EQ(sim.recycled_pids(), (std::vector<pid_t>{1201, 1202, 1203, 1204}));
}

}  // namespace
}  // namespace kidreaper

namespace kidreaper {
namespace {

TEST(ReapPolicyRefusal, AShortHoldProposesTheChildAgainSoon) {
    ReapConfig config;
    config.limit_bytes = 100;
    config.stagger = std::chrono::seconds(0);
    ReapPolicy policy(config);
    const TimePoint start{};
    const std::vector<ChildView> alive = {{41, 7, 500, Verdict::leak, start}};
    ASSERT_EQ(policy.tick(start, alive).recycle.size(), 1u);
    policy.refused(41, start, std::chrono::seconds(1));
    EXPECT_TRUE(policy.tick(start + std::chrono::milliseconds(999), alive).recycle.empty());
    EXPECT_EQ(policy.tick(start + std::chrono::seconds(1), alive).recycle.size(), 1u);
    policy.refused(41, start + std::chrono::seconds(1));  // the default: retry_after (30 s)
    EXPECT_TRUE(policy.tick(start + std::chrono::seconds(30), alive).recycle.empty());
    EXPECT_EQ(policy.tick(start + std::chrono::seconds(31), alive).recycle.size(), 1u);
}

}  // namespace
}  // namespace kidreaper
