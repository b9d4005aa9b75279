#include "watcher.h"

#include <unistd.h>

#include <algorithm>

#include "error.h"

namespace kidreaper {

Watcher::Watcher(Observer& observer, const ProcFs& proc, pid_t manager, std::size_t max_samples)
    : observer_(observer),
      proc_(proc),
      manager_(manager),
      started_ns_(Observer::now_ns()),
      max_samples_(max_samples) {
    if (const long ticks = sysconf(_SC_CLK_TCK); ticks > 0) {
        seconds_per_tick_ = 1.0 / static_cast<double>(ticks);
    }
    const auto stat = proc_.stat(manager_);
    if (!stat) {
        throw Error("no process " + std::to_string(manager_) + " (has the server stopped?)");
    }
    manager_start_ticks_ = stat->start_ticks;
    for (pid_t child : track_manager(observer_, proc_, manager_)) {
        if (auto reading = observer_.read_child(child)) {
            record_for(*reading, 0, false, true).present_at_start = true;
        }
    }
}

Watcher::~Watcher() {
    observer_.remove_manager(manager_);
    for (const auto& [pid, record] : children_) {
        observer_.forget_child(pid);
    }
}

double Watcher::elapsed_seconds() const {
    return static_cast<double>(Observer::now_ns() - started_ns_) / 1e9;
}

MemoryAccount Watcher::account(const ChildReading& reading) const {
    return account_memory(reading, observer_.cow_source());
}

bool Watcher::manager_alive() const {
    const auto stat = proc_.stat(manager_);
    return stat && stat->start_ticks == manager_start_ticks_ && stat->state != 'Z';
}

double Watcher::stat_cpu_seconds(const ProcStat& stat) const {
    return static_cast<double>(stat.utime_ticks + stat.stime_ticks) * seconds_per_tick_;
}

void Watcher::update_cpu(ChildRecord& record, double seconds) const {
    if (record.cpu_first_seconds < 0) {
        record.cpu_first_seconds = seconds;
    }
    record.cpu_seconds = std::max(record.cpu_seconds, seconds);
}

bool Watcher::still_our_child(ChildRecord& record) const {
    const auto stat = proc_.stat(record.pid);
    if (!stat || stat->ppid != manager_ || stat->start_ticks != record.start_ticks ||
        stat->state == 'Z') {
        return false;
    }
    update_cpu(record, stat_cpu_seconds(*stat));
    return true;
}

ChildRecord& Watcher::record_for(const ChildReading& reading, double now, bool read_stat,
                                 bool read_cpu) {
    auto [it, inserted] = children_.try_emplace(reading.pid);
    ChildRecord& record = it->second;
    if (inserted) {
        observer_.claim_slot(reading.pid);  // a forked child counts in the hash until now
        record.pid = reading.pid;
        record.first_seen = now;
        if (max_samples_ != 0) {
            record.samples = SampleHistory(max_samples_);
        }
        if (const auto stat = proc_.stat(reading.pid)) {
            record.comm = stat->comm;
            record.start_ticks = stat->start_ticks;
            update_cpu(record, stat_cpu_seconds(*stat));
        }
        record.smaps_first = proc_.smaps_rollup(reading.pid);
        record.smaps_last = record.smaps_first;
    }
    record.latest = reading;
    record.account = account(reading);
    if (inserted) {
        record.account_first = record.account;
        record.anchor_cow_bytes = record.account.cow_bytes();
        record.anchor_fresh_bytes = record.account.fresh_bytes;
        record.anchor_seconds = now;
    }
    if (!reading.exited()) {
        if (read_cpu) {
            if (const auto runtime = proc_.schedstat_runtime_ns(reading.pid)) {
                update_cpu(record, static_cast<double>(*runtime) / 1e9);
            } else {
                read_stat = true;  // no schedstat (CONFIG_SCHED_INFO off): stat's ticks
            }
        }
        if (read_stat && !inserted && !still_our_child(record)) {
            record.exited = true;
        }
    }
    record.last_seen = now;
    const double work =
        record.cpu_first_seconds < 0 ? 0 : record.cpu_seconds - record.cpu_first_seconds;
    GrowthSample sample;
    sample.seconds = now;
    sample.cow_bytes = record.account.cow_bytes();
    sample.anon_bytes = record.account.fresh_bytes;
    sample.work_seconds = work;
    record.samples.append(sample);
    return record;
}

void Watcher::poll() {
    const double now = elapsed_seconds();
    // The exit hook marks exits; /proc/PID/stat is read only once every 16 polls per
    // child, for what no hook sees (a child that exited between the /proc scan and its
    // registration) and for the CPU time of all its threads. Spread by pid, so each poll
    // reads about a sixteenth of the children. The CPU time (schedstat) is read every poll
    // for up to kCpuReadsPerPoll children, and spread the same way over more, which keeps
    // a poll of thousands of children cheap; the work axis then moves in steps.
    constexpr std::size_t kCheckEvery = 16;
    constexpr std::size_t kCpuReadsPerPoll = 32;
    const std::size_t cpu_every =
        std::max<std::size_t>(1, (children_.size() + kCpuReadsPerPoll - 1) / kCpuReadsPerPoll);
    const std::size_t poll_number = polls_++;
    for (const ChildReading& reading : observer_.read_children()) {
        if (reading.manager != manager_) {
            continue;
        }
        auto known = children_.find(reading.pid);
        if (known != children_.end() && known->second.exited) {
            continue;  // reported already; a pid reused within the window is not followed
        }
        const auto spread = static_cast<std::size_t>(reading.pid) + poll_number;
        ChildRecord& record =
            record_for(reading, now, spread % kCheckEvery == 0, spread % cpu_every == 0);
        if (reading.exited() || record.exited) {
            record.exited = true;
            observer_.forget_child(reading.pid);
        }
    }
}

std::optional<SmapsRollup> Watcher::refresh_child(pid_t pid) {
    auto it = children_.find(pid);
    if (it == children_.end() || it->second.exited) {
        return std::nullopt;
    }
    ChildRecord& record = it->second;
    auto smaps = proc_.smaps_rollup(pid);
    if (!smaps) {
        return std::nullopt;
    }
    record.smaps_last = smaps;
    if (auto reading = observer_.read_child(pid)) {
        record.latest = *reading;
    }
    record.account = account(record.latest);
    record.anchor_cow_bytes = record.account.cow_bytes();
    record.anchor_fresh_bytes = record.account.fresh_bytes;
    record.anchor_seconds = elapsed_seconds();
    return smaps;
}

void Watcher::prune_exited() {
    std::erase_if(children_, [](const auto& entry) { return entry.second.exited; });
}

void Watcher::refresh_ground_truth() {
    for (auto& [pid, record] : children_) {
        if (record.exited) {
            continue;
        }
        refresh_child(pid);
    }
}

}  // namespace kidreaper
