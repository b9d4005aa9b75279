#include "policy/reap_policy.h"

#include <algorithm>

#include "common/units.h"

namespace kidreaper {

namespace {

// splitmix64: a well-mixed hash, so jitter fractions spread evenly over children.
std::uint64_t mix(std::uint64_t value) {
    value += 0x9e3779b97f4a7c15ULL;
    value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
    value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
    return value ^ (value >> 31);
}

int leak_rank(Verdict verdict) {
    switch (verdict) {
        case Verdict::leak:
            return 0;
        case Verdict::mixed:
            return 1;
        default:
            return 2;
    }
}

const ChildView* find_child(const std::vector<ChildView>& alive, pid_t pid,
                            std::uint64_t start_ticks) {
    for (const auto& child : alive) {
        if (child.pid == pid && child.start_ticks == start_ticks) {
            return &child;
        }
    }
    return nullptr;
}

}  // namespace

ReapPolicy::ReapPolicy(const ReapConfig& config) : config_(config) {
    if (config_.signals.empty()) {
        config_.signals.push_back(15);  // SIGTERM
    }
}

std::uint64_t ReapPolicy::limit_for(pid_t pid, std::uint64_t start_ticks) const {
    if (config_.jitter_percent <= 0) {
        return config_.limit_bytes;
    }
    const std::uint64_t hash = mix(mix(static_cast<std::uint64_t>(pid)) ^ start_ticks);
    const double fraction = static_cast<double>(hash >> 11) / static_cast<double>(1ULL << 53);
    const double lowered = static_cast<double>(config_.limit_bytes) *
                           (1.0 - std::min(config_.jitter_percent, 100.0) / 100.0 * fraction);
    return static_cast<std::uint64_t>(lowered);
}

void ReapPolicy::follow_in_flight(TimePoint now, const std::vector<ChildView>& alive,
                                  PolicyActions& actions) {
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        const pid_t pid = it->first;
        Recycle& recycle = it->second;
        if (!recycle.exited && find_child(alive, pid, recycle.start_ticks) == nullptr) {
            recycle.exited = true;
            recycle.exited_at = now;
            actions.notices.push_back(
                {"exited", pid,
                 "after " + format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(
                                now - recycle.signalled_at))});
        }
        if (recycle.exited) {
            // A newcomer replaces one recycle only, so two exits need two replacements.
            const auto newcomer = std::find_if(alive.begin(), alive.end(), [&](const auto& child) {
                return child.first_seen > recycle.signalled_at &&
                       !credited_.count({child.pid, child.start_ticks});
            });
            if (newcomer != alive.end()) {
                credited_.insert({newcomer->pid, newcomer->start_ticks});
            }
            if (newcomer != alive.end() || alive.size() >= recycle.alive_before) {
                actions.notices.push_back({"replaced", pid, "a replacement is up"});
                it = in_flight_.erase(it);
                continue;
            }
            if (now - recycle.exited_at >= config_.replace_timeout) {
                actions.notices.push_back(
                    {"replace-timeout", pid, "no replacement appeared; going on"});
                it = in_flight_.erase(it);
                continue;
            }
        } else if (now - recycle.grace_from >= config_.grace) {
            if (config_.escalate && recycle.signal_index + 1 < config_.signals.size()) {
                ++recycle.signal_index;
                recycle.grace_from = now;
                actions.escalate.push_back({pid, recycle.start_ticks,
                                            config_.signals[recycle.signal_index],
                                            "still alive after the grace period"});
            } else if (!recycle.grace_reported) {
                recycle.grace_reported = true;
                actions.notices.push_back({"grace-expired", pid,
                                           config_.escalate
                                               ? "still alive; no further signal in the sequence"
                                               : "still alive; not escalating (see --escalate)"});
            }
        }
        ++it;
    }
}

PolicyActions ReapPolicy::tick(TimePoint now, const std::vector<ChildView>& alive) {
    PolicyActions actions;
    follow_in_flight(now, alive, actions);

    std::erase_if(refused_until_, [now](const auto& entry) { return entry.second <= now; });
    std::erase_if(credited_, [&alive](const auto& entry) {
        return find_child(alive, entry.first, entry.second) == nullptr;
    });
    std::erase_if(dry_run_done_, [&alive](const auto& entry) {
        return find_child(alive, entry.first, entry.second) == nullptr;
    });

    std::erase_if(held_, [&alive](pid_t pid) {
        return std::none_of(alive.begin(), alive.end(),
                            [pid](const auto& child) { return child.pid == pid; });
    });

    std::vector<const ChildView*> candidates;
    for (const auto& child : alive) {
        if (child.metric_bytes <= limit_for(child.pid, child.start_ticks) ||
            in_flight_.count(child.pid) || refused_until_.count(child.pid) ||
            dry_run_done_.count({child.pid, child.start_ticks})) {
            continue;
        }
        candidates.push_back(&child);
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto* a, const auto* b) {
        if (leak_rank(a->verdict) != leak_rank(b->verdict)) {
            return leak_rank(a->verdict) < leak_rank(b->verdict);
        }
        return a->metric_bytes > b->metric_bytes;
    });

    std::size_t still_alive = alive.size();
    for (const auto& [pid, recycle] : in_flight_) {
        if (!recycle.exited && still_alive > 0) {
            --still_alive;  // going away already
        }
    }
    bool floor_reached = false;
    for (const ChildView* child : candidates) {
        if (in_flight_.size() + actions.recycle.size() >= config_.max_concurrent) {
            break;
        }
        if (last_signal_ && now - *last_signal_ < config_.stagger) {
            break;
        }
        if (still_alive < config_.min_children + 1) {
            floor_reached = true;
            if (!held_.insert(child->pid).second) {
                break;
            }
            actions.notices.push_back({"held", child->pid,
                                       "over its limit, but only " + std::to_string(still_alive) +
                                           " children alive and --min-children is " +
                                           std::to_string(config_.min_children)});
            break;
        }
        held_.erase(child->pid);
        RecycleAction action;
        action.pid = child->pid;
        action.start_ticks = child->start_ticks;
        action.signal = config_.signals.front();
        action.metric_bytes = child->metric_bytes;
        action.limit_bytes = limit_for(child->pid, child->start_ticks);
        action.verdict = child->verdict;
        action.reason = format_size(child->metric_bytes) + " over the limit of " +
                        format_size(action.limit_bytes);
        actions.recycle.push_back(action);
        --still_alive;
        if (config_.stagger.count() > 0) {
            break;  // the stagger holds the next one back anyway
        }
    }
    actions.waiting = floor_reached ? 0 : candidates.size() - actions.recycle.size();
    return actions;
}

void ReapPolicy::signalled(const RecycleAction& action, TimePoint now, std::size_t alive_count) {
    last_signal_ = now;
    if (config_.dry_run) {
        dry_run_done_.insert({action.pid, action.start_ticks});
        return;
    }
    Recycle recycle;
    recycle.start_ticks = action.start_ticks;
    recycle.signalled_at = now;
    recycle.grace_from = now;
    recycle.alive_before = alive_count;
    in_flight_[action.pid] = recycle;
}

void ReapPolicy::refused(pid_t pid, TimePoint now, std::optional<Duration> hold) {
    refused_until_[pid] = now + hold.value_or(config_.retry_after);
}

}  // namespace kidreaper
