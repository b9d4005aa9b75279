// What --limit is compared with, and how each child's value is estimated between
// readings of ground truth (smaps_rollup).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "observe/procfs.h"
#include "observe/watcher.h"

namespace kidreaper {

// What --limit is compared with.
enum class Metric {
    private_memory,  // private clean + dirty: COW-unshared plus own growth (default)
    pss,
    rss,
    anon,
};

Metric parse_metric(std::string_view text);  // throws UsageError
std::string metric_name(Metric metric);

// The cheap per-tick value: the last ground truth plus what the kernel counted since
// (COW copies and anon growth both add private pages). rss and anon come straight from
// the kernel counters.
std::uint64_t estimate_metric(const ChildRecord& record, Metric metric);
// The metric read from smaps_rollup.
std::uint64_t truth_metric(const SmapsRollup& smaps, Metric metric);

}  // namespace kidreaper
