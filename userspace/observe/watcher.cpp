#include "observe/watcher.h"

#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "common/error.h"

namespace kidreaper {

Watcher::Watcher(Observer& observer, const ProcFs& proc, pid_t manager, std::size_t max_samples)
    : observer_(observer),
      proc_(proc),
      manager_(manager),
      started_ns_(Observer::now_ns()),
      max_samples_(max_samples) {
    if (const long ticks = sysconf(_SC_CLK_TCK); ticks > 0) {
        seconds_per_tick_ = 1.0 / static_cast<double>(ticks);
        ticks_per_second_ = ticks;
    }
    boottime_offset_ns_ = boottime_offset_ns(proc_);
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
    note_capacity();
}

Watcher::~Watcher() {
    observer_.remove_manager(manager_);
    // Every entry of this manager's children, the ones never polled and the exits too.
    observer_.forget_children_of(manager_);
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

std::vector<CapacityNotice> Watcher::take_capacity_notices() {
    return std::exchange(capacity_notices_, {});
}

void Watcher::note_capacity() {
    for (auto& notice : observer_.take_capacity_notices()) {
        capacity_notices_.push_back(std::move(notice));
    }
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

std::optional<std::uint64_t> Watcher::identity_ticks(std::uint64_t start_ns) const {
    if (start_ns == 0) {
        return std::nullopt;
    }
    const std::int64_t shown = static_cast<std::int64_t>(start_ns) + boottime_offset_ns_;
    if (shown < 0) {
        return std::nullopt;
    }
    return start_ticks_of_ns(static_cast<std::uint64_t>(shown), ticks_per_second_);
}

void Watcher::start_record(ChildRecord& record, const ChildReading& reading, double now) {
    record.pid = reading.pid;
    record.start_ns = reading.start_ns;
    record.first_seen = now;
    if (max_samples_ != 0) {
        record.samples = SampleHistory(max_samples_);
    }
    const auto identity = identity_ticks(reading.start_ns);
    if (identity) {
        record.start_ticks = *identity;
    }
    const auto stat = proc_.stat(reading.pid);
    if (stat && (!identity || stat->start_ticks == *identity)) {
        record.comm = stat->comm;
        record.start_ticks = stat->start_ticks;
        update_cpu(record, stat_cpu_seconds(*stat));
        record.smaps_first = proc_.smaps_rollup(reading.pid);
        record.smaps_last = record.smaps_first;
    } else if (stat && !reading.exited()) {
        record.exited = true;  // the pid is another process's already: this child has gone
    }
}

void Watcher::take_reading(ChildRecord& record, const ChildReading& reading, double now) {
    const bool first = record.samples.size() == 0;
    record.latest = reading;
    record.account = account(reading);
    if (first) {
        record.account_first = record.account;
        record.anchor_cow_bytes = record.account.cow_bytes();
        record.anchor_fresh_bytes = record.account.fresh_bytes;
        record.anchor_seconds = now;
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
}

ChildRecord& Watcher::record_for(const ChildReading& reading, double now, bool read_stat,
                                 bool read_cpu) {
    auto [it, inserted] = children_.try_emplace(reading.pid);
    ChildRecord& record = it->second;
    if (inserted) {
        observer_.claim_slot(reading.pid);  // a forked child counts in the hash until now
        start_record(record, reading, now);
    }
    if (!reading.exited() && !record.exited) {
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
    take_reading(record, reading, now);
    return record;
}

ChildRecord* Watcher::find_record(pid_t pid, std::uint64_t start_ns) {
    if (auto it = children_.find(pid); it != children_.end() && it->second.start_ns == start_ns) {
        return &it->second;
    }
    for (auto& record : displaced_) {
        if (record.pid == pid && record.start_ns == start_ns) {
            return &record;
        }
    }
    return nullptr;
}

void Watcher::displace(std::map<pid_t, ChildRecord>::iterator it) {
    it->second.exited = true;
    it->second.pid_reused = true;
    displaced_.push_back(std::move(it->second));
    children_.erase(it);
}

void Watcher::record_displaced_exit(const ChildReading& reading, double now) {
    ChildRecord* record = find_record(reading.pid, reading.start_ns);
    if (record == nullptr) {
        // Born and gone between two polls: recorded all the same, never lost silently.
        ChildRecord unseen;
        start_record(unseen, reading, now);
        unseen.exited = true;
        unseen.pid_reused = true;
        take_reading(unseen, reading, now);
        displaced_.push_back(std::move(unseen));
        return;
    }
    if (!record->latest.exited()) {
        // Its last reading; the faults a lost hash entry held since the last read are
        // not in it: the counts read last stand.
        ChildReading last = reading;
        if (!reading.faults_complete) {
            last.faults = record->latest.faults;
        }
        take_reading(*record, last, now);
    }
    record->exited = true;
    if (auto it = children_.find(reading.pid);
        it != children_.end() && it->second.start_ns == reading.start_ns) {
        displace(it);  // its pid is a newer child's now
    }
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
    // Displaced exits come first: an old child's record is settled before its pid's new
    // child is looked at.
    for (const ChildReading& reading : observer_.read_children()) {
        if (reading.manager != manager_) {
            continue;
        }
        if (reading.displaced) {
            record_displaced_exit(reading, now);
            observer_.consume_exit(reading);
            continue;
        }
        auto known = children_.find(reading.pid);
        if (known != children_.end() && known->second.start_ns != reading.start_ns) {
            // A new child on a known pid: the old one exited (its exit was not read: the
            // exits map was full, or it is still on its way).
            displace(known);
            known = children_.end();
        }
        if (known != children_.end() && known->second.exited) {
            observer_.forget_child(reading.pid, reading.start_ns);  // reported already
            continue;
        }
        if (known != children_.end()) {
            observer_.claim_slot(reading.pid);  // its slot may have come free
        }
        const auto spread = static_cast<std::size_t>(reading.pid) + poll_number;
        ChildRecord& record =
            record_for(reading, now, spread % kCheckEvery == 0, spread % cpu_every == 0);
        if (reading.exited() || record.exited) {
            record.exited = true;
            observer_.forget_child(reading.pid, reading.start_ns);
        }
    }
    note_capacity();
}

std::optional<SmapsRollup> Watcher::refresh_child(pid_t pid) {
    auto it = children_.find(pid);
    if (it == children_.end() || it->second.exited) {
        return std::nullopt;
    }
    ChildRecord& record = it->second;
    const auto stat = proc_.stat(pid);
    if (!stat || stat->start_ticks != record.start_ticks) {
        return std::nullopt;  // gone, or the pid is another process's
    }
    auto smaps = proc_.smaps_rollup(pid);
    if (!smaps) {
        return std::nullopt;
    }
    record.smaps_last = smaps;
    if (auto reading = observer_.read_child(pid); reading && reading->start_ns == record.start_ns) {
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
    displaced_.clear();
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
