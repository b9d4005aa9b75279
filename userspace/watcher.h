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
#include "sample_history.h"

namespace kidreaper {

// A history capacity no watch of hours at a second's interval reaches.
inline constexpr std::size_t kUnboundedHistory = std::size_t{1} << 24;

// Everything known about one child of the watched manager.
struct ChildRecord {
    pid_t pid = 0;
    std::string comm;
    std::uint64_t start_ticks = 0;  // /proc/PID/stat field 22: identity against pid reuse
    bool present_at_start = false;  // existed when watching began (else born during it)
    bool exited = false;
    double first_seen = 0;  // seconds since watching began
    double last_seen = 0;
    SampleHistory samples{kUnboundedHistory};  // its whole life (thinned when bounded)
    ChildReading latest;                       // the last map reading
    MemoryAccount account;                     // the last reading, accounted
    MemoryAccount account_first;               // the first reading, accounted
    // CPU time: the process's at first sight (the zero of GrowthSample::work_seconds), and
    // the largest seen since from schedstat (main thread, every poll) or stat (all
    // threads, whole ticks, at the /proc checks).
    double cpu_first_seconds = -1;
    double cpu_seconds = 0;
    std::optional<SmapsRollup> smaps_first;  // ground truth when first seen
    std::optional<SmapsRollup> smaps_last;   // ground truth at the last refresh
    // The counters when smaps_last was read: estimates add what changed since.
    std::uint64_t anchor_cow_bytes = 0;
    std::uint64_t anchor_fresh_bytes = 0;
    double anchor_seconds = 0;
};

class Watcher {
public:
    // Registers `manager` and its current children with `observer`. With `max_samples`,
    // each child's history is bounded: its whole life, thinned (SampleHistory), for
    // long-running watches.
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
    // A reading accounted the way this observer tells COW (cow_accounting.h).
    MemoryAccount account(const ChildReading& reading) const;

private:
    // Records a reading; read_stat: check /proc/PID/stat (identity, all threads' CPU);
    // read_cpu: read the CPU time from schedstat.
    ChildRecord& record_for(const ChildReading& reading, double now, bool read_stat, bool read_cpu);
    // Reads /proc/PID/stat: false when the pid is no longer this manager's child (gone,
    // a zombie, re-parented or reused); else updates the record's CPU time.
    bool still_our_child(ChildRecord& record) const;
    // CPU time of all the process's threads from its stat (whole clock ticks).
    double stat_cpu_seconds(const ProcStat& stat) const;
    void update_cpu(ChildRecord& record, double seconds) const;

    Observer& observer_;
    const ProcFs& proc_;
    pid_t manager_;
    std::uint64_t manager_start_ticks_ = 0;
    std::uint64_t started_ns_ = 0;
    std::size_t max_samples_ = 0;
    std::size_t polls_ = 0;
    double seconds_per_tick_ = 0.01;
    std::map<pid_t, ChildRecord> children_;
};

}  // namespace kidreaper
