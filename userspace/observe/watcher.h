// Watches one manager's children through the observer: one sample per child per poll,
// a record per child that was ever seen (exited ones included). A child is known by its
// pid and start time: when a new child reuses an exited child's pid, the old record is
// kept (exited, in displaced()) and the new child gets a record of its own.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/classifier.h"
#include "model/sample_history.h"
#include "observe/observer.h"
#include "observe/procfs.h"

namespace kidreaper {

// A history capacity no watch of hours at a second's interval reaches.
inline constexpr std::size_t kUnboundedHistory = std::size_t{1} << 24;

// Everything known about one child of the watched manager.
struct ChildRecord {
    pid_t pid = 0;
    std::string comm;
    // /proc/PID/stat field 22: identity against pid reuse (from the kernel's start time
    // where the map entry has one, so a pid reused before first sight is told apart).
    std::uint64_t start_ticks = 0;
    std::uint64_t start_ns = 0;     // kr_child.start_boottime_ns of its map entry
    bool present_at_start = false;  // existed when watching began (else born during it)
    bool exited = false;
    bool pid_reused = false;  // exited, and a newer child has its pid (Watcher::displaced())
    double first_seen = 0;    // seconds since watching began
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
    // Forgets the records of children that exited (displaced ones included).
    void prune_exited();
    // False once the manager has gone (or its pid was reused).
    bool manager_alive() const;

    pid_t manager() const { return manager_; }
    // The latest child of each pid.
    const std::map<pid_t, ChildRecord>& children() const { return children_; }
    // Exited children whose pid a newer child has taken, in the order they were displaced.
    const std::vector<ChildRecord>& displaced() const { return displaced_; }
    // The maps that dropped something since the last call (each map once per observer;
    // the observer has logged each as a warning).
    std::vector<CapacityNotice> take_capacity_notices();
    double elapsed_seconds() const;
    // A reading accounted the way this observer tells COW (cow_accounting.h).
    MemoryAccount account(const ChildReading& reading) const;

private:
    // Records a reading; read_stat: check /proc/PID/stat (identity, all threads' CPU);
    // read_cpu: read the CPU time from schedstat.
    ChildRecord& record_for(const ChildReading& reading, double now, bool read_stat, bool read_cpu);
    // Fills a new record from its first reading and /proc (when /proc still shows it).
    void start_record(ChildRecord& record, const ChildReading& reading, double now);
    // Takes a reading into the record and appends its sample.
    void take_reading(ChildRecord& record, const ChildReading& reading, double now);
    // Records the exit read from the exits map (the pid was reused since).
    void record_displaced_exit(const ChildReading& reading, double now);
    // Moves the record at `it` (an exited child) to displaced_.
    void displace(std::map<pid_t, ChildRecord>::iterator it);
    // The record of this pid and start time, in children_ or displaced_; nullptr if none.
    ChildRecord* find_record(pid_t pid, std::uint64_t start_ns);
    // /proc/PID/stat's start ticks for a kernel start time; nullopt when unknown.
    std::optional<std::uint64_t> identity_ticks(std::uint64_t start_ns) const;
    // Reads /proc/PID/stat: false when the pid is no longer this manager's child (gone,
    // a zombie, re-parented or reused); else updates the record's CPU time.
    bool still_our_child(ChildRecord& record) const;
    // CPU time of all the process's threads from its stat (whole clock ticks).
    double stat_cpu_seconds(const ProcStat& stat) const;
    void update_cpu(ChildRecord& record, double seconds) const;
    void note_capacity();

    Observer& observer_;
    const ProcFs& proc_;
    pid_t manager_;
    std::uint64_t manager_start_ticks_ = 0;
    std::uint64_t started_ns_ = 0;
    std::size_t max_samples_ = 0;
    std::size_t polls_ = 0;
    double seconds_per_tick_ = 0.01;
    long ticks_per_second_ = 100;
    std::int64_t boottime_offset_ns_ = 0;  // this time namespace's (boottime_offset_ns())
    std::map<pid_t, ChildRecord> children_;
    std::vector<ChildRecord> displaced_;
    std::vector<CapacityNotice> capacity_notices_;
};

}  // namespace kidreaper
