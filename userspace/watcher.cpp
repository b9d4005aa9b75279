#include "watcher.h"

#include "error.h"

namespace kidreaper {

namespace {
constexpr std::uint64_t kPageBytes = 4096;
}

Watcher::Watcher(Observer& observer, const ProcFs& proc, pid_t manager, std::size_t max_samples)
    : observer_(observer),
      proc_(proc),
      manager_(manager),
      started_ns_(Observer::now_ns()),
      max_samples_(max_samples) {
    const auto stat = proc_.stat(manager_);
    if (!stat) {
        throw Error("no process " + std::to_string(manager_) + " (has the server stopped?)");
    }
    manager_start_ticks_ = stat->start_ticks;
    for (pid_t child : track_manager(observer_, proc_, manager_)) {
        if (auto reading = observer_.read_child(child)) {
            record_for(*reading, 0).present_at_start = true;
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

std::uint64_t Watcher::cow_bytes(const ChildReading& reading) const {
    const std::uint64_t copies =
        observer_.exact_cow() ? reading.faults.cow_copies : reading.faults.write_present();
    return copies * kPageBytes;
}

bool Watcher::manager_alive() const {
    const auto stat = proc_.stat(manager_);
    return stat && stat->start_ticks == manager_start_ticks_ && stat->state != 'Z';
}

bool Watcher::still_our_child(const ChildRecord& record) const {
    const auto stat = proc_.stat(record.pid);
    return stat && stat->ppid == manager_ && stat->start_ticks == record.start_ticks &&
           stat->state != 'Z';
}

ChildRecord& Watcher::record_for(const ChildReading& reading, double now) {
    auto [it, inserted] = children_.try_emplace(reading.pid);
    ChildRecord& record = it->second;
    if (inserted) {
        observer_.claim_slot(reading.pid);  // a forked child counts in the hash until now
        record.pid = reading.pid;
        record.first_seen = now;
        if (const auto stat = proc_.stat(reading.pid)) {
            record.comm = stat->comm;
            record.start_ticks = stat->start_ticks;
        }
        record.smaps_first = proc_.smaps_rollup(reading.pid);
        record.smaps_last = record.smaps_first;
        record.anchor_cow_bytes = cow_bytes(reading);
        record.anchor_anon_bytes = reading.mem_bytes[KR_MEM_ANON];
        record.anchor_seconds = now;
    }
    record.latest = reading;
    record.last_seen = now;
    record.samples.push_back({now, cow_bytes(reading), reading.mem_bytes[KR_MEM_ANON]});
    if (max_samples_ != 0 && record.samples.size() > max_samples_) {
        record.samples.erase(record.samples.begin(),
                             record.samples.end() - static_cast<std::ptrdiff_t>(max_samples_));
    }
    return record;
}

void Watcher::poll() {
    const double now = elapsed_seconds();
    // The exit hook marks exits; /proc is checked only once every 16 polls per child, for
    // what no hook sees (a child that exited between the /proc scan and its registration).
    // Spread by pid, so each poll checks about a sixteenth of the children.
    constexpr std::size_t kCheckEvery = 16;
    const std::size_t poll_number = polls_++;
    for (const ChildReading& reading : observer_.read_children()) {
        if (reading.manager != manager_) {
            continue;
        }
        auto known = children_.find(reading.pid);
        if (known != children_.end() && known->second.exited) {
            continue;  // reported already; a pid reused within the window is not followed
        }
        ChildRecord& record = record_for(reading, now);
        const bool check_proc =
            (static_cast<std::size_t>(reading.pid) + poll_number) % kCheckEvery == 0;
        if (reading.exited() || (check_proc && !still_our_child(record))) {
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
    record.anchor_cow_bytes = cow_bytes(record.latest);
    record.anchor_anon_bytes = record.latest.mem_bytes[KR_MEM_ANON];
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
