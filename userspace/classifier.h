// The classifier: a pure function from one child's samples to a verdict.
//
// Rules (documented in docs/diagnose.md):
//  - unknown: the child was watched for less than `min_window_seconds` or fewer than
//    `min_samples` samples.
//  - Fresh growth is *sustained* growth of resident anonymous memory: the lowest value
//    in the last third of the window minus the highest value in the first third. Spikes
//    that are freed again, and growth that was given back, do not count. COW copies never
//    change the anon counter, so unsharing cannot look like growth.
//  - leak:  sustained growth >= min_growth_bytes and a positive trend (Theil-Sen slope).
//  - cow:   COW-class bytes >= min_cow_bytes in the window, and no leak.
//  - mixed: both, where the COW is also at least `mixed_cow_fraction` of the growth
//    (a leaking child unshares a little of what it touches; that alone is not mixed).
//  - stable: neither.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kidreaper {

// One observation of one child.
struct GrowthSample {
    double seconds = 0;            // since the window began
    std::uint64_t cow_bytes = 0;   // cumulative COW-class bytes since tracking began
    std::uint64_t anon_bytes = 0;  // resident anonymous bytes
};

enum class Verdict { unknown, stable, cow, leak, mixed };

std::string_view verdict_name(Verdict verdict);

struct ClassifierConfig {
    double min_window_seconds = 3.0;
    std::size_t min_samples = 3;
    std::uint64_t min_cow_bytes = 1ULL << 20;     // COW below this in the window is noise
    std::uint64_t min_growth_bytes = 2ULL << 20;  // sustained growth below this is noise
    double mixed_cow_fraction = 0.10;             // COW needed, relative to growth, for mixed
};

struct Classification {
    Verdict verdict = Verdict::unknown;
    double window_seconds = 0;
    std::uint64_t cow_bytes = 0;               // COW-class bytes during the window
    std::int64_t anon_delta_bytes = 0;         // last - first anon (may be negative)
    std::uint64_t sustained_growth_bytes = 0;  // see the rules above
    double cow_rate = 0;                       // bytes/s over the window
    double growth_rate = 0;                    // bytes/s, robust trend of anon
    std::string reason;                        // one sentence with the numbers
};

Classification classify(std::span<const GrowthSample> samples, const ClassifierConfig& config = {});

// Robust slope (median of pairwise slopes) of anon bytes over seconds; 0 with < 2 points.
double theil_sen_slope(std::span<const GrowthSample> samples);

}  // namespace kidreaper
