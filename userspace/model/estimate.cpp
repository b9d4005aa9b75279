#include "model/estimate.h"

#include "common/error.h"

namespace kidreaper {

Metric parse_metric(std::string_view text) {
    if (text == "private") {
        return Metric::private_memory;
    }
    if (text == "pss") {
        return Metric::pss;
    }
    if (text == "rss") {
        return Metric::rss;
    }
    if (text == "anon") {
        return Metric::anon;
    }
    throw UsageError("invalid --metric \"" + std::string(text) +
                     "\": expected private, pss, rss or anon");
}

std::string metric_name(Metric metric) {
    switch (metric) {
        case Metric::private_memory:
            return "private";
        case Metric::pss:
            return "pss";
        case Metric::rss:
            return "rss";
        case Metric::anon:
            return "anon";
    }
    return "private";
}

std::uint64_t estimate_metric(const ChildRecord& record, Metric metric) {
    const ChildReading& now = record.latest;
    if (metric == Metric::rss) {
        return now.rss_bytes();
    }
    if (metric == Metric::anon) {
        return now.mem_bytes[KR_MEM_ANON];
    }
    if (!record.smaps_last) {
        return 0;
    }
    const std::uint64_t base =
        metric == Metric::pss ? record.smaps_last->pss : record.smaps_last->private_bytes();
    const std::uint64_t cow_now = record.account.cow_bytes();
    const std::uint64_t cow_since =
        cow_now < record.anchor_cow_bytes ? 0 : cow_now - record.anchor_cow_bytes;
    const auto anon_change = static_cast<std::int64_t>(record.account.fresh_bytes) -
                             static_cast<std::int64_t>(record.anchor_fresh_bytes);
    const std::int64_t estimate = static_cast<std::int64_t>(base + cow_since) + anon_change;
    return estimate > 0 ? static_cast<std::uint64_t>(estimate) : 0;
}

std::uint64_t truth_metric(const SmapsRollup& smaps, Metric metric) {
    switch (metric) {
        case Metric::private_memory:
            return smaps.private_bytes();
        case Metric::pss:
            return smaps.pss;
        case Metric::rss:
            return smaps.rss;
        case Metric::anon:
            return smaps.anonymous;
    }
    return smaps.private_bytes();
}

}  // namespace kidreaper
