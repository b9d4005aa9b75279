#include "model/classifier.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "common/units.h"

namespace kidreaper {

namespace {

constexpr std::size_t kMaxSlopePoints = 200;  // bounds the O(n^2) slope

std::string rate_text(double bytes_per_second) {
    return format_size(static_cast<std::uint64_t>(std::max(0.0, bytes_per_second))) + "/s";
}

// CPU time as "0.004 s", "0.8 s", "12 s".
std::string work_text(double seconds) {
    char text[32];
    const char* format = seconds < 0.095 ? "%.3f s" : seconds < 9.95 ? "%.1f s" : "%.0f s";
    std::snprintf(text, sizeof text, format, std::max(0.0, seconds));
    return text;
}

std::string duration_text(double seconds) {
    return format_duration(std::chrono::milliseconds(static_cast<long>(seconds * 1000)));
}

// The work coordinate of each sample relative to the first, never running backwards.
std::vector<double> work_axis(std::span<const GrowthSample> samples) {
    std::vector<double> work;
    work.reserve(samples.size());
    double highest = samples.front().work_seconds;
    for (const GrowthSample& sample : samples) {
        highest = std::max(highest, sample.work_seconds);
        work.push_back(highest - samples.front().work_seconds);
    }
    return work;
}

}  // namespace

std::string_view verdict_name(Verdict verdict) {
    switch (verdict) {
        case Verdict::unknown:
            return "unknown";
        case Verdict::stable:
            return "stable";
        case Verdict::cow:
            return "cow";
        case Verdict::leak:
            return "leak";
        case Verdict::mixed:
            return "mixed";
    }
    return "unknown";
}

double theil_sen_slope(std::span<const GrowthSample> samples) {
    const std::size_t stride = std::max<std::size_t>(1, samples.size() / kMaxSlopePoints);
    std::vector<GrowthSample> points;
    for (std::size_t i = 0; i < samples.size(); i += stride) {
        points.push_back(samples[i]);
    }
    std::vector<double> slopes;
    for (std::size_t i = 0; i < points.size(); ++i) {
        for (std::size_t j = i + 1; j < points.size(); ++j) {
            const double dt = points[j].seconds - points[i].seconds;
            if (dt > 0) {
                slopes.push_back((static_cast<double>(points[j].anon_bytes) -
                                  static_cast<double>(points[i].anon_bytes)) /
                                 dt);
            }
        }
    }
    if (slopes.empty()) {
        return 0;
    }
    auto middle = slopes.begin() + static_cast<std::ptrdiff_t>(slopes.size() / 2);
    std::nth_element(slopes.begin(), middle, slopes.end());
    return *middle;
}

Classification classify(std::span<const GrowthSample> samples, const ClassifierConfig& config) {
    Classification result;
    if (samples.empty()) {
        result.reason = "no samples";
        return result;
    }
    const GrowthSample& first = samples.front();
    const GrowthSample& last = samples.back();
    const std::vector<double> work = work_axis(samples);
    const double total_work = work.back();
    result.window_seconds = last.seconds - first.seconds;
    result.work_seconds = total_work;
    result.cow_bytes = last.cow_bytes >= first.cow_bytes ? last.cow_bytes - first.cow_bytes : 0;
    result.anon_delta_bytes =
        static_cast<std::int64_t>(last.anon_bytes) - static_cast<std::int64_t>(first.anon_bytes);
    if (result.window_seconds < config.min_window_seconds || samples.size() < config.min_samples) {
        result.reason = "watched " + duration_text(result.window_seconds) + ", too short to tell";
        return result;
    }
    result.cow_rate = static_cast<double>(result.cow_bytes) / result.window_seconds;
    result.growth_rate = theil_sen_slope(samples);

    std::uint64_t peak = 0;
    for (const GrowthSample& sample : samples) {
        peak = std::max(peak, sample.anon_bytes);
    }
    // Last - first never exceeds highest - first, so this covers both.
    const std::uint64_t grew = peak - first.anon_bytes;
    const bool unsharing = result.cow_bytes >= config.min_cow_bytes;
    const std::string cow_text =
        "unshared " + format_size(result.cow_bytes) + " (" + rate_text(result.cow_rate) + ")";
    const std::string cow_tail = unsharing ? "; " + cow_text + ": normal COW"
                                           : ", COW under " + format_size(config.min_cow_bytes);
    const Verdict quiet = unsharing ? Verdict::cow : Verdict::stable;

    // The work axis starts at 0 and never runs backwards: a work that never moved is
    // total_work == 0.
    if (total_work <= 0 || total_work < config.min_work_seconds) {
        if (grew >= config.min_growth_bytes) {
            result.reason = "grew " + format_size(grew) + " but not enough work seen to tell (" +
                            work_text(total_work) + " of CPU in " +
                            duration_text(result.window_seconds) + ")";
            return result;
        }
        result.verdict = quiet;
        result.reason =
            "little work (" + work_text(total_work) + " of CPU) and no growth" + cow_tail;
        return result;
    }

    const double first_third = total_work / 3;
    const double last_third = total_work - total_work / 3;
    std::uint64_t early_high = 0;
    std::uint64_t late_low = UINT64_MAX;
    for (std::size_t i = 0; i < samples.size(); ++i) {
        if (work[i] <= first_third) {
            early_high = std::max(early_high, samples[i].anon_bytes);
        }
        if (work[i] >= last_third) {
            late_low = std::min(late_low, samples[i].anon_bytes);
        }
    }
    const std::uint64_t kept = late_low > early_high ? late_low - early_high : 0;
    result.sustained_growth_bytes = kept;
    result.growth_per_work_second = static_cast<double>(kept) / total_work;

    const bool leaking = kept >= config.min_growth_bytes;
    const double growth = static_cast<double>(std::max<std::int64_t>(0, result.anon_delta_bytes));
    const bool unsharing_beside_growth =
        unsharing && static_cast<double>(result.cow_bytes) >= config.mixed_cow_fraction * growth;
    if (leaking) {
        const std::string growth_text =
            "kept " + format_size(kept) + " of fresh memory grown over " + work_text(total_work) +
            " of work (" + format_size(static_cast<std::uint64_t>(result.growth_per_work_second)) +
            " per CPU-second)";
        if (unsharing_beside_growth) {
            result.verdict = Verdict::mixed;
            result.reason = growth_text + " and " + cow_text;
        } else {
            result.verdict = Verdict::leak;
            result.reason = growth_text + "; little COW";
        }
        return result;
    }

    const std::uint64_t delta =
        result.anon_delta_bytes > 0 ? static_cast<std::uint64_t>(result.anon_delta_bytes) : 0;
    const std::string flat_work = work_text(total_work - first_third);
    std::string growth_text;
    if (kept > 0) {
        growth_text = "kept only " + format_size(kept) + " of fresh memory over " +
                      work_text(total_work) + " of work (under " +
                      format_size(config.min_growth_bytes) + "): no leak";
    } else if (delta >= config.min_growth_bytes) {
        growth_text = "grew " + format_size(delta) + " while warming up, flat over the last " +
                      flat_work + " of work: no leak";
    } else if (grew >= config.min_growth_bytes) {
        growth_text = "anon rose by up to " + format_size(grew) + " and came back down over " +
                      work_text(total_work) + " of work: no leak";
    } else {
        growth_text = "no fresh memory kept over " + work_text(total_work) + " of work";
    }
    result.verdict = quiet;
    result.reason = growth_text + cow_tail;
    return result;
}

}  // namespace kidreaper
