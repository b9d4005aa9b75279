// Watches one manager's children through the observer: one sample per child per poll,
// a record per child that was ever seen (exited ones included).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "classifier.h"
#include "observer.h"
#include "procfs.h"

namespace kidreaper {

// Everything known about one child of the watched manager.
struct ChildRecord {
    pid_t pid = 0;
    std::string comm;
    std::uint64_t start_ticks = 0;  // /proc/PID/stat field 22: identity against pid reuse
    bool present_at_start = false;  // existed when watching began (else born during it)
    bool exited = false;
    double first_seen = 0;  // seconds since watching began
    double last_seen = 0;
    std::vector<GrowthSample> samples;
    ChildReading latest;                     // the last map reading
    std::optional<SmapsRollup> smaps_first;  // ground truth when first seen
    std::optional<SmapsRollup> smaps_last;   // ground truth at the last refresh
    // The counters when smaps_last was read: estimates add what changed since.
    std::uint64_t anchor_cow_bytes = 0;
    std::uint64_t anchor_anon_bytes = 0;
    double anchor_seconds = 0;
};

class Watcher {
public:
    // Registers `manager` and its current children with `observer`. With `max_samples`,
    // each child keeps only its latest samples (for long-running watches).
    Watcher(Observer& observer, const ProcFs& proc, pid_t manager, std::size_t max_samples = 0);
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;

    // Reads the maps once: a sample per live child, exits noted. Reads smaps_rollup
    // only for children seen for the first time.
    void poll();
    // Reads smaps_rollup of every live child now (ground truth; costly on big children).
    void refresh_ground_truth();
    // Reads smaps_rollup of one child and re-anchors its estimates; nullopt when gone.
    std::optional<SmapsRollup> refresh_child(pid_t pid);
    // Forgets the records of children that exited.
    void prune_exited();
    // False once the manager has gone (or its pid was reused).
    bool manager_alive() const;

    pid_t manager() const { return manager_; }
    const std::map<pid_t, ChildRecord>& children() const { return children_; }
    double elapsed_seconds() const;
    // Bytes attributed to COW in a reading: exact copies when the kprobe is attached.
    std::uint64_t cow_bytes(const ChildReading& reading) const;

private:
    ChildRecord& record_for(const ChildReading& reading, double now);
    bool still_our_child(const ChildRecord& record) const;

    Observer& observer_;
    const ProcFs& proc_;
    pid_t manager_;
    std::uint64_t manager_start_ticks_ = 0;
    std::uint64_t started_ns_ = 0;
    std::size_t max_samples_ = 0;
    std::size_t polls_ = 0;
    std::map<pid_t, ChildRecord> children_;
};

}  // namespace kidreaper
