// What the kernel maps could not hold (Observer::capacity()) and how it is reported: once
// per map, the first time anything is dropped. Plain data and pure logic, no BPF.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "daemon/event_log.h"

namespace kidreaper {

// One map: how much it could not take, and its capacity (max_entries).
struct MapCapacity {
    std::uint64_t dropped = 0;
    std::uint64_t capacity = 0;
};

// Per map, what was not recorded because the map was full.
struct CapacityCounts {
    MapCapacity children;   // children not tracked (fork hook or loader): their memory is unseen
    MapCapacity faults;     // tracked children without fault counters (no COW counted)
    MapCapacity exits;      // exited children whose last reading was lost when their pid was reused
    MapCapacity managers;   // managers that could not be registered
    MapCapacity cow_sites;  // sampled COW sites evicted from the LRU map (diagnose)
};

// A map that dropped something, with a one-line explanation.
struct CapacityNotice {
    std::string map;  // "children", "faults", "exits", "managers" or "cow_sites"
    std::uint64_t dropped = 0;
    std::uint64_t capacity = 0;
    std::string message;
};

// The explanation of `dropped` things lost to map `map` of `capacity` entries.
std::string capacity_message(const std::string& map, std::uint64_t dropped, std::uint64_t capacity);

// Remembers which maps were reported: update() returns the maps that dropped something
// for the first time, each once in the notices' life.
class CapacityNotices {
public:
    std::vector<CapacityNotice> update(const CapacityCounts& counts);

private:
    std::set<std::string> reported_;
};

// The fields of reap's "capacity" event.
EventLog::Fields capacity_event_fields(const CapacityNotice& notice);

}  // namespace kidreaper
