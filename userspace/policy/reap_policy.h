// The reap policy: a pure state machine that decides which children to recycle and
// when, given the children seen each tick and the time. It performs no I/O: the Reaper
// (reaper.h) confirms each decision against /proc, signals, and reports back.
//
// Rules:
//  - A child is a candidate when its metric is over its limit. Its limit is --limit
//    lowered by up to --jitter percent, by a fraction fixed per child (hash of pid and
//    start time), so that children born together do not all go together.
//  - Candidates are ordered leaking children first (leak, then mixed), then largest.
//  - At most `max_concurrent` recycles are in flight. A recycle is in flight from its
//    signal until the child has exited and a replacement has appeared (a child first
//    seen after the signal and not already counted for another recycle, or as many
//    children as before), or `replace_timeout` passed. A child that outlives its grace
//    without escalation stays in flight: the server did not act on its signal.
//  - At least `stagger` between two signals to different children.
//  - Never signal when fewer than `min_children` children would remain alive (reported
//    once per child as a "held" notice until it is no longer held).
//  - A child still alive `grace` after its signal is reported; with `escalate`, the next
//    signal of the sequence is sent and the grace restarts.
//  - A refused candidate (not over the limit on ground truth, busy, identity changed)
//    is not proposed again for `retry_after`.
//  - Dry run: the same decisions, but a "signalled" child is not waited for; it is not
//    proposed again while it lives.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/classifier.h"

namespace kidreaper {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

struct ReapConfig {
    std::uint64_t limit_bytes = 0;
    std::vector<int> signals;  // the graceful signal first, then escalation steps
    Duration stagger = std::chrono::seconds(10);
    unsigned max_concurrent = 1;
    unsigned min_children = 0;
    Duration grace = std::chrono::seconds(60);
    bool escalate = false;
    double jitter_percent = 0;
    Duration replace_timeout = std::chrono::seconds(60);
    Duration retry_after = std::chrono::seconds(30);
    bool dry_run = false;
};

// One live child as the policy sees it at a tick.
struct ChildView {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;   // identity: pid + start time
    std::uint64_t metric_bytes = 0;  // the chosen metric's (cheap) value
    Verdict verdict = Verdict::unknown;
    TimePoint first_seen{};
};

struct RecycleAction {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    int signal = 0;
    std::uint64_t metric_bytes = 0;
    std::uint64_t limit_bytes = 0;  // this child's limit (jitter applied)
    Verdict verdict = Verdict::unknown;
    std::string reason;
};

struct EscalateAction {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    int signal = 0;
    std::string reason;
};

// Something worth a log line that needs no action.
struct PolicyNotice {
    std::string event;  // "exited", "replaced", "replace-timeout", "grace-expired", "held"
    pid_t pid = 0;
    std::string detail;
};

struct PolicyActions {
    std::size_t waiting = 0;  // candidates held back only by the stagger or the cap
    std::vector<RecycleAction> recycle;
    std::vector<EscalateAction> escalate;
    std::vector<PolicyNotice> notices;
};

class ReapPolicy {
public:
    explicit ReapPolicy(const ReapConfig& config);

    // Decides, given every live child of the manager now.
    PolicyActions tick(TimePoint now, const std::vector<ChildView>& alive);
    // The Reaper sent (or, in a dry run, would have sent) the recycle signal.
    void signalled(const RecycleAction& action, TimePoint now, std::size_t alive_count);
    // The Reaper did not signal a proposed child (reason logged by the Reaper): it is not
    // proposed again for `retry_after` (or `hold`, when given).
    void refused(pid_t pid, TimePoint now, std::optional<Duration> hold = std::nullopt);
    // The limit for one child after jitter.
    std::uint64_t limit_for(pid_t pid, std::uint64_t start_ticks) const;
    std::size_t in_flight() const { return in_flight_.size(); }

private:
    struct Recycle {
        std::uint64_t start_ticks = 0;
        TimePoint signalled_at{};
        TimePoint grace_from{};
        std::size_t signal_index = 0;
        std::size_t alive_before = 0;
        bool exited = false;
        TimePoint exited_at{};
        bool grace_reported = false;
    };

    void follow_in_flight(TimePoint now, const std::vector<ChildView>& alive,
                          PolicyActions& actions);

    ReapConfig config_;
    std::map<pid_t, Recycle> in_flight_;
    std::optional<TimePoint> last_signal_;
    std::map<pid_t, TimePoint> refused_until_;
    std::set<std::pair<pid_t, std::uint64_t>> dry_run_done_;
    std::set<std::pair<pid_t, std::uint64_t>> credited_;  // newcomers counted as replacements
    std::set<pid_t> held_;  // reported as held by --min-children (reported once)
};

}  // namespace kidreaper
