// The classifier: a pure function from one child's samples to a verdict.
//
// Growth is read against the child's WORK (its CPU time), not only against the clock. The rule,
// with W = work of the last sample - work of the first:
//   kept growth = lowest anon in the last third of W - highest anon in the first third of W;
//   leak = kept growth >= min_growth_bytes.
// Every sample at a work coordinate belongs to its third, so idling after a burst (the work does
// not move) stays in the last third and keeps the growth, while a warm-up or a cache that fills
// within the first third of the work gives ~0. Spikes that are freed again do not count, and COW
// copies never change the anon counter, so unsharing cannot look like growth.
//
// Verdicts (documented in docs/diagnose.md):
//  - unknown: watched for less than `min_window_seconds` or fewer than `min_samples` samples;
//    or anon grew by >= min_growth_bytes (last or highest minus first) but the work axis cannot
//    judge it: the work never moved (one distinct value), or W < min_work_seconds. (A child
//    that did no work and did not grow is stable or cow as below. A burst that fits in one
//    interval gives two work values: growth kept after it, while idle, is a leak.)
//  - leak:  kept growth >= min_growth_bytes.
//  - cow:   COW-class bytes >= min_cow_bytes in the window, and no leak.
//  - mixed: both, where the COW is also at least `mixed_cow_fraction` of the growth (last minus
//    first anon; a leaking child unshares a little of what it touches, that alone is not mixed).
//  - stable: neither.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kidreaper {

// One observation of one child.
struct GrowthSample {
    double seconds = 0;            // since the window began
    std::uint64_t cow_bytes = 0;   // cumulative COW-class bytes since tracking began
    std::uint64_t anon_bytes = 0;  // fresh memory the child keeps: resident anon + swapped-out
                                   // anon, minus anon that came from COW of private file pages
    double work_seconds = 0;       // cumulative CPU time (user + system, all threads) since
                                   // tracking began; non-decreasing (a drop counts as no work)
};

enum class Verdict { unknown, stable, cow, leak, mixed };

// The contract name of a verdict: "unknown", "stable", "cow", "leak", "mixed".
std::string_view verdict_name(Verdict verdict);

// Thresholds of the rules above.
struct ClassifierConfig {
    double min_window_seconds = 3.0;
    std::size_t min_samples = 3;
    std::uint64_t min_cow_bytes = 1ULL << 20;     // COW below this in the window is noise
    std::uint64_t min_growth_bytes = 2ULL << 20;  // kept growth below this is noise
    double mixed_cow_fraction = 0.10;             // COW needed, relative to growth, for mixed
    double min_work_seconds = 0.002;              // less CPU time than this cannot judge growth
};

// A verdict and the numbers behind it.
struct Classification {
    Verdict verdict = Verdict::unknown;
    double window_seconds = 0;                 // last - first sample, wall clock
    double work_seconds = 0;                   // W: CPU time between the first and last sample
    std::uint64_t cow_bytes = 0;               // COW-class bytes during the window
    std::int64_t anon_delta_bytes = 0;         // last - first anon (may be negative)
    std::uint64_t sustained_growth_bytes = 0;  // kept growth (see the rules above)
    double growth_per_work_second = 0;         // kept growth / W (bytes per CPU-second), or 0
    double cow_rate = 0;                       // bytes/s over the window
    double growth_rate = 0;                    // bytes/s, Theil-Sen trend of anon over wall time
    std::string reason;                        // one sentence with the numbers
};

// Judges one child from its samples, in time order (so also in work order).
Classification classify(std::span<const GrowthSample> samples, const ClassifierConfig& config = {});

// Robust slope (median of pairwise slopes) of anon bytes over seconds; 0 with < 2 points.
double theil_sen_slope(std::span<const GrowthSample> samples);

}  // namespace kidreaper
