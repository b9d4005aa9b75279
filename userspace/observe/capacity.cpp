#include "observe/capacity.h"

#include <utility>

namespace kidreaper {

std::string capacity_message(const std::string& map, std::uint64_t dropped,
                             std::uint64_t capacity) {
    const std::string head = "the kernel's " + map + " map is full (" + std::to_string(capacity) +
                             " entries): " + std::to_string(dropped) + " ";
    if (map == "children") {
        return head + "children are not tracked (their memory is not watched)";
    }
    if (map == "faults") {
        return head + "tracked children have no fault counters (their COW is not counted)";
    }
    if (map == "exits") {
        return head + "exited children whose pid was reused lost their last reading";
    }
    if (map == "managers") {
        return head + "managers could not be registered";
    }
    if (map == "cow_sites") {
        return head + "sampled COW sites were evicted (the attribution keeps the latest)";
    }
    return head + "entries were dropped";
}

std::vector<CapacityNotice> CapacityNotices::update(const CapacityCounts& counts) {
    const std::pair<const char*, const MapCapacity&> maps[] = {
        {"children", counts.children}, {"faults", counts.faults},       {"exits", counts.exits},
        {"managers", counts.managers}, {"cow_sites", counts.cow_sites},
    };
    std::vector<CapacityNotice> notices;
    for (const auto& [name, map] : maps) {
        if (map.dropped == 0 || !reported_.insert(name).second) {
            continue;
        }
        notices.push_back(
            {name, map.dropped, map.capacity, capacity_message(name, map.dropped, map.capacity)});
    }
    return notices;
}

EventLog::Fields capacity_event_fields(const CapacityNotice& notice) {
    return {{"map", notice.map},
            {"dropped", notice.dropped},
            {"capacity", notice.capacity},
            {"detail", notice.message}};
}

}  // namespace kidreaper
