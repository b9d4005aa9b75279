#include "classifier.h"

#include <algorithm>
#include <vector>

#include "units.h"

namespace kidreaper {

namespace {

constexpr std::size_t kMaxSlopePoints = 200;  // bounds the O(n^2) slope

std::string rate_text(double bytes_per_second) {
    return format_size(static_cast<std::uint64_t>(std::max(0.0, bytes_per_second))) + "/s";
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
    result.window_seconds = last.seconds - first.seconds;
    result.cow_bytes = last.cow_bytes >= first.cow_bytes ? last.cow_bytes - first.cow_bytes : 0;
    result.anon_delta_bytes =
        static_cast<std::int64_t>(last.anon_bytes) - static_cast<std::int64_t>(first.anon_bytes);
    if (result.window_seconds < config.min_window_seconds || samples.size() < config.min_samples) {
        result.reason = "watched " +
                        format_duration(std::chrono::milliseconds(
                            static_cast<long>(result.window_seconds * 1000))) +
                        ", too short to tell";
        return result;
    }
    result.cow_rate = static_cast<double>(result.cow_bytes) / result.window_seconds;
    result.growth_rate = theil_sen_slope(samples);

    const std::size_t third = std::max<std::size_t>(1, samples.size() / 3);
    std::uint64_t early_high = 0;
    for (std::size_t i = 0; i < third; ++i) {
        early_high = std::max(early_high, samples[i].anon_bytes);
    }
    std::uint64_t late_low = UINT64_MAX;
    for (std::size_t i = samples.size() - third; i < samples.size(); ++i) {
        late_low = std::min(late_low, samples[i].anon_bytes);
    }
    result.sustained_growth_bytes = late_low > early_high ? late_low - early_high : 0;

    const bool leaking =
        result.sustained_growth_bytes >= config.min_growth_bytes && result.growth_rate > 0;
    const bool unsharing = result.cow_bytes >= config.min_cow_bytes;
    const double growth = static_cast<double>(std::max<std::int64_t>(0, result.anon_delta_bytes));
    const bool unsharing_beside_growth =
        unsharing && static_cast<double>(result.cow_bytes) >= config.mixed_cow_fraction * growth;
    const std::string cow_text =
        "unshared " + format_size(result.cow_bytes) + " (" + rate_text(result.cow_rate) + ")";
    const std::string growth_text = "anon grew " + format_size(result.sustained_growth_bytes) +
                                    " and kept it (" + rate_text(result.growth_rate) + ")";
    if (leaking && unsharing_beside_growth) {
        result.verdict = Verdict::mixed;
        result.reason = growth_text + " and " + cow_text;
    } else if (leaking) {
        result.verdict = Verdict::leak;
        result.reason = growth_text + "; little COW";
    } else if (unsharing) {
        result.verdict = Verdict::cow;
        result.reason = cow_text + ", no sustained growth: normal COW";
    } else {
        result.verdict = Verdict::stable;
        result.reason = "no sustained growth, COW under " + format_size(config.min_cow_bytes);
    }
    return result;
}

}  // namespace kidreaper
